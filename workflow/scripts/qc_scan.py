"""Snakemake script: a scan's outputs + sidecars (+ trk) -> its QC table (see ltpa.qc.tables)."""

import sys
from pathlib import Path

try:
    import ltpa  # noqa: F401
except ImportError:  # plain checkout
    sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from ltpa.jobs.job import job
from ltpa.qc.tables import write_scan_qc

p = snakemake.params
with job(snakemake.log[0], f"qc_scan scan={p.scan_id}"):
    write_scan_qc(
        p.scan_id,
        snakemake.output.tsv,
        snakemake.output.lengths,
        pkl_path=p.pkl_path,
        atlases=p.atlases,
        trk_file=p.trk_file,
        start=p.start,
        kept=p.kept,
    )
