# The README's two commands: `make run` starts the product, `make test` runs the whole suite.
.PHONY: setup run test diagram
PY := .venv/bin/python

setup:
	@bash scripts/setup.sh

run: setup
	@bash scripts/run.sh

test:
	@PYTEST_ARGS="$(PYTEST_ARGS)" bash scripts/test.sh
