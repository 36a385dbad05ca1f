"""The workflow's Snakemake glue: the study read once, and the functions its rules call.

``workflow/rules/common.smk`` makes one :class:`StudyGlue` from Snakemake's ``workflow``
and ``config`` objects and binds its methods to the names the rules use; everything that
decides something lives here, linted and unit-tested (tests/test_workflow_glue.py), and
uses only Snakemake's public interfaces:

- the ``workflow`` object's documented attributes (``basedir``, ``dryrun``,
  ``remote_exec``, ``local_exec``, ``rules``) and its settings objects
  (``snakemake.settings.types``: ``execution_settings``, ``dag_settings``,
  ``group_settings``), read when the DAG is built (Snakemake hands the workflow its
  settings after the Snakefile is parsed);
- rule functions (input, params, group, resources) taking ``wildcards``;
- the ``snakemake`` logger, a standard :mod:`logging` logger, whose records carry the
  fields of the logger-plugin interface (``snakemake_interface_logger_plugins``:
  ``LogEvent.JOB_ERROR`` with ``rule_name``, ``output`` and ``log``): the failed jobs of
  the end-of-run summary are collected from them.

Three settings are still applied here, each named beside its use: the SLURM batches
(``group_settings.group_components``, which has no other public way in: the batch names
are known only once the study is read), the rerun triggers (``dag_settings``: mtime only,
as the workflow's profiles set them, for a run without a profile) and the parameter lists
of rule functions (``FUNC_OVERWRITE_PARAMS_ATTR``, a measured 1/8 of a 70,000-job dry run;
guarded: a Snakemake without it only runs slower).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import shlex
import sys
from collections import Counter
from pathlib import Path

import immutables  # a dependency of Snakemake: the mapping type of its settings
from snakemake.logging import logger
from snakemake.settings.enums import RerunTrigger
from snakemake_interface_logger_plugins.common import LogEvent

from .analysis.maps_workflow import map_verdicts, study_map_jobs
from .errors import LtpaError
from .jobs.remote import outputs_from_environment
from .qc.groupdiff import comparisons
from .qc.summary import collect, format_failures, format_summary
from .study.spec import JobSpec
from .study.staleness import KEPT, OUT_OF_DATE, judge_all
from .study.stamps import remove_other_stamps, stamp_path, write_stamp
from .study.study import ARCHIVED_NOTE, load_study
from .study.targets import (
    RULE_INDEX,
    RULE_LABEL,
    STEP_OF_RULE,
    by_output,
    check_templates,
    exact_paths_regex,
    path_templates,
)

#: the per-scan data rules (workflow/rules/data.smk)
DATA_RULE_NAMES = tuple(STEP_OF_RULE)  # every rule of ltpa.study.targets, one per step
#: the rules whose jobs join their scan's SLURM batch
BATCHED_RULES = DATA_RULE_NAMES + ("qc_scan",)
#: the job that fails a --keep-going run whose checks left scans out (rules/left_out.smk)
RULE_LEFT_OUT = "ltpa_left_out_scans"
#: the rule of the study maps (rules/maps.smk)
RULE_MAP = "ltpa_map"
#: notes printed before the jobs (all of them are in the end-of-run summary)
MAX_NOTES = 30


def stop(message: str):
    """End the run before any job with ``message``, as Snakemake prints errors (no frames).

    Parameters
    ----------
    message : str
        What is wrong, naming the scan, field or file.

    Raises
    ------
    SystemExit
        Always, with status 1.
    """
    logger.error(message)
    raise SystemExit(1)


def signature_known(func):
    """Tell Snakemake the parameters of a rule function once.

    Snakemake reads them with :func:`inspect.signature` at every call (input, params,
    resources, group: four or more per job) unless the function carries them
    (``snakemake.common.FUNC_OVERWRITE_PARAMS_ATTR``); at 70,000 jobs that was 1/8 of the
    dry run. Guarded: another Snakemake reads the signature itself, only slower.

    Parameters
    ----------
    func : callable
        A rule function (input, params, group or resources).

    Returns
    -------
    callable
        ``func`` itself.
    """
    try:
        from snakemake.common import FUNC_OVERWRITE_PARAMS_ATTR
    except ImportError:
        return func
    setattr(func, FUNC_OVERWRITE_PARAMS_ATTR, inspect.signature(func).parameters)
    return func


def job_command(executable: str | None = None) -> str:
    """The command of every data and QC job: ``ltpa-job`` (ltpa.jobs.client) of this Python.

    Jobs run in the driver's environment (the rules name no conda env or container): the
    driver's own Python runs ltpa-job (absolute path), so a job sees the same ltpa as the
    Snakefile whatever PATH says, given this checkout's src/ when ltpa is not installed.

    Parameters
    ----------
    executable : str, optional
        The Python to use (default: ``sys.executable``).

    Returns
    -------
    str
        A shell command prefix, quoted.
    """
    executable = executable or sys.executable
    script = Path(executable).parent / "ltpa-job"
    if script.exists():
        return shlex.quote(str(script))
    src = str(Path(__file__).resolve().parents[1])
    return (f"PYTHONPATH={shlex.quote(src)}${{PYTHONPATH:+:$PYTHONPATH}} "
            f"{shlex.quote(executable)} -m ltpa.jobs.client")


class FailedJobs(logging.Handler):
    """The jobs of this run that failed, from the ``snakemake`` logger's error records.

    Snakemake logs every failed job (alone, or inside a failed group job) as a record whose
    ``event`` is ``LogEvent.JOB_ERROR`` with the fields ``rule_name``, ``output`` and
    ``log`` (the logger-plugin interface); this handler keeps (rule, output, log) of each.
    """

    def __init__(self, ignore=(RULE_LEFT_OUT,)):
        super().__init__(level=logging.ERROR)
        self.ignore = set(ignore)
        self.failed: set[tuple[str, str, str]] = set()

    def emit(self, record: logging.LogRecord) -> None:
        """Keep (rule, output, log) of a failed job's record; ignore every other record.

        Parameters
        ----------
        record : logging.LogRecord
            A record of the ``snakemake`` logger.
        """
        if getattr(record, "event", None) != LogEvent.JOB_ERROR:
            return
        rule = getattr(record, "rule_name", None)
        if not rule or rule in self.ignore:
            return
        logs = getattr(record, "log", None) or ()
        outs = getattr(record, "output", None) or ["(no output)"]
        logs, outs = ([x] if isinstance(x, str) else x for x in (logs, outs))
        log = ", ".join(map(str, logs))
        for out in outs:
            self.failed.add((str(rule), str(out), log))

    def jobs(self) -> list[tuple[str, str, str]]:
        """The failed jobs of the run so far.

        Returns
        -------
        list of tuple of str
            (rule, output, log) of each failed job's outputs, sorted.
        """
        return sorted(self.failed)


class StudyGlue:
    """The study of one Snakemake run and the functions its rules call.

    Parameters
    ----------
    workflow : snakemake.workflow.Workflow
        Snakemake's ``workflow`` object of the Snakefile.
    config : dict
        The run's config, validated against the package's schema (defaults filled in).

    Raises
    ------
    SystemExit
        When the study cannot be read or has problems that stop the run (every problem
        printed first).
    """

    def __init__(self, workflow, config: dict):
        self.workflow = workflow
        self.config = config
        self.remote = bool(workflow.remote_exec)
        self.study, self.targets, self.stale = self._load()
        study = self.study
        self.scans = study.scans
        self.all_targets = study.targets
        self.work_dir = str(study.work_dir)
        self.log_dir = str(study.log_dir)
        self.left_out_flag = f"{self.work_dir}/checks/left_out_scans.never_written"
        self.by_output = by_output(self.targets)
        # outputs that are inputs of other targets (b0-mapped atlases, the pkl and npy of a
        # patterns job): declared, so that Snakemake reruns what reads them
        self.produced = {t.output for t in self.targets}
        self.specs = getattr(study, "specs", None) or {}
        # the rebuild stamp of each output out of date (written when Snakemake asks)
        self.stamps = {str(t.output): stamp_path(self.work_dir, t.rule, t.output)
                       for t, _ in self.stale}
        self._decided = False
        self._maps_judged = False
        per_job = config["scans_per_job"]
        self.scan_of = {s.scan_id: s for s in self.scans}
        # outputs kept while their inputs are archived, as the study judged them (None in a
        # cluster job, whose study is not judged)
        self.kept = ({t.output for t, v in zip(study.targets, study.verdicts)
                      if v.status == KEPT} if study.verdicts else None)
        self.by_scan = {}  # (scan_id, rule) -> targets, kept outputs included
        for t in self.all_targets:
            self.by_scan.setdefault((t.scan.scan_id, t.rule), []).append(t)
        self.batch = {s.scan_id: f"scans_{i // per_job:06d}" for i, s in enumerate(self.scans)}
        self.map_jobs = self._map_jobs()
        self.path_constraint = self._path_constraints()
        self.job = job_command()
        self.failed = FailedJobs()
        if not self.remote:
            logger.addHandler(self.failed)

    # ----------------------------------------------------------------- the study

    def _load(self):
        local_data = self.config["local_data"]
        if not Path(local_data).exists():
            hint = ""
            if local_data == "demo/local_data.json":
                hint = " (the demo study: run `make demo`, or `ltpa demo demo`)"
            stop(f"local_data file {local_data!r} does not exist{hint}; "
                 "pass another with --config local_data=PATH")
        if self.remote:  # a cluster job: the driver checked the study already
            try:
                only = outputs_from_environment()
            except ValueError as exc:
                stop(f"ltpa: {exc}")
            study = load_study(local_data, self.config, remote=True, only=only)
            return study, study.targets, []
        try:
            # scans with problems are left out here; the run stops with all of them listed
            # unless Snakemake runs with --keep-going (check_left_out): known only once the
            # Snakefile is parsed
            study = load_study(local_data, self.config, keep_going=True)
        except LtpaError as exc:
            stop(str(exc))
        for text in study.warnings:
            logger.warning(f"ltpa: {text}")
        # an archived input's kept output is a warning above already (naming the output)
        notes = [n for n in study.notes if n.what != ARCHIVED_NOTE]
        for note in notes[:MAX_NOTES]:
            logger.warning(f"ltpa: {note.line()}")
        if len(notes) > MAX_NOTES:
            logger.warning(f"ltpa: ... and {len(notes) - MAX_NOTES} more notes "
                           "(ltpa status lists them)")
        keep, stale = [], []
        for t, v in zip(study.targets, study.verdicts):
            if v.status != KEPT:
                keep.append(t)
            if v.status == OUT_OF_DATE:
                stale.append((t, v))
        return study, keep, stale

    def keep_going(self) -> bool:
        """Whether Snakemake runs with ``--keep-going`` (its ``ExecutionSettings``, so that
        the API, a profile's ``keep-going: true`` and the command line agree).

        Returns
        -------
        bool
            True when it does (False before Snakemake has handed the workflow its settings).
        """
        settings = getattr(self.workflow, "execution_settings", None)
        return bool(getattr(settings, "keep_going", False))

    def check_left_out(self) -> None:
        """Scans left out by the checks: without --keep-going, and in a dry run, stop with
        every problem listed; with it, say which and build the others (the run then ends
        non-zero through the job of rules/left_out.smk)."""
        study = self.study
        if not study.left_out:
            return
        if not self.keep_going():
            stop(study.left_out_text)
        if self.workflow.dryrun:  # nothing is built: the problems are the answer (exit 1)
            stop(f"{study.left_out_text}\n(with --keep-going a run leaves these scans out "
                 "and builds the others)")
        logger.warning(format_failures(study.left_out, ())
                       + "\nltpa: --keep-going: building every other scan; the run will "
                         "end with an error")

    def rerun_on_mtime_only(self) -> None:
        """Make the modification time Snakemake's only rerun trigger for this run.

        Whether an output is up to date is ltpa.study.staleness's decision, from the
        study's files; Snakemake's other triggers read its records in the working folder
        (.snakemake/metadata), so they would answer differently from another folder. The
        workflow's profiles set ``rerun-triggers: mtime``, so a run with them finds it so;
        a run without a profile (``--workflow-profile none``, the workflow as a module)
        has all triggers on, and they are narrowed here in its ``DAGSettings`` (said in one
        line). A Snakemake without that setting is told nothing and runs as it would.
        """
        settings = getattr(self.workflow, "dag_settings", None)
        triggers = getattr(settings, "rerun_triggers", None)
        if triggers is None:
            return
        if set(triggers) != {RerunTrigger.MTIME}:
            names = " ".join(sorted(str(getattr(t, "name", t)).lower() for t in triggers))
            logger.info(f"ltpa: rebuilds are decided from the outputs' sidecars: Snakemake's "
                        f"rerun triggers {names} -> mtime for this run")
            settings.rerun_triggers = frozenset({RerunTrigger.MTIME})

    def decide_rebuilds(self) -> None:
        """Once per run, when Snakemake first asks for an input (its settings are known):
        the checks that need them, the SLURM batches, and the rebuild stamps.

        An output ltpa.study.staleness finds out of date gets a rebuild stamp among its
        inputs (ltpa.study.stamps: a file later than the output, so Snakemake's mtime rule
        reruns the job). A remote job (SLURM) runs exactly the jobs it was given.
        """
        if self._decided or self.remote:
            return
        self._decided = True
        self.check_left_out()
        self.rerun_on_mtime_only()
        self.register_batches()
        for t, v in self.stale:
            logger.info(f"ltpa: {t.where()}: {str(t.output)!r} is out of date: {v.reason}")
        remove_other_stamps(self.work_dir, self.stamps.values())

    def stale_input(self, output) -> dict:
        """The rebuild stamp of an output out of date, written now, as a named input.

        Parameters
        ----------
        output : str or Path
            An output's absolute path.

        Returns
        -------
        dict
            ``{"ltpa_stale": stamp}`` for an output out of date, else ``{}``.

        Raises
        ------
        SystemExit
            When the stamp cannot be written (the message names output and stamp).
        """
        stamp = self.stamps.get(str(output))
        if stamp is None:
            return {}
        try:
            return {"ltpa_stale": str(write_stamp(stamp, output))}
        except LtpaError as exc:
            stop(str(exc))

    # ----------------------------------------------------------------- data rules

    def all_outputs(self) -> list[str]:
        """Every output the JSON names that the workflow builds or keeps up to date, and
        with --keep-going, when scans were left out, the job that says so.

        Returns
        -------
        list of str
            Absolute paths, in the study's order.
        """
        return [str(t.output) for t in self.targets] + self.left_out_outputs()

    def target_of(self, rule_name: str, wildcards):
        """The target of a data job.

        Parameters
        ----------
        rule_name : str
            The data rule.
        wildcards : snakemake.io.Wildcards
            The job's wildcards: ``path`` is its absolute output path.

        Returns
        -------
        ltpa.study.targets.Target
            The target that output belongs to.
        """
        return self.by_output[(rule_name, wildcards.path)]

    def inputs_of(self, rule_name: str):
        """Input function of a data rule: the inputs that another job makes, and the
        rebuild stamp of an output out of date.

        Raw inputs (trk, atlases, graphml, ...) are not declared to Snakemake: whether they
        changed is ltpa.study.staleness's decision (from the sidecars), their presence and
        headers are checked before any job, and the job reads them through its spec.

        Parameters
        ----------
        rule_name : str
            The data rule.

        Returns
        -------
        callable
            ``inputs(wildcards) -> dict`` of named input paths (the first call of a run
            makes the rebuild decisions: ``decide_rebuilds``).
        """

        @signature_known
        def inputs(wildcards):
            self.decide_rebuilds()
            t = self.target_of(rule_name, wildcards)
            out = {k: str(p) for k, p in t.inputs.items()
                   if p is not None and p in self.produced}
            out.update(self.stale_input(t.output))
            return out

        return inputs

    def _path_constraints(self) -> dict:
        """Per rule, the regex of its outputs' ``{path}`` (ltpa.study.targets.path_templates):
        short templates, or the exact paths for a rule whose templates would also match
        another file the workflow asks Snakemake about (an input, a kept output, QC, maps)."""
        out = {r: path_templates(self.targets, r) for r in DATA_RULE_NAMES}
        if self.remote:  # its driver chose the jobs: the templates of these targets
            return out
        produced = {str(t.output): t.rule for t in self.targets}
        others = {str(p) for t in self.all_targets for p in t.inputs.values() if p is not None}
        # outputs kept as they are (their inputs archived): QC reads them, no rule claims them
        others |= {str(t.output) for t in self.all_targets}
        work = self.work_dir
        others |= {f"{work}/qc/{kind}/{s.scan_id}.tsv" for s in self.scans
                   for kind in ("scans", "lengths")}
        others |= {f"{work}/maps/{m['name']}.nii.gz" for m in self.config["maps"]}
        others.add(self.left_out_flag)
        others -= set(produced)
        for name in check_templates(out, produced, others):
            out[name] = exact_paths_regex([str(t.output) for t in self.targets
                                           if t.rule == name])
        return out

    def constraints(self, rule_name: str) -> dict:
        """The wildcard constraint of a data rule: its outputs' paths.

        Parameters
        ----------
        rule_name : str
            The data rule.

        Returns
        -------
        dict
            ``{"path": regex}`` (short templates, or the exact paths where templates
            would also match another file Snakemake is asked about).
        """
        return {"path": self.path_constraint[rule_name]}

    def log_pattern(self, rule_name: str) -> str:
        """Log file of a data job: ``<log_dir>/<rule><absolute output path>.log``.

        Parameters
        ----------
        rule_name : str
            The data rule.

        Returns
        -------
        str
            The pattern, with the ``{path}`` wildcard.
        """
        return f"{self.log_dir}/{rule_name}{{path}}.log"

    def job_spec(self, rule_name: str, wildcards) -> JobSpec:
        """The target's job description, made once per target.

        Parameters
        ----------
        rule_name : str
            The data rule.
        wildcards : snakemake.io.Wildcards
            The job's wildcards (``path``: its output).

        Returns
        -------
        ltpa.study.spec.JobSpec
            What ltpa-job runs for that output.
        """
        key = (rule_name, wildcards.path)
        spec = self.specs.get(key)
        if spec is None:
            spec = self.specs[key] = self.target_of(rule_name, wildcards).spec(self.config)
        return spec

    def spec_of(self, rule_name: str):
        """Param function: the target's job description as JSON (what ltpa-job runs).

        Parameters
        ----------
        rule_name : str
            The data rule.

        Returns
        -------
        callable
            ``spec(wildcards) -> str``.
        """

        @signature_known
        def spec(wildcards):
            return self.job_spec(rule_name, wildcards).to_json()

        return spec

    def threaded_spec_of(self, rule_name: str):
        """``spec_of`` for rules whose kernel runs in threads: the job's description with
        the threads Snakemake gives the job (capped by --cores; they decide nothing of its
        output).

        Parameters
        ----------
        rule_name : str
            The data rule.

        Returns
        -------
        callable
            ``spec(wildcards, threads) -> str``.
        """

        @signature_known
        def spec(wildcards, threads):
            return dataclasses.replace(self.job_spec(rule_name, wildcards),
                                       threads=threads).to_json()

        return spec

    def resource_of(self, rule_name: str, formula):
        """Resource function: ``formula(spec)`` (ltpa.study.resources), times the attempt.

        Parameters
        ----------
        rule_name : str
            The data rule.
        formula : callable
            ``formula(JobSpec) -> number`` (``mem_mb`` or ``runtime_min``).

        Returns
        -------
        callable
            ``resource(wildcards, attempt) -> number``: a retried job asks for more.
        """

        @signature_known
        def resource(wildcards, attempt):
            return formula(self.job_spec(rule_name, wildcards)) * attempt

        return resource

    # ----------------------------------------------------------------- SLURM batches

    def batched(self) -> bool:
        """Whether jobs go to a remote executor (SLURM), or run inside one of its jobs.

        Local runs (and their dry runs) have no groups: Snakemake ignores them when it runs
        jobs itself, yet checks each group's readiness job by job, O(jobs^2) per batch. A
        dry run shows the groups the intended executor would submit: Snakemake runs it
        with its "dryrun" executor, but forces threads (POSIX) only when the intended
        executor is a remote one.

        Returns
        -------
        bool
            True when the per-scan jobs are put in their batch's group.
        """
        wf = self.workflow
        if wf.remote_exec or not wf.local_exec:
            return True
        settings = getattr(wf, "execution_settings", None)
        return bool(wf.dryrun and os.name == "posix" and settings is not None
                    and settings.use_threads)

    def register_batches(self) -> None:
        """Let a group job span every job of a batch; for local runs, take the group
        functions off the rules (see ``batched``).

        ``scans_per_job`` consecutive scans (JSON order) are one batch, one job group; the
        batch's jobs are not connected, so its group needs ``group_components`` as large as
        the batch (the group settings' mapping, set here because the batch names are known
        only once the study is read; a Snakemake without them gets one SLURM job per scan,
        said as a warning).
        """
        if not self.batched():
            for r in self.workflow.rules:
                if r.name in BATCHED_RULES:
                    r.group = None
            return
        settings = getattr(self.workflow, "group_settings", None)
        if settings is None or not hasattr(settings, "group_components"):
            logger.warning("ltpa: this Snakemake has no group settings: every scan is its "
                           "own SLURM job (scans_per_job is not applied)")
            return
        components = dict(settings.group_components)
        components.update({b: 10**6 for b in set(self.batch.values())})
        settings.group_components = immutables.Map(components)

    def group_of(self, rule_name: str):
        """Group function of a data rule: the scan's batch, for remote executors only.

        Parameters
        ----------
        rule_name : str
            The data rule.

        Returns
        -------
        callable
            ``group(wildcards) -> str or None``: ``scans_NNNNNN`` (``scans_per_job``
            consecutive scans of the JSON), None for local runs.
        """

        @signature_known
        def group(wildcards):
            if not self.batched():
                return None
            return self.batch[self.target_of(rule_name, wildcards).scan.scan_id]

        return group

    def scan_group(self, wildcards):
        """Group function of the per-scan QC job.

        Parameters
        ----------
        wildcards : snakemake.io.Wildcards
            The job's wildcards (``scan``: its scan_id).

        Returns
        -------
        str or None
            The scan's batch, None for local runs.
        """
        return self.batch[wildcards.scan] if self.batched() else None

    # ----------------------------------------------------------------- left out scans

    def left_out_outputs(self) -> list[str]:
        """The output of the job that fails a --keep-going run with scans left out.

        Returns
        -------
        list of str
            Its never-written flag file, or [] when no scan was left out.
        """
        return [self.left_out_flag] if self.study.left_out else []

    def left_out_inputs(self, wildcards) -> list:
        """Input function of that job: none (the first call of a run whose only job it is).

        Parameters
        ----------
        wildcards : snakemake.io.Wildcards
            Unused.

        Returns
        -------
        list
            Always empty.
        """
        self.decide_rebuilds()
        return []

    def left_out_scans(self, wildcards) -> str:
        """The scans left out, for that job's message.

        Parameters
        ----------
        wildcards : snakemake.io.Wildcards
            Unused.

        Returns
        -------
        str
            Their scan_ids, comma-separated.
        """
        return ", ".join(self.study.left_out)

    # ----------------------------------------------------------------- study maps

    def _map_jobs(self) -> dict:
        try:
            return {j.name: j for j in study_map_jobs(self.study)}
        except LtpaError as exc:
            stop(str(exc))

    def judge_maps(self) -> None:
        """The maps that ltpa.study.staleness finds out of date get a rebuild stamp (see
        ``decide_rebuilds``): their stamps join the others before any is written or removed."""
        if self._maps_judged or self.remote or not self.map_jobs:
            return
        self._maps_judged = True
        jobs = list(self.map_jobs.values())
        for j, v in zip(jobs, map_verdicts(jobs, self.specs.values())):
            if v.status == OUT_OF_DATE:
                logger.info(f"ltpa: map {j.name!r}: {j.output!r} is out of date: {v.reason}")
                self.stamps[str(j.output)] = stamp_path(self.work_dir, RULE_MAP, j.output)
        self.decide_rebuilds()

    def map_inputs(self, wildcards) -> list[str]:
        """Input function of a study map: every file it reads, and its rebuild stamp.

        Parameters
        ----------
        wildcards : snakemake.io.Wildcards
            The job's wildcards (``name``: the map's name in the config).

        Returns
        -------
        list of str
            The scans' pkls, npys (and pattern files the workflow builds), sorted, then the
            map's rebuild stamp when it is out of date.
        """
        self.judge_maps()
        job = self.map_jobs[wildcards.name]
        inputs = sorted({p for p in job.inputs.values() if p is not None})
        return inputs + list(self.stale_input(job.output).values())

    def map_outputs(self) -> list[str]:
        """The maps the target rule asks for, with their report figure and table (qc on).

        Returns
        -------
        list of str
            ``<work_dir>/maps/<name>.nii.gz`` per map, and its report files.
        """
        out = [j.output for j in self.map_jobs.values()]
        if self.config["qc"]:
            for name in self.map_jobs:
                out += [f"{self.work_dir}/report/maps/{name}.png",
                        f"{self.work_dir}/report/maps/{name}.top.tsv"]
        return out

    # ----------------------------------------------------------------- QC

    def scan_targets(self, scan_id: str, rule_name: str) -> list:
        """The targets of one scan and rule (kept outputs included).

        Parameters
        ----------
        scan_id : str
            The scan.
        rule_name : str
            The rule.

        Returns
        -------
        list of ltpa.study.targets.Target
            In the JSON's order; [] when none.
        """
        return self.by_scan.get((scan_id, rule_name), [])

    def kept_outputs(self, scan_id: str) -> list[str]:
        """The scan's outputs kept while their inputs are archived (flagged in QC).

        Parameters
        ----------
        scan_id : str
            The scan.

        Returns
        -------
        list of str
            Their paths, sorted.
        """
        mine = [t for rule in (RULE_INDEX, RULE_LABEL) for t in self.scan_targets(scan_id, rule)]
        if self.kept is not None:  # judged with the study: no second look at the files
            return sorted(str(t.output) for t in mine if t.output in self.kept)
        verdicts = judge_all([t.spec(self.config) for t in mine])  # a cluster job's
        return sorted(str(t.output) for t, v in zip(mine, verdicts) if v.status == KEPT)

    def qc_inputs(self, wildcards) -> dict:
        """Input function of a scan's QC job: its pkl and npys.

        Parameters
        ----------
        wildcards : snakemake.io.Wildcards
            The job's wildcards (``scan``: its scan_id).

        Returns
        -------
        dict
            ``{"pkl": [path], "npy": [paths]}``.
        """
        return {
            "pkl": [str(t.output) for t in self.scan_targets(wildcards.scan, RULE_INDEX)],
            "npy": [str(t.output) for t in self.scan_targets(wildcards.scan, RULE_LABEL)],
        }

    def qc_spec(self, wildcards) -> str:
        """Param function: the scan's QC job (step "qc_scan" of ltpa.jobs.pipeline, run by
        ltpa-job like the data jobs) as JSON. Its inputs are the pkl and npys it reads
        (watched while it runs); the trk, read for the lengths when on disk, is not.

        Parameters
        ----------
        wildcards : snakemake.io.Wildcards
            The job's wildcards (``scan``: its scan_id).

        Returns
        -------
        str
            The job's ``JobSpec`` as JSON.
        """
        scan_id = wildcards.scan
        scan = self.scan_of[scan_id]
        pkl = self.scan_targets(scan_id, RULE_INDEX)
        atlases = [[t.atlas_key, str(t.output)] for t in self.scan_targets(scan_id, RULE_LABEL)]
        inputs = {"pkl_path": str(pkl[0].output) if pkl else None}
        inputs.update({f"numpy_path:{key}": npy for key, npy in atlases})
        extra = {
            "lengths": os.path.abspath(f"{self.work_dir}/qc/lengths/{scan_id}.tsv"),
            "atlases": atlases,
            "trk_file": str(scan.trk_file) if scan.trk_file else None,
            "kept": self.kept_outputs(scan_id),
        }
        return JobSpec("qc_scan", os.path.abspath(f"{self.work_dir}/qc/scans/{scan_id}.tsv"),
                       inputs=inputs, scan_id=scan.scan_id,
                       start=self.config["connection_ids_start_at"], sidecar=False,
                       extra=extra).to_json()

    def atlas_keys(self) -> list[str]:
        """The atlases of the study (their keys), sorted.

        Returns
        -------
        list of str
            E.g. ``["Lausanne2008_scale-33", ...]``.
        """
        return sorted({t.atlas_key for t in self.all_targets if t.rule == RULE_LABEL})

    def atlas_npys(self, atlas: str) -> list[tuple]:
        """Every scan labeled with one atlas.

        Parameters
        ----------
        atlas : str
            The atlas key.

        Returns
        -------
        list of tuple
            (scan_id, scan_group, npy path), in the JSON's order.
        """
        return [(t.scan.scan_id, t.scan.scan_group, str(t.output)) for t in self.all_targets
                if t.rule == RULE_LABEL and t.atlas_key == atlas]

    def compared_atlases(self) -> list[str]:
        """The atlases with a group comparison: 2+ scan_groups of 2+ scans.

        Returns
        -------
        list of str
            Their keys, sorted.
        """
        return [a for a in self.atlas_keys()
                if comparisons(Counter(group for _, group, _ in self.atlas_npys(a)))]

    def qc_outputs(self) -> list[str]:
        """The QC, report and provenance files the target rule asks for.

        Returns
        -------
        list of str
            Their paths; [] when qc is off.
        """
        if not self.config["qc"]:
            return []
        res = self.work_dir
        out = [f"{res}/qc/summary.tsv", f"{res}/report/share_unlabeled.png",
               f"{res}/report/lengths.png", f"{res}/provenance/config.yaml"]
        out += [f"{res}/report/connectivity/{a}.png" for a in self.atlas_keys()]
        for a in self.compared_atlases():
            out += [f"{res}/qc/group_differences/{a}.tsv",
                    f"{res}/report/group_differences/{a}.png"]
        return out

    def check_qc_options(self) -> None:
        """Stop if ``report_scan`` or ``reference_group`` names no scan or group."""
        groups = {s.scan_id: s.scan_group for s in self.scans}
        if self.study.report_scan not in groups:
            stop(f"config report_scan {self.study.report_scan!r} is not a scan_id of "
                 f"{self.config['local_data']!r}")
        ref = self.config["reference_group"]
        if ref is not None and ref not in groups.values():
            stop(f"config reference_group {ref!r} is not a scan_group of "
                 f"{self.config['local_data']!r} (its groups: "
                 f"{', '.join(sorted(set(map(str, groups.values()))))})")

    # ----------------------------------------------------------------- the end of a run

    def print_summary(self) -> None:
        """The end-of-run summary: the scans left out and the jobs that failed, then
        everything that affects the results of what was built (ltpa.qc.summary)."""
        if self.remote:
            return
        failures = format_failures(self.study.left_out, self.failed.jobs())
        notes = collect(self.study)
        if failures:
            logger.error(failures)
            if notes:
                logger.info(format_summary(notes))
            return
        logger.info(format_summary(notes))
