# iotpipe developer tasks. `make install` sets up everything (Python, npm and system packages);
# `make test` is the CI gate: ruff, the template lint gate and the test suites.
PYTHON ?= python3
NODE_DIR := handler/node

.PHONY: install test lint pytest node-test docs docs-config render bench bench-worst bench-broker bench-local bench-sql bench-cost golden clean

install:
	$(PYTHON) -m pip install --upgrade pip
	$(PYTHON) -m pip install -e '.[dev]'
	@if [ -f $(NODE_DIR)/package.json ]; then npm install --no-audit --no-fund --prefix $(NODE_DIR); fi
	@command -v mosquitto >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto; \
	  else echo "mosquitto is missing: sudo apt-get install mosquitto (needed by the MQTT tests)" >&2; exit 1; fi; }

test: lint docs pytest node-test

lint:
	ruff check src tests bench
	mypy
	iotpipe lint templates/TapStack.yml
	iotpipe lint --env dev

pytest:
	$(PYTHON) -m pytest -q

# The Node tests run on the machine's node and on every Lambda Node runtime the config allows that npm
# installed into handler/node (node-linux-<arch>@22 and @24, optional dependencies of its package.json).
node-test:
	@if [ -f $(NODE_DIR)/index.js ]; then cd $(NODE_DIR) && node --test && \
	  for runtime in node_modules/node2*-linux-*/bin/node; do \
	    if [ -x "$$runtime" ]; then echo "== $$runtime ($$($$runtime --version))" && $$runtime --test || exit 1; fi; \
	  done; fi

# The documentation site (mkdocs.yml, docs/) into site/; --strict fails on a broken link or a page left out.
docs:
	mkdocs build --strict --quiet

# docs/configuration.md is generated from the config's field metadata (a unit test fails when it is stale).
docs-config:
	$(PYTHON) -m iotpipe.docgen > docs/configuration.md

render:
	iotpipe render --env dev -o templates/TapStack.yml

golden:
	UPDATE_GOLDEN=1 $(PYTHON) -m pytest -q tests/golden

bench:
	$(PYTHON) bench/bench_processor.py

# Worst-case batches (6 MB of hostile messages, 10,000 records): time and peak memory at the configured size.
bench-worst:
	$(PYTHON) bench/bench_processor.py --worst

bench-broker:
	$(PYTHON) bench/bench_broker.py

bench-local:
	$(PYTHON) bench/bench_local.py

bench-sql:
	$(PYTHON) bench/bench_sql.py

# Billable units of 100,000 readings through the processor (env prod, moto) next to `iotpipe cost`'s prediction;
# smaller runs: make bench-cost BENCH_COST_ARGS="--readings 5000 --devices 20".
bench-cost:
	$(PYTHON) bench/bench_cost.py $(BENCH_COST_ARGS)

clean:
	rm -rf build dist site .pytest_cache .ruff_cache .mypy_cache src/*.egg-info
