# Two commands for a fresh machine (see README):
#   make demo   install into .venv/ and run the workflow on the built-in demo study
#   make test   install into .venv/ and run the tests
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# the optional extras installed (pyproject.toml): EXTRAS=test,slurm adds the SLURM executor
# (docs/slurm.md); without it no snakemake command loads anything of SLURM
EXTRAS ?= test,docs
comma := ,
STAMP := $(VENV)/.ltpa-installed-$(subst $(comma),-,$(EXTRAS))
CORES ?= all

.PHONY: install demo test bench lint docs clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

# demo/ is generated (make clean removes it); an older demo without TRUTH.md is replaced
demo: $(STAMP)
	@test -f demo/TRUTH.md || { rm -rf demo && $(BIN)/ltpa demo demo; }
	$(BIN)/snakemake --cores $(CORES) --configfile config/demo.yaml
	@echo
	@echo "Demo study: demo/local_data.json (20 scans: 10 controls, 10 patients; 2 atlases)."
	@echo "What was planted (patients: 30% fewer lh.superiorfrontal -- lh.precuneus streamlines): demo/TRUTH.md"
	@echo "Outputs per scan (pkl, pkl.trk, npy per atlas): demo/s*/ ; QC tables, report plots, provenance, logs: demo/local_data.ltpa/"
	@echo "LTPA maps (config/demo.yaml): demo/local_data.ltpa/maps/"
	@echo "Report: $(BIN)/snakemake --configfile config/demo.yaml --report report.html"

test: $(STAMP)
	$(BIN)/python -m pytest

# make bench: synthetic data (10^5 and 10^6 streamlines, generated on first use), every
# candidate in its own process, the whole scan through Snakemake, one table + targets.
# The competitors (nibabel, dipy) run in their own venv under benchmarks/out/ (git-ignored);
# ltpa runs from .venv. Extra options: make bench BENCH_ARGS="--repeat 3".
# Then benchmarks/reader_bench.py: a study of 50 and 200 scans queried with ltpa.TrackDataSource
# against plain pickle.load of each pkl (options: READER_BENCH_ARGS="--repeat 3");
# benchmarks/study_scale.py: the dry run and ltpa status of generated 1,000 / 3,000 / 10,000-scan
# studies against a plain Snakefile with the same jobs (STUDY_BENCH_ARGS="--sizes 1000,3000");
# benchmarks/job_cost.py: the fixed cost per job of a 100-small-scan study (JOB_BENCH_ARGS);
# benchmarks/init_bench.py: ltpa init over a 10,000-scan x 3-atlas BIDS tree (INIT_BENCH_ARGS).
# The whole make bench takes about 30 minutes on 2 cores.
READER_BENCH_ARGS ?=
STUDY_BENCH_ARGS ?= --sizes 1000,3000,10000
JOB_BENCH_ARGS ?=
INIT_BENCH_ARGS ?=
BENCH_VENV := benchmarks/out/venv
BENCH_ARGS ?=

$(BENCH_VENV)/.ok:
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet numpy nibabel dipy networkx
	touch $@

bench: $(STAMP) $(BENCH_VENV)/.ok
	$(BIN)/python benchmarks/run.py --python $(BENCH_VENV)/bin/python $(BENCH_ARGS)
	$(BIN)/python benchmarks/reader_bench.py $(READER_BENCH_ARGS)
	$(BIN)/python benchmarks/study_scale.py $(STUDY_BENCH_ARGS)
	$(BIN)/python benchmarks/job_cost.py $(JOB_BENCH_ARGS)
	$(BIN)/python benchmarks/init_bench.py $(INIT_BENCH_ARGS)

# make lint: ruff (rules and line length in pyproject.toml), snakefmt --check of the workflow,
# and snakemake --lint, which fails on every lint but its request for a conda env or container
# per rule: jobs run in the driver's environment (tools/snakemake_lint.py says why)
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks tools workflow/scripts
	$(BIN)/snakefmt --check workflow
	$(BIN)/python tools/snakemake_lint.py

# make docs: the documentation site (docs/, mkdocs.yml) built with --strict into site/
docs: $(STAMP)
	$(BIN)/mkdocs build --strict

clean:
	rm -rf demo logs .snakemake site
