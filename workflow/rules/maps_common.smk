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


def _force_stale_maps():
    """Force the maps that ltpa.study.staleness finds out of date (see _decide_rebuilds)."""
    if _MAPS_JUDGED or workflow.remote_exec or not MAP_JOBS:
        return
    _MAPS_JUDGED.append(True)
    _decide_rebuilds()
    jobs = list(MAP_JOBS.values())
    for j, v in zip(jobs, map_verdicts(jobs, STUDY.specs.values())):
        if v.status == OUT_OF_DATE:
            logger.info(f"ltpa: map {j.name!r}: {j.output!r} is out of date: {v.reason}")
            workflow._dag.forcefiles.add(j.output)


@_signature_known
def map_inputs(wildcards):
    _force_stale_maps()
    return sorted({p for p in MAP_JOBS[wildcards.name].inputs.values() if p is not None})


def map_outputs():
    """The maps the target rule asks for, with their report figures and tables under qc."""
    out = [j.output for j in MAP_JOBS.values()]
    if config["qc"]:
        for name in MAP_NAMES:
            out += [f"{RESULTS}/report/maps/{name}.png", f"{RESULTS}/report/maps/{name}.top.tsv"]
    return out
