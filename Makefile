# avmatch: `make demo` and `make test` set everything up themselves on a fresh machine.
SHELL := /bin/bash
export PATH := $(CURDIR)/.venv/bin:$(PATH)
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_DATABASE_TIMEOUT ?= 60
export MPLBACKEND := Agg

.PHONY: help setup demo demo-copydetect demo-versions demo-vmr demo-voiceface demo-all test test-fast bench lint clean-demo ui

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup:  ## system packages (apt, as root), .venv with pinned dependencies
	@bash scripts/setup.sh

demo: setup  ## the main job: build the demo corpus and run the fingerprint pipeline with dvc repro (~20 min)
	@echo "[demo] running the pipeline: corpus -> ingest -> features -> train -> extract -> index -> evaluate"
	dvc repro fingerprint_evaluate
	@echo
	@echo "[demo] fingerprinting on the demo corpus (test queries, threshold chosen on validation queries):"
	@avmatch metrics show metrics/fingerprint.json
	@echo
	@echo "[demo] untrained encoder, same evaluation:"
	@avmatch metrics show metrics/fingerprint_untrained.json
	@echo
	@echo "[demo] the other pipelines: make demo-copydetect, make demo-versions (or make demo-all)"
	@echo "[demo] browse runs, deployments and schedules: make ui   (Prefect + MLflow on 127.0.0.1)"
	@echo "[demo] plots: .venv/bin/dvc plots show (writes dvc_plots/index.html)"

demo-copydetect: setup  ## video copy detection (VSC22) on its demo corpus (~12 min)
	dvc repro copydetect_evaluate
	@python -c "import json; print(json.dumps(json.load(open('metrics/copydetect_compare.json')), indent=1))"

demo-versions: setup  ## version identification on its demo corpus, with the Essentia baseline (~25 min)
	dvc repro versions_evaluate versions_baseline
	@python -c "import json; [print(f, json.load(open(f'metrics/{f}.json'))['track']) for f in ('versions', 'versions_untrained', 'versions_baseline')]"

demo-vmr: setup  ## video-to-music retrieval on its demo corpus
	dvc repro vmr_evaluate
	@python -c "import json; print(json.dumps(json.load(open('metrics/vmr.json')), indent=1))"

demo-voiceface: setup  ## voice-face association (EFT) on a SIMULATED cohort of expert embeddings (not real data)
	dvc repro voiceface_evaluate
	@python -c "import json; m=json.load(open('metrics/voiceface.json')); print(m['corpus']); print(json.dumps({k: m['variants'][k] for k in m['variants']}, indent=1))"

demo-all: setup  ## every pipeline (dvc repro of the whole graph, ~55 min on 2 cores)
	dvc repro

# Two pytest workers, a test module each at a time (the end-to-end modules share one project copy
# per module); the slow modules go first (tests/conftest.py). TEST_WORKERS=1 runs them in one process.
TEST_WORKERS ?= 2
PYTEST_PARALLEL = $(if $(filter 1,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

test: setup  ## run the whole test suite (slow end-to-end tests included; ~9 min on 2 cores, docs/benchmarks.md)
	python -m pytest -q -p no:cacheprovider --durations=40 $(PYTEST_PARALLEL)

test-fast: setup  ## skip the slow end-to-end tests
	python -m pytest -q -p no:cacheprovider -m "not slow" $(PYTEST_PARALLEL)

bench: setup  ## run the benchmarks and print their results (see docs/benchmarks.md)
	python benchmarks/run_all.py

ui: setup  ## Prefect + MLflow servers and the deployment runner on 127.0.0.1 (Ctrl-C stops all)
	python -m flows.ui

lint:
	python -m ruff check src pipelines tasks flows tests benchmarks || true
