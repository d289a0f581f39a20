# inferwatch: `make demo` runs the demo, `make test` runs every test. Both install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: help demo test system-deps bench rules clean

help:
	@echo "make demo   - demo model server + inferwatch sidecar + drifting traffic (+ Prometheus when installable)"
	@echo "make test   - install everything needed and run the whole test suite"
	@echo "make bench  - run the benchmarks in benchmarks/"
	@echo "make rules  - render prometheus/rules/ from prometheus/thresholds.yaml"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

system-deps:
	scripts/install-system-deps.sh prometheus prometheus-alertmanager prometheus-pushgateway chromium default-jre-headless

# The demo needs the package alone (no test extras); pip shows its progress.
DEMO_STAMP := $(VENV)/.demo-stamp

$(DEMO_STAMP): pyproject.toml
	@echo "make demo: installing inferwatch into $(VENV) (first run: about a minute)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --progress-bar on -e .
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	-scripts/install-system-deps.sh --optional prometheus prometheus-alertmanager
	$(VENV)/bin/inferwatch demo $(DEMO_ARGS)

test: $(STAMP) system-deps
	$(PY) -m mypy
	$(PY) -m pytest $(PYTEST_ARGS)

BENCH_STAMP := $(VENV)/.bench-stamp

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) benchmarks/proxy_overhead.py
	$(PY) benchmarks/ingest.py
	OPENBLAS_NUM_THREADS=1 $(PY) benchmarks/drift.py
	OPENBLAS_NUM_THREADS=1 $(PY) benchmarks/detection_quality.py --quick
	$(PY) benchmarks/genai_streams.py
	OPENBLAS_NUM_THREADS=1 $(PY) benchmarks/batch.py
	OPENBLAS_NUM_THREADS=1 $(PY) benchmarks/profile_distributed.py
	$(PY) benchmarks/report.py

rules: $(STAMP)
	$(VENV)/bin/inferwatch rules render

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .hypothesis
