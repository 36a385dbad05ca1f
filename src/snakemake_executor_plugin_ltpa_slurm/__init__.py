"""Snakemake's SLURM executor, with the jobs of a SLURM job run by one Snakemake.

``--executor ltpa-slurm`` (workflow/profiles/slurm) submits exactly what
``snakemake-executor-plugin-slurm`` submits (same sbatch calls, settings, status checks,
logs; its options are spelled ``--ltpa-slurm-...`` instead of ``--slurm-...``). One thing
differs, inside a submitted job: the slurm plugin runs each job of a job group through
``srun`` and a Snakemake of its own, one after the other (``--executor slurm-jobstep
--jobs 1``), about 2.5 s of start-up per job whatever the job does. ltpa puts a batch of
``scans_per_job`` scans in one group job, so that is ~140 start-ups per SLURM job; here the
group's Snakemake runs its jobs itself (Snakemake's local executor, as the cluster-generic
plugin does), each through the warm ltpa job server (``ltpa-job``, ~0.1 s). The jobs are
single-threaded, run in the allocation's CPUs (``--cores`` of the group job), and their
memory and runtime are those the group job asked for.

Loaded lazily. Snakemake imports every installed executor plugin at start-up, for every
command (a dry run, ``--report``), to add its options to the command line; and importing
``snakemake_executor_plugin_slurm`` runs ``scontrol show config`` (the default of its
``status_command`` setting looks at SLURM's MinJobAge), which waits 10 s wherever
``scontrol`` is installed but no controller answers. So this module imports nothing of
SLURM: its settings are declared here (each one passed on to the slurm plugin only when
set), and the slurm plugin is imported when Snakemake creates the executor, i.e. only when
``--executor ltpa-slurm`` (the slurm profile) runs jobs. The slurm plugin itself is the
optional extra ``pip install "ltpa-prep[slurm]"`` (docs/slurm.md): installed, it is
imported at every start-up like any plugin.
"""


from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Optional

from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor
from snakemake_interface_executor_plugins.settings import CommonSettings, ExecutorSettingsBase

__all__ = ["Executor", "ExecutorSettings", "common_settings"]

INSTALL_HINT = ('the SLURM executor needs the slurm extra: pip install -e ".[slurm]" in the '
                "ltpa-prep folder (or make install EXTRAS=test,slurm)")

# what the slurm plugin declares: a remote executor on a shared file system
common_settings = CommonSettings(
    non_local_exec=True,
    implies_no_shared_fs=False,
    job_deploy_sources=False,
    pass_default_storage_provider_args=True,
    pass_default_resources_args=True,
    pass_envvar_declarations_to_cmd=False,
    auto_deploy_default_storage_provider=False,
)


def _opt(text):
    return field(default=None, metadata={"help": text + " (default: the slurm plugin's)",
                                         "env_var": False, "required": False})


def _flag(text):
    return field(default=False, metadata={"help": text, "env_var": False, "required": False})


@dataclass
class ExecutorSettings(ExecutorSettingsBase):
    """The slurm plugin's settings, under this plugin's prefix (--ltpa-slurm-...).

    None (or False for a flag) means "not given": the slurm plugin's own default applies,
    decided when the executor starts (some defaults ask SLURM).
    """

    array_jobs: Optional[str] = _opt("rules whose jobs are submitted as job arrays ('all' "
                                     "or a comma-separated list)")
    array_limit: Optional[int] = _opt("at most this many tasks per job array")
    disable_memory_fudge: bool = _flag("submit mem_mb exactly, without the plugin's margin")
    logdir: Optional[Path] = _opt("folder of the SLURM jobs' logs")
    keep_successful_logs: bool = _flag("keep the logs of SLURM jobs that succeeded")
    delete_logfiles_older_than: Optional[int] = _opt("delete SLURM logs older than this many "
                                                     "days (0: never)")
    init_seconds_before_status_checks: Optional[int] = _opt("seconds before the first status "
                                                            "query")
    requeue: bool = _flag("let SLURM requeue a job that was preempted or failed on a node")
    no_requeue: bool = _flag("never let SLURM requeue a job")
    exclude_failed_nodes: Optional[str] = _opt("leave out nodes on which jobs failed")
    no_account: bool = _flag("submit without --account")
    partition_config: Optional[Path] = _opt("YAML file describing the partitions to choose "
                                            "from")
    efficiency_report: bool = _flag("write a CPU and memory efficiency report at the end")
    efficiency_report_path: Optional[Path] = _opt("where the efficiency report goes")
    efficiency_threshold: Optional[float] = _opt("efficiency below which a job is reported")
    jobname_prefix: Optional[str] = _opt("prefix of the SLURM job names")
    status_command: Optional[str] = _opt("how job status is queried: sacct or squeue")
    status_attempts: Optional[int] = _opt("status queries before a job counts as failed")
    qos: Optional[str] = _opt("quality of service of the jobs")
    reservation: Optional[str] = _opt("reservation the jobs run in")
    pass_command_as_script: bool = _flag("pass the job's command to sbatch as a script")

    def given(self) -> dict:
        """The settings set on the command line or in the profile (to pass on).

        Returns
        -------
        dict
            Setting name (the field name, without the ``ltpa_slurm_`` prefix) -> value, for
            every field that is neither None nor False; the keyword arguments of the slurm
            plugin's ``ExecutorSettings``.
        """
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and value is not False:
                out[f.name] = value
        return out


def _slurm_executor_class():
    """The executor that runs jobs: the slurm plugin's, imported now (the SLURM queries of
    its import happen here, once SLURM was chosen)."""
    try:
        import snakemake_executor_plugin_slurm as slurm
    except ImportError as exc:
        from snakemake_interface_common.exceptions import WorkflowError

        raise WorkflowError(f"--executor ltpa-slurm: {INSTALL_HINT} ({exc})") from None

    class LtpaSlurmExecutor(slurm.Executor, Executor):
        def __init__(self, workflow, logger):
            settings = workflow.executor_settings
            if isinstance(settings, ExecutorSettings):
                # the slurm plugin reads its own settings class (with its own defaults)
                workflow.executor_settings = slurm.ExecutorSettings(**settings.given())
            super().__init__(workflow, logger)

        def additional_general_args(self):
            # the job's own Snakemake runs the group's jobs with the local executor
            return "--executor local"

        def get_job_exec_prefix(self, job):
            # the job's Snakemake reads only the scans of what it makes (ltpa.jobs.remote)
            prefix = super().get_job_exec_prefix(job)
            outputs = data_outputs(job)
            if outputs is None:
                return prefix
            from ltpa.jobs.remote import export_command

            return f"{prefix} && {export_command(outputs)}" if prefix else \
                export_command(outputs)

    return LtpaSlurmExecutor


def data_outputs(job):
    """The outputs of a (group) job made only of per-scan data jobs, or None.

    A job with any other rule in it (the QC of a scan, the study's summary and plots)
    needs the whole study: None. Imported here, when a SLURM job is submitted: the rule
    names live with the study's targets (``ltpa.study.targets``).

    Parameters
    ----------
    job : snakemake job
        A Snakemake job or group job (anything with ``is_group()``, ``jobs`` for a group,
        and ``rule.name`` and ``output`` per job).

    Returns
    -------
    list of str or None
        The output paths of all its jobs, in job order, when every job is one of the
        per-scan data rules (index, export, label, b0 map, scalars, patterns); else None.
    """
    from ltpa.study.targets import (
        RULE_EXPORT,
        RULE_INDEX,
        RULE_LABEL,
        RULE_MAP_B0,
        RULE_PATTERNS,
        RULE_SCALARS,
    )

    data = {RULE_INDEX, RULE_EXPORT, RULE_LABEL, RULE_MAP_B0, RULE_SCALARS, RULE_PATTERNS}
    jobs = list(job.jobs) if job.is_group() else [job]
    outputs = []
    for j in jobs:
        if j.rule.name not in data:
            return None
        outputs.extend(str(p) for p in j.output)
    return outputs


class Executor(RemoteExecutor):
    """What Snakemake registers: creating one creates the slurm plugin's executor."""

    def __new__(cls, *args, **kwargs):
        if cls is Executor:
            cls = _slurm_executor_class()  # a subclass: Python then calls its __init__ once
        return super().__new__(cls)
