"""Snakemake script: one study map of the config's `maps` (see ltpa.analysis.maps_workflow)."""

import sys
from pathlib import Path

try:
    import ltpa  # noqa: F401
except ImportError:  # plain checkout
    sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from ltpa.analysis.maps_workflow import MapJob, build_map
from ltpa.jobs.job import job

with job(snakemake.log[0], f"ltpa_map name={snakemake.wildcards.name}"):
    build_map(MapJob.from_json(snakemake.params.job), dict(snakemake.params.config))
