# Set-up and entry points. Every target creates .venv from nothing when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install install-airflow demo test test-all lint

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The pinned CPU build of torch first: an unpinned one pulls several GB of CUDA packages.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test,demo,dev]'
	touch $@

install: $(VENV)/.installed

# Airflow 3, for dags/ and tests/test_dag.py (which skips without it); CI installs it.
$(VENV)/.airflow-installed: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[airflow]'
	touch $@

install-airflow: $(VENV)/.airflow-installed

# TEXT_SIGNAL below 1 ties the demo's item text less to taste (make demo TEXT_SIGNAL=0.1).
TEXT_SIGNAL ?= 1.0

demo: install
	$(BIN)/python -m wals_roberta.jobs.data.synthetic --out demo-data --text-signal $(TEXT_SIGNAL)
	$(BIN)/wals-roberta pipeline --config conf/demo.yaml

test: install
	$(BIN)/python -m pytest -m "not slow"

test-all: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check jobs udfs tests notebooks dags bench
	$(BIN)/ruff format --check jobs udfs tests notebooks dags bench
