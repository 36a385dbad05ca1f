# Targets and inputs of the study-map rules (rules/maps.smk; config `maps`).

from ltpa.analysis.maps_workflow import map_verdicts, study_map_jobs


def _map_jobs():
    try:
        return {j.name: j for j in study_map_jobs(STUDY)}
    except LtpaError as exc:
        stop(str(exc))


MAP_JOBS = _map_jobs()
MAP_NAMES = list(MAP_JOBS)
_MAPS_JUDGED = []


def _judge_maps():
    """The maps that ltpa.study.staleness finds out of date get a rebuild stamp (see
    _decide_rebuilds): their stamps join STAMPS before any is written or removed."""
    if _MAPS_JUDGED or workflow.remote_exec or not MAP_JOBS:
        return
    _MAPS_JUDGED.append(True)
    jobs = list(MAP_JOBS.values())
    for j, v in zip(jobs, map_verdicts(jobs, STUDY.specs.values())):
        if v.status == OUT_OF_DATE:
            logger.info(f"ltpa: map {j.name!r}: {j.output!r} is out of date: {v.reason}")
            STAMPS[str(j.output)] = stamp_path(STUDY.work_dir, "ltpa_map", j.output)
    _decide_rebuilds()


@_signature_known
def map_inputs(wildcards):
    _judge_maps()
    job = MAP_JOBS[wildcards.name]
    inputs = sorted({p for p in job.inputs.values() if p is not None})
    return inputs + list(stale_input(job.output).values())


def map_outputs():
    """The maps the target rule asks for, with their report figures and tables under qc."""
    out = [j.output for j in MAP_JOBS.values()]
    if config["qc"]:
        for name in MAP_NAMES:
            out += [f"{RESULTS}/report/maps/{name}.png", f"{RESULTS}/report/maps/{name}.top.tsv"]
    return out
