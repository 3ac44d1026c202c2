#!/usr/bin/env bash
# Start a throw-away Redis server (the task queue's broker) for the tests, on 127.0.0.1 and a free port, under a
# temporary folder.
#   eval "$(bash scripts/start_redis.sh)"        # exports TEST_REDIS_URL and TEST_REDIS_DIR
#   bash scripts/start_redis.sh --stop "$TEST_REDIS_DIR"
# Installs Debian's redis-server when missing (as root). Progress goes to stderr; stdout carries only the exports.
set -euo pipefail

if [ "${1:-}" = "--stop" ]; then
  dir=${2:?usage: start_redis.sh --stop DIR}
  if [ -f "$dir/redis.pid" ]; then
    pid=$(cat "$dir/redis.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$dir"
  exit 0
fi

if ! command -v redis-server >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian's redis-server..." >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >&2
  else
    echo "Redis is not installed (apt-get install redis-server)" >&2
    exit 1
  fi
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
dir=$(mktemp -d /tmp/demofront-redis.XXXXXX)
redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --save "" --appendonly no --daemonize yes \
  --pidfile "$dir/redis.pid" --logfile "$dir/server.log" >&2
for _ in $(seq 100); do
  redis-cli -p "$port" ping >/dev/null 2>&1 && break
  sleep 0.1
done
redis-cli -p "$port" ping >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
echo "Redis $(redis-server --version | awk '{print $3}' | cut -d= -f2) on 127.0.0.1:$port (in $dir)" >&2
echo "export TEST_REDIS_URL=redis://127.0.0.1:$port/0"
echo "export TEST_REDIS_DIR=$dir"
