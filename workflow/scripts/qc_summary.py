"""Snakemake script: every scan's QC table -> the study summary
(see ltpa.qc.tables.write_summary)."""

import sys
from pathlib import Path

try:
    import ltpa  # noqa: F401
except ImportError:  # plain checkout
    sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from ltpa.jobs.job import job
from ltpa.qc.tables import write_summary

with job(snakemake.log[0], "qc_summary"):
    write_summary(list(snakemake.input.tsv), snakemake.output.tsv, snakemake.params.scans)
