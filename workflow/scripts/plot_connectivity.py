"""Snakemake script: one atlas's npys -> connection-count matrices (see ltpa.qc.report)."""

import sys
from pathlib import Path

try:
    import ltpa  # noqa: F401
except ImportError:  # plain checkout
    sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from ltpa.jobs.job import job
from ltpa.qc.report import plot_connectivity

p = snakemake.params
with job(snakemake.log[0], f"plot_connectivity atlas={snakemake.wildcards.atlas}"):
    plot_connectivity(snakemake.wildcards.atlas, p.scans, p.report_scan, snakemake.output.png)
