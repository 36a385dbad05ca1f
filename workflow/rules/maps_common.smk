# Targets and inputs of the study-map rules (rules/maps.smk; config `maps`):
# ltpa.workflow_glue.StudyGlue (map_jobs, map_inputs, map_outputs).

MAP_JOBS = GLUE.map_jobs
MAP_NAMES = list(MAP_JOBS)
map_inputs = GLUE.map_inputs
map_outputs = GLUE.map_outputs
