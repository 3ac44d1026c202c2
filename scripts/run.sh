#!/usr/bin/env bash
# Start the product on loopback and keep it running: a Redis server for the task queue (unless QUEUE_URL or
# REDIS_URL names one), the model service (:7860), one model worker per model service (it takes jobs from the queue
# and runs them there), and the web front (:5000). A process that exits is started again (after 1 s, doubling up
# to 30 s while it keeps failing); the others stay up. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export SADTALKER_HOST=${SADTALKER_HOST:-127.0.0.1} SADTALKER_PORT=${SADTALKER_PORT:-7860}
export FRONT_HOST=${FRONT_HOST:-127.0.0.1} FRONT_PORT=${FRONT_PORT:-5000}
export SADTALKER_URL=${SADTALKER_URL:-http://$SADTALKER_HOST:$SADTALKER_PORT/}
export PYTHONUNBUFFERED=1
STATE=${RUN_STATE_DIR:-DemoFront/instance}
mkdir -p "$STATE/redis"

declare -A cmd pid delay started
names=()
if [ -z "${QUEUE_URL:-}" ] && [ -z "${REDIS_URL:-}" ]; then
  REDIS_PORT=${REDIS_PORT:-6390}
  command -v redis-server >/dev/null || { echo "redis-server is missing: apt-get install redis-server" >&2; exit 1; }
  # the queue survives a restart of the server (append-only file under $STATE/redis)
  cmd[redis]="redis-server --bind 127.0.0.1 --port $REDIS_PORT --dir $STATE/redis --appendonly yes --save ''"
  names+=(redis)
  export QUEUE_URL=redis://127.0.0.1:$REDIS_PORT/0
fi
cmd[model]="$PY SadTalker/app.py"
cmd[worker]="$PY DemoFront/worker.py"
cmd[front]="$PY DemoFront/app.py"  # served by waitress (see DemoFront/demofront/server.py)
names+=(model worker front)

launch() {
  local name=$1
  bash -c "exec ${cmd[$name]}" &
  pid[$name]=$!
  started[$name]=$(date +%s)
}

stop() {
  trap - INT TERM EXIT
  for name in "${names[@]}"; do kill "${pid[$name]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  exit 0
}
trap stop INT TERM EXIT

for name in "${names[@]}"; do
  delay[$name]=1
  launch "$name"
done
echo "model service: $SADTALKER_URL"
echo "task queue:    $QUEUE_URL"
echo "web front:     http://$FRONT_HOST:$FRONT_PORT/   (Ctrl-C stops everything)"
# Supervise: when a process exits, start it again; the others are left alone.
while true; do
  wait -n || true
  for name in "${names[@]}"; do
    if ! kill -0 "${pid[$name]}" 2>/dev/null; then
      wait "${pid[$name]}" 2>/dev/null && rc=0 || rc=$?
      if [ $(( $(date +%s) - started[$name] )) -ge 60 ]; then delay[$name]=1; fi  # it had been up a while
      echo "run.sh: $name exited ($rc); starting it again in ${delay[$name]} s" >&2
      sleep "${delay[$name]}"
      delay[$name]=$(( delay[$name] * 2 > 30 ? 30 : delay[$name] * 2 ))
      launch "$name"
    fi
  done
done
