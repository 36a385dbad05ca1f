"""Snakemake script: resolved config, versions, local_data.json sha256
(see ltpa.study.provenance)."""

import sys
from pathlib import Path

try:
    import ltpa  # noqa: F401
except ImportError:  # plain checkout
    sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from ltpa.jobs.job import job
from ltpa.study.provenance import write_provenance

p = snakemake.params
with job(snakemake.log[0], "provenance"):
    write_provenance(
        snakemake.output.config,
        snakemake.output.provenance,
        config=p.config,
        local_data=p.local_data,
        snakemake_version=p.snakemake_version,
    )
