#!/usr/bin/env bash
# The README's test command (`make test`, also what .ci/run runs): install what the suite needs, start a throw-away
# PostgreSQL server so the database and API tests run on PostgreSQL as well as SQLite, run pytest, stop the server.
#   PYTEST_ARGS="-k front" make test     # pass options to pytest
#   TEST_POSTGRES_URL=postgresql://...   # use an existing server instead (it is reset by the tests)
set -euo pipefail
cd "$(dirname "$0")/.."
WITH_TEST_TOOLS=1 bash scripts/setup.sh
if [ -z "${TEST_POSTGRES_URL:-}" ]; then
  if out=$(bash scripts/start_postgres.sh); then
    eval "$out"
    trap 'bash scripts/start_postgres.sh --stop "$TEST_POSTGRES_DIR"' EXIT
  else
    echo "note: no PostgreSQL server could be started; the PostgreSQL variants of the tests will be skipped" >&2
  fi
fi
# shellcheck disable=SC2086
.venv/bin/python -m pytest ${PYTEST_ARGS:-}
