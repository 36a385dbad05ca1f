"""Snakemake script: per-streamline scalar text -> mean per streamline (ltpa.pipeline)."""

import sys
from pathlib import Path

try:
    import ltpa  # noqa: F401
except ImportError:  # plain checkout
    sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from ltpa.jobs import job
from ltpa.pipeline import scalars_scan

scan = snakemake.params.scan_id
with job(snakemake.log[0], f"average_track_scalars scan={scan}"):
    scalars_scan(
        snakemake.input.txt_path,
        snakemake.input.trk_file,
        snakemake.output.npy,
        scan_id=scan,
        space=snakemake.params.space,
        reference_volume=snakemake.input.get("reference_volume"),
    )
