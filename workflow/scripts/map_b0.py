"""Snakemake script: b0-space atlas + DSI Studio fib mapping -> QSDR atlas (ltpa.b0map)."""

import sys
from pathlib import Path

try:
    import ltpa  # noqa: F401
except ImportError:  # plain checkout
    sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from ltpa.b0map import map_b0_atlas
from ltpa.jobs import job

scan = snakemake.params.scan_id
with job(snakemake.log[0], f"map_b0_atlas scan={scan}"):
    map_b0_atlas(
        snakemake.input.fib_file,
        snakemake.input.b0_volume_path,
        snakemake.output.volume,
        context=f"scan {scan!r}",
    )
