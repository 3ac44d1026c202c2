#!/usr/bin/env bash
# The README's test command (`make test`, also what .ci/run runs): install what the suite needs, make the golden
# data of the original implementations (cached; scripts/parity_data.py), start throw-away PostgreSQL and Redis
# servers so the database and queue tests run for real, run pytest, stop the servers.
#   PYTEST_ARGS="-k front" make test     # pass options to pytest
#   PARITY=skip make test                # without the parity tests (they then skip, saying so)
#   TEST_POSTGRES_URL=postgresql://...   # use an existing server instead (it is reset by the tests)
#   TEST_REDIS_URL=redis://...           # likewise for Redis (the tests use their own key namespaces)
set -euo pipefail
cd "$(dirname "$0")/.."
WITH_TEST_TOOLS=1 bash scripts/setup.sh
if [ "${PARITY:-on}" != skip ]; then
  started=$(date +%s)
  if ! exports=$(.venv/bin/python scripts/parity_data.py); then
    echo "error: the golden data of the original implementations could not be made (see above)." >&2
    echo "       Fix that, or run the suite without the parity tests: PARITY=skip make test" >&2
    exit 1
  fi
  eval "$exports"
  echo "parity golden data ready in $(( $(date +%s) - started )) s" >&2
fi
stops=()
cleanup() { for cmd in "${stops[@]}"; do eval "$cmd"; done; }
trap cleanup EXIT
if [ -z "${TEST_POSTGRES_URL:-}" ]; then
  if out=$(bash scripts/start_postgres.sh); then
    eval "$out"
    stops+=('bash scripts/start_postgres.sh --stop "$TEST_POSTGRES_DIR"')
  else
    echo "note: no PostgreSQL server could be started; the PostgreSQL variants of the tests will be skipped" >&2
  fi
fi
if [ -z "${TEST_REDIS_URL:-}" ]; then  # the task queue's broker (tests/queue start their own servers too)
  if out=$(bash scripts/start_redis.sh); then
    eval "$out"
    stops+=('bash scripts/start_redis.sh --stop "$TEST_REDIS_DIR"')
  else
    echo "note: no Redis server could be started; the task-queue tests will be skipped" >&2
  fi
fi
# shellcheck disable=SC2086
.venv/bin/python -m pytest ${PYTEST_ARGS:-}
