"""Snakemake script of every data rule: run the job its target describes (ltpa.pipeline.run)."""

import sys
from pathlib import Path

try:
    import ltpa  # noqa: F401
except ImportError:  # plain checkout
    sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from ltpa.jobs import job
from ltpa.pipeline import run
from ltpa.spec import JobSpec

spec = JobSpec.from_json(snakemake.params.spec)
with job(snakemake.log[0], f"{snakemake.rule} scan={spec.scan_id} -> {spec.output}"):
    run(spec)
