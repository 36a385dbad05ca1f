"""Snakemake script: trk -> .trk in the key grid (see ltpa.pipeline.export_key_trk)."""

import sys
from pathlib import Path

try:
    import ltpa  # noqa: F401
except ImportError:  # plain checkout
    sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from ltpa.jobs import job
from ltpa.pipeline import export_key_trk

with job(snakemake.log[0], f"export_key_trk scan={snakemake.params.scan_id}"):
    export_key_trk(
        snakemake.input.trk_file,
        snakemake.output.trk,
        space=snakemake.params.space,
        legacy_dsi2_mni_offset=snakemake.params.legacy_dsi2_mni_offset,
        scan_id=snakemake.params.scan_id,
        reference_volume=snakemake.input.get("reference_volume"),
    )
