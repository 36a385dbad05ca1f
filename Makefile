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
	@echo "Demo outputs (pkl, pkl.trk, npy per scan): demo/s*/ ; QC tables, plots, provenance: results/ ;"
	@echo "logs: logs/ ; study: demo/local_data.json ; report: .venv/bin/snakemake --report report.html"

test: $(STAMP)
	$(BIN)/python -m pytest

# make bench: synthetic data (10^5 and 10^6 streamlines, generated on first use), every
# candidate in its own process, the whole scan through Snakemake, one table + targets.
# The competitors (nibabel, dipy) run in their own venv under benchmarks/out/ (git-ignored);
# ltpa runs from .venv. Extra options: make bench BENCH_ARGS="--repeat 3".
BENCH_VENV := benchmarks/out/venv
BENCH_ARGS ?=

$(BENCH_VENV)/.ok:
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet numpy nibabel dipy networkx
	touch $@

bench: $(STAMP) $(BENCH_VENV)/.ok
	$(BIN)/python benchmarks/run.py --python $(BENCH_VENV)/bin/python $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/snakemake --lint

clean:
	rm -rf demo logs .snakemake
