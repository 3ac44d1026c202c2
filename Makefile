# The README's two commands: `make run` starts the product, `make test` runs the whole suite.
.PHONY: setup run test diagram
PY := .venv/bin/python

setup:
	@bash scripts/setup.sh

run: setup
	@bash scripts/run.sh

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)
