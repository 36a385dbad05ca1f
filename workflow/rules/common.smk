# Load and validate local_data.json once; build the targets, their inputs and
# the wildcard constraints. Rules never parse the JSON themselves.

import dataclasses
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import validate

# The Python that runs Snakemake (the driver) reads the study before any job: it needs the
# ltpa package and its dependencies (numpy, nibabel, ...), i.e. `pip install <this repo>`
# in the driver's environment (`make install` makes .venv; conda: environment.yml).
try:
    import ltpa
except ImportError:  # a plain checkout: the package next to the workflow
    sys.path.insert(0, str(Path(workflow.basedir).parent / "src"))
try:
    import ltpa
    from ltpa.study.config import SCHEMA_PATH
    from ltpa.errors import LtpaError
    from ltpa.study.resources import mem_mb, runtime_min
    from ltpa.study.staleness import KEPT, OUT_OF_DATE
    from ltpa.study.stamps import remove_other_stamps, stamp_path, write_stamp
    from ltpa.jobs.remote import outputs_from_environment
    from ltpa.study.study import ARCHIVED_NOTE, load_study
    from ltpa.study.targets import (
        KEYED_RULES,
        RULE_EXPORT,
        RULE_INDEX,
        RULE_LABEL,
        RULE_MAP_B0,
        RULE_PATTERNS,
        RULE_SCALARS,
        by_output,
        check_templates,
        exact_paths_regex,
        ids_alternation,
        path_templates,
    )
except ImportError as exc:
    logger.error(
        f"ltpa-prep: the Python running Snakemake ({sys.executable}) cannot import "
        f"{exc.name or 'a module'!r}: the workflow reads the study before any job, so the "
        f"driver's environment needs ltpa-prep installed with its dependencies: "
        f"pip install {Path(workflow.basedir).parent} (or `make install` there and run "
        f".venv/bin/snakemake)"
    )
    raise SystemExit(1)

# the package's config schema, the one place the defaults live: validate() fills them in
validate(config, str(SCHEMA_PATH), set_default=True)


def stop(message):
    """End the run before any job with ``message`` (as Snakemake prints errors, no Python frames)."""
    logger.error(message)
    raise SystemExit(1)


def remote_outputs():
    """In a cluster job: the outputs it makes, as the executor ltpa-slurm put them in its
    environment (ltpa.jobs.remote), or None (a job with a study-level job in it, or another
    executor): then the whole study is read."""
    try:
        return outputs_from_environment()
    except ValueError as exc:
        stop(f"ltpa: {exc}")


def _keep_going():
    """Whether Snakemake runs with --keep-going: ExecutionSettings.keep_going
    (snakemake.settings.types), read from workflow.execution_settings rather than sys.argv
    so that the API, a profile's `keep-going: true` and the command line agree. Snakemake
    sets it on the workflow after parsing the Snakefile (snakemake.api: the workflow is
    parsed on first access, then given its settings), so it is read when the DAG is built."""
    settings = getattr(workflow, "execution_settings", None)
    return bool(getattr(settings, "keep_going", False))


def _check_left_out():
    """Scans left out by the checks: without --keep-going, and in a dry run, stop before any
    job with every problem listed; with it, say which and build the others (the run then
    ends non-zero: ltpa_left_out_scans)."""
    if not STUDY.left_out:
        return
    if not _keep_going():
        stop(STUDY.left_out_text)
    if workflow.dryrun:  # nothing is built: the problems are the answer (exit 1)
        stop(
            f"{STUDY.left_out_text}\n(with --keep-going a run leaves these scans out and "
            "builds the others)"
        )
    from ltpa.qc.summary import format_failures

    logger.warning(
        format_failures(STUDY.left_out, ())
        + "\nltpa: --keep-going: building every other scan; the run will end with an error"
    )


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
    if workflow.remote_exec:  # a cluster job: the driver checked the study already
        study = load_study(local_data, config, remote=True, only=remote_outputs())
        return study, study.targets, []
    try:
        # the scans with problems are left out here, and the run stopped with all of them
        # listed unless Snakemake runs with --keep-going (_check_left_out): whether it does is
        # known only once the Snakefile is parsed
        study = load_study(local_data, config, keep_going=True)
    except LtpaError as exc:
        stop(str(exc))
    for text in study.warnings:
        logger.warning(f"ltpa: {text}")
    # an archived input's kept output is a warning above already (naming the output)
    notes = [n for n in study.notes if n.what != ARCHIVED_NOTE]
    for note in notes[:MAX_NOTES]:
        logger.warning(f"ltpa: {note.line()}")
    if len(notes) > MAX_NOTES:
        logger.warning(
            f"ltpa: ... and {len(notes) - MAX_NOTES} more notes (ltpa status lists them)"
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
# (ltpa.study.staleness, including those whose input output needs work): forced
STUDY, TARGETS, STALE = _load_study()
SCANS, ALL_TARGETS = STUDY.scans, STUDY.targets
LOG_DIR = str(STUDY.log_dir)
# the output of the job that fails a --keep-going run whose checks left scans out
LEFT_OUT_FLAG = f"{STUDY.work_dir}/checks/left_out_scans.never_written"
BY_OUTPUT = by_output(TARGETS)
# outputs that are inputs of other targets (b0-mapped atlases): not ancient(), so that
# Snakemake reruns what reads them when they are rebuilt
PRODUCED = {t.output for t in TARGETS}


def _decide_rebuilds():
    """Make Snakemake's rebuild decisions ltpa.study.staleness's, from the study's files only.

    Snakemake's triggers other than mtime read its records in the working directory
    (.snakemake/metadata), so they would answer differently from another folder: they are
    turned off (the setting is read when Snakemake decides which jobs must run, after the
    Snakefile is parsed, so this runs from the first input function call); raw inputs are
    not declared to Snakemake (ltpa.study.staleness compares their sizes, mtimes and, for
    small files, contents with the sidecars); and an output ltpa.study.staleness finds out
    of date gets a rebuild stamp among its inputs (ltpa.study.stamps: a file later than the
    output, so Snakemake's mtime rule reruns the job). A remote job (SLURM) runs exactly
    the jobs it was given.
    """
    if _REBUILDS_DECIDED or workflow.remote_exec:
        return
    _REBUILDS_DECIDED.append(True)
    _check_left_out()
    _register_batches()
    from snakemake.settings.enums import RerunTrigger

    workflow.dag_settings.rerun_triggers = frozenset({RerunTrigger.MTIME})
    for t, v in STALE:
        logger.info(f"ltpa: {t.where()}: {str(t.output)!r} is out of date: {v.reason}")
    remove_other_stamps(STUDY.work_dir, STAMPS.values())


_REBUILDS_DECIDED = []
# the rebuild stamp of each output out of date (written when Snakemake asks for its job)
STAMPS = {str(t.output): stamp_path(STUDY.work_dir, t.rule, t.output) for t, _ in STALE}


def stale_input(output):
    """{"ltpa_stale": stamp} for an output out of date (its stamp written), else {}."""
    stamp = STAMPS.get(str(output))
    if stamp is None:
        return {}
    try:
        return {"ltpa_stale": str(write_stamp(stamp, output))}
    except LtpaError as exc:
        stop(str(exc))


def all_outputs():
    """Every output the JSON names whose inputs are present (or that must be built), and
    with --keep-going, when scans were left out, the job that says so."""
    return [str(t.output) for t in TARGETS] + left_out_outputs()


def target_of(rule_name, wildcards):
    return BY_OUTPUT[(rule_name, wildcards.path)]


def _signature_known(func):
    """Tell Snakemake the parameters of a rule function once.

    Snakemake reads them with inspect.signature at every call (input, params, resources,
    group: four or more per job), unless the function carries them
    (snakemake.common.get_function_params); at 70,000 jobs that was 1/8 of the dry run.
    """
    import inspect

    try:
        from snakemake.common import FUNC_OVERWRITE_PARAMS_ATTR
    except ImportError:  # another Snakemake: it reads the signature itself, only slower
        return func
    setattr(func, FUNC_OVERWRITE_PARAMS_ATTR, inspect.signature(func).parameters)
    return func


def inputs_of(rule_name):
    """Input function: the target's inputs that another job makes (a b0-mapped atlas).

    Raw inputs (trk, atlases, graphml, ...) are not declared to Snakemake: whether they
    changed is ltpa.study.staleness's decision (from the sidecars), their presence and headers are
    checked before any job (ltpa.study.study), and the job reads them through its spec. Declaring
    them would only add three or four files per job to Snakemake's DAG (a third of a large
    study's dry run) for checks that are already made.
    """

    @_signature_known
    def inputs(wildcards):
        _decide_rebuilds()
        t = target_of(rule_name, wildcards)
        out = {k: str(p) for k, p in t.inputs.items() if p is not None and p in PRODUCED}
        out.update(stale_input(t.output))
        return out

    return inputs


def param_of(rule_name, getter):
    @_signature_known
    def param(wildcards):
        return getter(target_of(rule_name, wildcards))

    return param


def _path_constraints():
    """Per rule, the regex of its outputs' ``{path}`` (ltpa.study.targets.path_templates): short
    templates, or the exact paths for a rule whose templates would also match another file
    the workflow asks Snakemake about (an input, a kept output, or a QC file)."""
    rules = (RULE_INDEX, RULE_EXPORT, RULE_LABEL, RULE_MAP_B0, RULE_SCALARS, RULE_PATTERNS)
    out = {r: path_templates(TARGETS, r) for r in rules}
    if workflow.remote_exec:  # its driver chose the jobs: the templates of these targets
        return out
    produced = {str(t.output): t.rule for t in TARGETS}
    others = {str(p) for t in ALL_TARGETS for p in t.inputs.values() if p is not None}
    # outputs kept as they are (their inputs archived): QC reads them, no rule may claim them
    others |= {str(t.output) for t in ALL_TARGETS}
    work = STUDY.work_dir
    others |= {f"{work}/qc/{kind}/{s.scan_id}.tsv" for s in SCANS for kind in ("scans", "lengths")}
    others |= {f"{work}/maps/{m['name']}.nii.gz" for m in config["maps"]}
    others.add(LEFT_OUT_FLAG)
    others -= set(produced)
    for name in check_templates(out, produced, others):
        out[name] = exact_paths_regex([str(t.output) for t in TARGETS if t.rule == name])
    return out


PATH_CONSTRAINT = _path_constraints()


def constraints(rule_name):
    """The wildcard constraint of a data rule: its outputs' paths (see _path_constraints)."""
    return {"path": PATH_CONSTRAINT[rule_name]}


def log_pattern(rule_name):
    """Log file of a job: <log_dir>/<rule><absolute output path>.log (outputs are absolute)."""
    return f"{LOG_DIR}/{rule_name}{{path}}.log"


# SLURM: the jobs of `scans_per_job` consecutive scans (in JSON order) are one submission,
# whatever they depend on: each batch is one job group, and group_components lets a
# group job span all the batch's (otherwise unconnected) jobs. Local runs have no groups.
SCANS_PER_JOB = config["scans_per_job"]
BATCH = {s.scan_id: f"scans_{i // SCANS_PER_JOB:06d}" for i, s in enumerate(SCANS)}


def _register_batches():
    """Let a group job span every job of a batch (group settings exist once the DAG is
    built); for local runs, take the group functions off the rules (see _batched)."""
    import immutables

    if not _batched():
        for r in workflow.rules:
            if r.name in BATCHED_RULES:
                r.group = None
        return
    settings = getattr(workflow, "group_settings", None)
    if settings is None:
        return
    components = dict(settings.group_components)
    components.update({b: 10**6 for b in set(BATCH.values())})
    settings.group_components = immutables.Map(components)


BATCHED_RULES = (
    RULE_INDEX,
    RULE_EXPORT,
    RULE_LABEL,
    RULE_MAP_B0,
    RULE_SCALARS,
    RULE_PATTERNS,
    "qc_scan",
)


def _batched():
    """Whether jobs go to a remote executor (SLURM), or run inside one of its jobs.

    Local runs (and their dry runs) have no groups: Snakemake ignores them when it runs
    jobs itself, yet checks each group's readiness job by job, O(jobs^2) per batch (half
    of a 3,000-scan dry run). A dry run shows the groups the intended executor would
    submit: Snakemake runs it with its "dryrun" executor, but forces threads (POSIX)
    only when the intended executor is a remote one.
    """
    if workflow.remote_exec or not workflow.local_exec:
        return True
    settings = getattr(workflow, "execution_settings", None)
    return bool(
        workflow.dryrun and os.name == "posix" and settings is not None and settings.use_threads
    )


def group_of(rule_name):
    """Group function: the scan's batch (see SCANS_PER_JOB), for remote executors only."""

    @_signature_known
    def group(wildcards):
        if not _batched():
            return None
        return BATCH[target_of(rule_name, wildcards).scan.scan_id]

    return group


def _job_command():
    """The command of every data job: ltpa-job (ltpa.jobs.client, a client of the warm job server).

    Jobs run in the driver's environment (the rules name no conda env or container: the
    software is this package and its dependencies, pyproject.toml): the driver's own Python
    runs ltpa-job (absolute path), so a job sees the same ltpa as the Snakefile whatever PATH
    says, given this checkout's src/ when ltpa is not installed.
    """
    import shlex

    src = str(Path(ltpa.__file__).resolve().parents[1])
    script = Path(sys.executable).parent / "ltpa-job"
    if script.exists():
        return shlex.quote(str(script))
    return (
        f"PYTHONPATH={shlex.quote(src)}${{PYTHONPATH:+:$PYTHONPATH}} "
        f"{shlex.quote(sys.executable)} -m ltpa.jobs.client"
    )


JOB = _job_command()


_SPECS = getattr(STUDY, "specs", None) or {}  # made once, when the study was judged


def job_spec(rule_name, wildcards):
    """The target's job description (ltpa.study.spec.JobSpec), made once per target."""
    key = (rule_name, wildcards.path)
    spec = _SPECS.get(key)
    if spec is None:
        spec = _SPECS[key] = target_of(rule_name, wildcards).spec(config)
    return spec


def spec_of(rule_name):
    """Param function: the target's job description as JSON (what ltpa-job runs)."""

    @_signature_known
    def spec(wildcards):
        return job_spec(rule_name, wildcards).to_json()

    return spec


def threaded_spec_of(rule_name):
    """``spec_of`` for the rules whose kernel runs in threads (the job's description with the
    threads Snakemake gives the job, capped by --cores; they decide nothing of its output)."""

    @_signature_known
    def spec(wildcards, threads):
        return dataclasses.replace(job_spec(rule_name, wildcards), threads=threads).to_json()

    return spec


def resource_of(rule_name, formula):
    """Resource function: ``formula(spec)`` (ltpa.study.resources) of the target, times the attempt."""

    @_signature_known
    def resource(wildcards, attempt):
        return formula(job_spec(rule_name, wildcards)) * attempt

    return resource


def print_summary():
    """The end-of-run summary: the scans left out and the jobs that failed, then everything
    that affects the results of what was built (ltpa.qc.summary)."""
    if workflow.remote_exec:
        return
    from ltpa.qc.summary import collect, format_failures, format_summary

    failures = format_failures(STUDY.left_out, _failed_jobs())
    notes = collect(STUDY)
    if failures:
        logger.error(failures)
        if notes:
            logger.info(format_summary(notes))
        return
    logger.info(format_summary(notes))


def _failed_jobs():
    """(rule, output, log) of the jobs of this run that failed: the scheduler's set of
    failed jobs (Snakemake 9: workflow.scheduler.failed; the left-out-scans job is said
    separately)."""
    failed = getattr(getattr(workflow, "scheduler", None), "failed", None) or ()
    out = []
    for job in failed:
        if getattr(job, "rule", None) is None or job.rule.name == RULE_LEFT_OUT:
            continue
        log = ", ".join(map(str, job.log)) if getattr(job, "log", None) else ""
        for f in job.output or ["(no output)"]:
            out.append((job.rule.name, str(f), log))
    return sorted(out)


# --keep-going: the scans whose inputs failed the checks are left out (ltpa.study.study) and the
# job of rules/left_out.smk, which always fails, makes the run end non-zero after every other
# job ran (Snakemake calls onsuccess/onerror only when there are jobs; a job is also what a
# dry run shows)
RULE_LEFT_OUT = "ltpa_left_out_scans"


def left_out_outputs():
    return [LEFT_OUT_FLAG] if STUDY.left_out else []


def left_out_inputs(wildcards):
    _decide_rebuilds()  # the first input function of a run whose only job is this one
    return []
