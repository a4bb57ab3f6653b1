# avmatch: `make demo` and `make test` set everything up themselves on a fresh machine.
SHELL := /bin/bash
export PATH := $(CURDIR)/.venv/bin:$(PATH)
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_HOME := $(CURDIR)/.prefect
export MPLBACKEND := Agg

.PHONY: help setup demo test test-fast bench lint clean-demo ui

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup:  ## system packages (apt, as root), .venv with pinned dependencies
	@bash scripts/setup.sh

demo: setup  ## build the demo corpus and run the whole fingerprint pipeline with dvc repro
	@echo "[demo] running the pipeline: corpus -> ingest -> features -> train -> extract -> index -> evaluate"
	dvc repro
	@echo
	@echo "[demo] fingerprinting on the demo corpus (test queries, threshold chosen on validation queries):"
	@avmatch metrics show metrics/fingerprint.json
	@echo
	@echo "[demo] untrained encoder, same evaluation:"
	@avmatch metrics show metrics/fingerprint_untrained.json
	@echo
	@echo "[demo] browse the runs:  .venv/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --port 5000"
	@echo "[demo] then open http://127.0.0.1:5000 ; plots: .venv/bin/dvc plots show (writes dvc_plots/index.html)"

test: setup  ## run the whole test suite (slow end-to-end tests included)
	python -m pytest -q -p no:cacheprovider

test-fast: setup  ## skip the slow end-to-end tests
	python -m pytest -q -m "not slow"

bench: setup  ## run the benchmarks and print their results (see docs/benchmarks.md)
	python benchmarks/run_all.py

ui: setup  ## Prefect + MLflow servers and the deployment runner on 127.0.0.1 (Ctrl-C stops all)
	python -m flows.ui

lint:
	python -m ruff check src pipelines tasks flows tests benchmarks || true
