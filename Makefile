# Self-bootstrapping: every target creates .venv and installs what it needs when missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help demo test unit integration conformance lint bench crds-check image e2e clean

help:
	@echo "make demo        run the operator on the sandbox cluster and show it working"
	@echo "make test        run the whole test suite (unit, integration, conformance, chart)"
	@echo "make lint        ruff, mypy --strict, import-linter, shellcheck"
	@echo "make bench       benchmarks on the sandbox (writes bench/results/)"
	@echo "make crds-check  check the chart's copies (crds/, dashboard) are identical to the sources"
	@echo "make image       build the operator image (needs docker)"
	@echo "make e2e         end-to-end on a kind cluster (needs docker and kind)"

# Two distributions, both editable: the operator (with the dev tools) and the sandbox in sandbox/,
# which the demo, the tests and the benchmarks run on (its dependency on agentpool-operator is
# the editable root).
$(STAMP): pyproject.toml sandbox/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' -e ./sandbox
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/agentpool demo

test: $(STAMP) crds-check
	$(BIN)/python -m pytest -q -p no:cacheprovider

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit sandbox/tests/unit

integration: $(STAMP)
	$(BIN)/python -m pytest -q tests/integration sandbox/tests/integration

conformance: $(STAMP)
	$(BIN)/python -m pytest -q sandbox/tests/conformance

lint: $(STAMP)
	$(BIN)/ruff check operator sandbox tests $(wildcard bench)
	$(BIN)/ruff format --check operator sandbox tests $(wildcard bench)
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/shellcheck --shell=sh --severity=style operator/agentpool/*.sh operator/agentpool/steps/*.sh

bench: $(STAMP)
	$(BIN)/python -m bench

crds-check:
	@diff -r crds charts/agentpool-operator/crds && echo "crds-check: charts/agentpool-operator/crds matches crds/"
	@cmp docs/grafana/agentpool-dashboard.json charts/agentpool-operator/dashboards/agentpool.json && echo "crds-check: the chart's dashboard matches docs/grafana/"

IMAGE ?= agentpool-operator:dev
image:
	docker build -t $(IMAGE) .

e2e: $(STAMP)
	$(BIN)/python -m pytest -q -m e2e tests/e2e

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info operator/*.egg-info sandbox/*.egg-info
