"""Snakemake script: a study map -> its slice mosaic and table of top centers (ltpa.qc.report)."""

import sys
from pathlib import Path

try:
    import ltpa  # noqa: F401
except ImportError:  # plain checkout
    sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from ltpa.analysis.maps_workflow import write_top_table
from ltpa.jobs.job import job
from ltpa.qc.report import plot_map

with job(snakemake.log[0], f"plot_map name={snakemake.wildcards.name}"):
    plot_map(snakemake.input.nii, snakemake.output.png)
    write_top_table(snakemake.input.nii, snakemake.output.tsv)
