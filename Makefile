# Two commands for a fresh machine (see README):
#   make demo   install into .venv/ and run the workflow on the built-in demo study
#   make test   install into .venv/ and run the tests
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ltpa-installed
CORES ?= all

.PHONY: install demo test bench lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	@test -f demo/local_data.json || $(BIN)/ltpa demo demo
	$(BIN)/snakemake --cores $(CORES)
	@echo
	@echo "Demo outputs (pkl, pkl.trk, npy per scan): demo/s*/ ; logs: logs/ ; study: demo/local_data.json"

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

lint: $(STAMP)
	$(BIN)/snakemake --lint

clean:
	rm -rf demo logs .snakemake
