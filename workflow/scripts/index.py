"""Snakemake script: trk -> pickled TrackDataset (see ltpa.pipeline.index_scan)."""

import sys
from pathlib import Path

try:
    import ltpa  # noqa: F401
except ImportError:  # plain checkout
    sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from ltpa.jobs import job
from ltpa.pipeline import index_scan

with job(snakemake.log[0], f"index_streamlines scan={snakemake.params.scan_id}"):
    index_scan(
        snakemake.input.trk_file,
        snakemake.output.pkl,
        space=snakemake.params.space,
        legacy_dsi2_mni_offset=snakemake.params.legacy_dsi2_mni_offset,
        scan_id=snakemake.params.scan_id,
        reference_volume=snakemake.input.get("reference_volume"),
        properties=snakemake.params.properties,
    )
