# Load and validate local_data.json once (ltpa.workflow_glue.StudyGlue): the targets, their
# inputs and the wildcard constraints. Rules never parse the JSON themselves; every
# decision is made in the package (linted, unit-tested), these are its names for the rules.

import sys
from pathlib import Path

from snakemake.logging import logger
from snakemake.utils import validate

# The Python that runs Snakemake (the driver) reads the study before any job: it needs the
# ltpa package and its dependencies (numpy, nibabel, ...), i.e. `pip install <this repo>`
# in the driver's environment (`make install` makes .venv; conda: environment.yml).
try:
    import ltpa
except ImportError:  # a plain checkout: the package next to the workflow
    sys.path.insert(0, str(Path(workflow.basedir).parent / "src"))
try:
    import ltpa
    from ltpa.study.config import SCHEMA_PATH
    from ltpa.study.resources import mem_mb, runtime_min
    from ltpa.study.targets import (
        RULE_EXPORT,
        RULE_INDEX,
        RULE_LABEL,
        RULE_MAP_B0,
        RULE_PATTERNS,
        RULE_SCALARS,
        ids_alternation,
    )
    from ltpa.workflow_glue import RULE_LEFT_OUT, StudyGlue, stop
except ImportError as exc:
    logger.error(
        f"ltpa-prep: the Python running Snakemake ({sys.executable}) cannot import "
        f"{exc.name or 'a module'!r}: the workflow reads the study before any job, so the "
        f"driver's environment needs ltpa-prep installed with its dependencies: "
        f"pip install {Path(workflow.basedir).parent} (or `make install` there and run "
        f".venv/bin/snakemake)"
    )
    raise SystemExit(1)

# the package's config schema, the one place the defaults live: validate() fills them in
validate(config, str(SCHEMA_PATH), set_default=True)

GLUE = StudyGlue(workflow, config)
STUDY = GLUE.study
SCANS = GLUE.scans
LOG_DIR = GLUE.log_dir
# the study's own folder (<json stem>.ltpa beside local_data.json), unless results_dir says
RESULTS = GLUE.work_dir
LEFT_OUT_FLAG = GLUE.left_out_flag
JOB = GLUE.job

# rule functions (ltpa.workflow_glue.StudyGlue)
all_outputs = GLUE.all_outputs
inputs_of = GLUE.inputs_of
constraints = GLUE.constraints
log_pattern = GLUE.log_pattern
group_of = GLUE.group_of
spec_of = GLUE.spec_of
threaded_spec_of = GLUE.threaded_spec_of
resource_of = GLUE.resource_of
left_out_outputs = GLUE.left_out_outputs
left_out_inputs = GLUE.left_out_inputs
print_summary = GLUE.print_summary
