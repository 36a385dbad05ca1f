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
"""

from snakemake_executor_plugin_slurm import Executor as _SlurmExecutor
from snakemake_executor_plugin_slurm import ExecutorSettings, common_settings

__all__ = ["Executor", "ExecutorSettings", "common_settings"]


class Executor(_SlurmExecutor):
    def additional_general_args(self):
        # the job's own Snakemake runs the group's jobs with the local executor
        return "--executor local"
