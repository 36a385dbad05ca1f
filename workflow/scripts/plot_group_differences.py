"""Snakemake script: one atlas's group-difference table -> its plot (see ltpa.qc.report)."""

import sys
from pathlib import Path

try:
    import ltpa  # noqa: F401
except ImportError:  # plain checkout
    sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from ltpa.jobs.job import job
from ltpa.qc.report import plot_group_differences

with job(snakemake.log[0], f"plot_group_differences atlas={snakemake.wildcards.atlas}"):
    plot_group_differences(snakemake.wildcards.atlas, snakemake.input.tsv, snakemake.output.png)
