# Targets, inputs and parameters of the QC rules (rules/qc.smk): QC tables, report
# plots and provenance under the workflow's results folder (config `results_dir`).

import os

import snakemake as _snakemake

from ltpa.study.provenance import sha256_of

SCAN_IDS = [s.scan_id for s in SCANS]
GROUP = {s.scan_id: s.scan_group for s in SCANS}
REPORT_SCAN = STUDY.report_scan
GLUE.check_qc_options()
ATLAS_KEYS = GLUE.atlas_keys()

# rule functions (ltpa.workflow_glue.StudyGlue)
qc_inputs = GLUE.qc_inputs
qc_spec = GLUE.qc_spec
atlas_npys = GLUE.atlas_npys
qc_outputs = GLUE.qc_outputs
scan_group = GLUE.scan_group
