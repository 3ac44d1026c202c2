#!/usr/bin/env bash
# Start the model service (:7860) and the web front (:5000) on loopback; Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export SADTALKER_HOST=${SADTALKER_HOST:-127.0.0.1} SADTALKER_PORT=${SADTALKER_PORT:-7860}
export FRONT_HOST=${FRONT_HOST:-127.0.0.1} FRONT_PORT=${FRONT_PORT:-5000}
export SADTALKER_URL=${SADTALKER_URL:-http://$SADTALKER_HOST:$SADTALKER_PORT/}
pids=()
stop() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT
"$PY" SadTalker/app.py & pids+=($!)
"$PY" DemoFront/app.py & pids+=($!)  # the front, served by waitress (see DemoFront/demofront/server.py)
echo "model service: http://$SADTALKER_HOST:$SADTALKER_PORT/"
echo "web front:     http://$FRONT_HOST:$FRONT_PORT/   (Ctrl-C stops both)"
# Exit (and stop the other) as soon as either service ends.
wait -n "${pids[@]}"
