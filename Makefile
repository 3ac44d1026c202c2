# The README's two commands: `make run` starts the product, `make test` runs the whole suite.
.PHONY: setup run test diagram
PY := .venv/bin/python

setup:
	@bash scripts/setup.sh

run: setup
	@bash scripts/run.sh

test:
	@PYTEST_ARGS="$(PYTEST_ARGS)" bash scripts/test.sh

diagram:  # img/architecture.png from its source, img/architecture.dot (needs Graphviz: apt-get install graphviz)
	@command -v dot >/dev/null || { echo "Graphviz 'dot' is missing: apt-get install graphviz"; exit 1; }
	dot -Tpng -Gdpi=110 img/architecture.dot -o img/architecture.png
