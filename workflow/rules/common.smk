# Load and validate local_data.json once; build the targets, their inputs and
# the wildcard constraints. Rules never parse the JSON themselves.

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
from ltpa.localdata import load_local_data
from ltpa.pipeline import read_sidecar
from ltpa.targets import (
    KEYED_RULES,
    RULE_EXPORT,
    RULE_INDEX,
    RULE_LABEL,
    RULE_MAP_B0,
    RULE_SCALARS,
    build_targets,
    check_inputs,
    ids_alternation,
    lookup,
    pinned_alternation,
)

LOG_DIR = config.get("log_dir", "logs")


def _load_study():
    local_data = config["local_data"]
    if not Path(local_data).exists():
        hint = ""
        if local_data == "demo/local_data.json":
            hint = " (the demo study: run `make demo`, or `ltpa demo demo`)"
        raise WorkflowError(
            f"local_data file {local_data!r} does not exist{hint}; "
            "pass another with --config local_data=PATH"
        )
    try:
        scans = load_local_data(local_data, config.get("data_root"))
    except LtpaError as exc:
        raise WorkflowError(str(exc)) from None
    every = build_targets(scans)
    keep, errors, warnings = check_inputs(every, read_sidecar)
    for text in warnings:
        logger.warning(f"ltpa: {text}")
    if errors:
        raise WorkflowError(
            f"local_data file {local_data!r}: {len(errors)} missing input"
            f"{'s' if len(errors) > 1 else ''}:\n"
            + "\n".join(f"  - {e}" for e in errors)
        )
    return scans, every, keep


# ALL_TARGETS: every output the JSON names, including those kept while their inputs are
# archived; TARGETS: those the workflow builds or keeps up to date
SCANS, ALL_TARGETS, TARGETS = _load_study()
BY_OUTPUT = lookup(TARGETS)


def all_outputs():
    """Every output the JSON names whose inputs are present (or that must be built)."""
    return [str(t.output) for t in TARGETS]


def target_of(rule_name, wildcards):
    path = "".join(
        wildcards.get(k, "") for k in ("prefix", "scan", "middle", "atlas", "suffix")
    )
    return BY_OUTPUT[(rule_name, path)]


def inputs_of(rule_name):
    """Input function: the existing input files of the target, by field name."""

    def inputs(wildcards):
        t = target_of(rule_name, wildcards)
        return {k: str(p) for k, p in t.inputs.items() if p is not None}

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
