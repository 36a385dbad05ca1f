"""Snakemake script: one atlas's npys -> the group-difference table (see ltpa.qc.groupdiff)."""

import sys
from pathlib import Path

try:
    import ltpa  # noqa: F401
except ImportError:  # plain checkout
    sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from ltpa.jobs.job import job
from ltpa.qc.groupdiff import write_group_differences

with job(snakemake.log[0], f"qc_group_differences atlas={snakemake.wildcards.atlas}"):
    write_group_differences(snakemake.params.scans, snakemake.output.tsv,
                            reference=snakemake.params.reference)
