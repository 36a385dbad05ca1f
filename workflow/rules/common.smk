# Load and validate local_data.json once; build the targets, their inputs and
# the wildcard constraints. Rules never parse the JSON themselves.

import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import validate

validate(config, "../schemas/config.schema.yaml")

try:
    import ltpa
except ImportError:  # a plain checkout: use the package next to the workflow
    sys.path.insert(0, str(Path(workflow.basedir).parent / "src"))
    import ltpa

from ltpa.errors import LtpaError
from ltpa.resources import mem_mb, runtime_min
from ltpa.staleness import KEPT, OUT_OF_DATE
from ltpa.study import load_study
from ltpa.targets import (
    KEYED_RULES,
    RULE_EXPORT,
    RULE_INDEX,
    RULE_LABEL,
    RULE_MAP_B0,
    RULE_SCALARS,
    ids_alternation,
    lookup,
    pinned_alternation,
)

def stop(message):
    """End the run before any job with ``message`` (as Snakemake prints errors, no Python frames)."""
    logger.error(message)
    raise SystemExit(1)


MAX_NOTES = 30  # notes printed before the jobs (all of them are in the end-of-run summary)


def _load_study():
    local_data = config["local_data"]
    if not Path(local_data).exists():
        hint = ""
        if local_data == "demo/local_data.json":
            hint = " (the demo study: run `make demo`, or `ltpa demo demo`)"
        stop(
            f"local_data file {local_data!r} does not exist{hint}; "
            "pass another with --config local_data=PATH"
        )
    try:
        study = load_study(local_data, config)
    except LtpaError as exc:
        stop(str(exc))
    for text in study.warnings:
        logger.warning(f"ltpa: {text}")
    for note in study.notes[:MAX_NOTES]:
        logger.warning(f"ltpa: {note.line()}")
    if len(study.notes) > MAX_NOTES:
        logger.warning(
            f"ltpa: ... and {len(study.notes) - MAX_NOTES} more notes (ltpa status lists them)"
        )
    keep, stale = [], []
    for t, v in zip(study.targets, study.verdicts):
        if v.status != KEPT:
            keep.append(t)
        if v.status == OUT_OF_DATE:
            stale.append((t, v))
    return study, keep, stale


# ALL_TARGETS: every output the JSON names, including those kept while their inputs are
# archived; TARGETS: those the workflow builds or keeps up to date; STALE: out of date
# (ltpa.staleness, including those whose input output needs work): forced
STUDY, TARGETS, STALE = _load_study()
SCANS, ALL_TARGETS = STUDY.scans, STUDY.targets
LOG_DIR = config.get("log_dir") or str(STUDY.work_dir / "logs")
BY_OUTPUT = lookup(TARGETS)
# outputs that are inputs of other targets (b0-mapped atlases): not ancient(), so that
# Snakemake reruns what reads them when they are rebuilt
PRODUCED = {t.output for t in TARGETS}


def _decide_rebuilds():
    """Make Snakemake's rebuild decisions ltpa.staleness's, from the study's files only.

    Snakemake's triggers other than mtime read its records in the working directory
    (.snakemake/metadata), so they would answer differently from another folder: they are
    turned off; the inputs are ancient() (ltpa.staleness compares their sizes, mtimes and,
    for small files, contents with the sidecars); and the outputs ltpa.staleness finds out
    of date are forced. Both settings are read when Snakemake decides which jobs must run,
    after the Snakefile is parsed, so this runs from the first input function call, when
    the DAG exists. A forced output that is not part of the requested DAG is ignored, and
    a remote job (SLURM) runs exactly the jobs it was given.
    """
    if _REBUILDS_DECIDED or workflow.remote_exec:
        return
    _REBUILDS_DECIDED.append(True)
    from snakemake.settings.enums import RerunTrigger

    workflow.dag_settings.rerun_triggers = frozenset({RerunTrigger.MTIME})
    dag = getattr(workflow, "_dag", None)
    if dag is None or not isinstance(getattr(dag, "forcefiles", None), set):
        raise WorkflowError(
            "ltpa: this Snakemake has no DAG.forcefiles set; ltpa decides rebuilds "
            "through it (tested with Snakemake 9.x)"
        )
    for t, v in STALE:
        logger.info(f"ltpa: {t.where()}: {str(t.output)!r} is out of date: {v.reason}")
    dag.forcefiles.update(str(t.output) for t, _ in STALE)


_REBUILDS_DECIDED = []


def all_outputs():
    """Every output the JSON names whose inputs are present (or that must be built)."""
    return [str(t.output) for t in TARGETS]


def target_of(rule_name, wildcards):
    path = "".join(
        wildcards.get(k, "") for k in ("prefix", "scan", "middle", "atlas", "suffix")
    )
    return BY_OUTPUT[(rule_name, path)]


def inputs_of(rule_name):
    """Input function: the input files of the target, by field name.

    Raw inputs are ancient(): whether they changed is ltpa.staleness's decision.
    """

    def inputs(wildcards):
        _decide_rebuilds()
        t = target_of(rule_name, wildcards)
        return {
            k: str(p) if p in PRODUCED else ancient(str(p))
            for k, p in t.inputs.items()
            if p is not None
        }

    return inputs


def param_of(rule_name, getter):
    def param(wildcards):
        return getter(target_of(rule_name, wildcards))

    return param


def constraints(rule_name):
    """Wildcard constraints matching exactly the outputs of ``rule_name``."""
    mine = [t for t in TARGETS if t.rule == rule_name]
    out = {
        "prefix": pinned_alternation(TARGETS, rule_name),
        "scan": ids_alternation([t.wildcards["scan"] for t in mine]),
        "suffix": ".*",
    }
    if rule_name in KEYED_RULES:
        out["middle"] = ".*"
        out["atlas"] = ids_alternation([t.wildcards["atlas"] for t in mine])
    return out


def log_pattern(rule_name):
    """Log file of a job: <log_dir>/<rule>/scan_<scan>[_atlas_<atlas>]/<output path>.log."""
    if rule_name in KEYED_RULES:
        return f"{LOG_DIR}/{rule_name}/scan_{{scan}}_atlas_{{atlas}}{{prefix}}{{scan}}{{middle}}{{atlas}}{{suffix}}.log"
    return f"{LOG_DIR}/{rule_name}/scan_{{scan}}{{prefix}}{{scan}}{{suffix}}.log"


def spec_of(rule_name):
    """Param function: the target's job description (ltpa.spec.JobSpec) as JSON."""

    def spec(wildcards):
        return target_of(rule_name, wildcards).spec(config).to_json()

    return spec


def resource_of(rule_name, formula):
    """Resource function: ``formula(spec)`` (ltpa.resources) of the target, times the attempt."""

    def resource(wildcards, attempt):
        return formula(target_of(rule_name, wildcards).spec(config)) * attempt

    return resource


def print_summary():
    """The end-of-run summary: everything that affects the results (ltpa.summary)."""
    if workflow.remote_exec:
        return
    from ltpa.summary import collect, format_summary

    logger.info(format_summary(collect(STUDY)))
