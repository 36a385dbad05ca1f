"""Snakemake script: trk + atlas -> connection id per streamline (see ltpa.pipeline.label_scan)."""

import sys
from pathlib import Path

try:
    import ltpa  # noqa: F401
except ImportError:  # plain checkout
    sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from ltpa.jobs import job
from ltpa.pipeline import label_scan

p = snakemake.params
with job(snakemake.log[0], f"label_streamlines scan={p.scan_id} atlas={p.atlas_key}"):
    label_scan(
        snakemake.input.trk_file,
        snakemake.input.volume_path,
        snakemake.output.npy,
        graphml_path=snakemake.input.get("graphml_path"),
        labels_path=snakemake.input.get("labels_path"),
        start=p.start,
        scan_id=p.scan_id,
        atlas_key=p.atlas_key,
        space=p.space,
        reference_volume=snakemake.input.get("reference_volume"),
    )
