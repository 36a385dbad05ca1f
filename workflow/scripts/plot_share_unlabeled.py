"""Snakemake script: study summary -> share unlabeled per scan by group (see ltpa.qc.report)."""

import sys
from pathlib import Path

try:
    import ltpa  # noqa: F401
except ImportError:  # plain checkout
    sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from ltpa.jobs.job import job
from ltpa.qc.report import plot_share_unlabeled

with job(snakemake.log[0], "plot_share_unlabeled"):
    plot_share_unlabeled(snakemake.input.tsv, snakemake.output.png)
