"""Snakemake script: per-scan length histograms -> one plot (see ltpa.qc.report)."""

import sys
from pathlib import Path

try:
    import ltpa  # noqa: F401
except ImportError:  # plain checkout
    sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from ltpa.jobs.job import job
from ltpa.qc.report import plot_lengths

with job(snakemake.log[0], "plot_lengths"):
    plot_lengths(snakemake.params.scans, snakemake.output.png)
