"""The workflow's Snakemake glue (ltpa.workflow_glue), in process: the study read once, the
rule functions, the checks of Snakemake's settings, the batches and the end-of-run summary.

Snakemake's ``workflow`` object is stood in for by its settings objects (the real
``snakemake.settings.types`` classes) on a plain namespace: the glue reads only those and
the documented flags. The whole workflow runs on the same code in test_workflow,
test_study_home, test_qc, test_maps_workflow and test_slurm.
"""

import json
import logging
from types import SimpleNamespace

import pytest
from snakemake.logging import logger
from snakemake.settings.enums import RerunTrigger
from snakemake.settings.types import GroupSettings
from snakemake_interface_logger_plugins.common import LogEvent

from ltpa.study.config import with_defaults
from ltpa.workflow_glue import RULE_LEFT_OUT, FailedJobs, StudyGlue


@pytest.fixture(autouse=True)
def _own_handlers():
    """Each StudyGlue adds its failed-jobs handler to Snakemake's logger: removed after."""
    before = list(logger.handlers)
    yield
    for h in list(logger.handlers):
        if h not in before:
            logger.removeHandler(h)


def fake_workflow(remote=False, local=True, dryrun=False, keep_going=True,
                  triggers=(RerunTrigger.MTIME,), use_threads=False):
    return SimpleNamespace(
        remote_exec=remote, local_exec=local, dryrun=dryrun, rules=[],
        execution_settings=SimpleNamespace(keep_going=keep_going, use_threads=use_threads),
        dag_settings=SimpleNamespace(rerun_triggers=frozenset(triggers)),
        group_settings=GroupSettings(),
    )


def glue_of(local_data, workflow=None, **config):
    cfg = with_defaults({"local_data": str(local_data), "qc": False, **config})
    return StudyGlue(workflow or fake_workflow(), cfg)


def expected_outputs(local_data):
    """Every output the JSON names, read from the JSON itself."""
    out = []
    for scan in json.loads(local_data.read_text()):
        out += [str(local_data.parent / scan[k]) for k in ("pkl_path", "pkl_trk_path")
                if scan.get(k)]
        out += [str(local_data.parent / lab["numpy_path"]) for lab in scan["track_labels"]]
    return sorted(out)


def test_the_outputs_and_their_rule_functions(demo_study):
    glue = glue_of(demo_study)
    assert sorted(glue.all_outputs()) == expected_outputs(demo_study)
    npy = str(demo_study.parent / "s2" / "scale60.npy")
    wc = SimpleNamespace(path=npy)
    assert glue.target_of("label_streamlines", wc).scan.scan_id == "s2"
    # nothing is out of date: no stamp, and no input made by another job
    assert glue.inputs_of("label_streamlines")(wc) == {}
    spec = json.loads(glue.spec_of("label_streamlines")(wc))
    assert spec["output"] == npy and spec["scan_id"] == "s2"
    assert json.loads(glue.threaded_spec_of("label_streamlines")(wc, 3))["threads"] == 3
    assert glue.resource_of("label_streamlines", lambda s: 7)(wc, 2) == 14
    assert glue.log_pattern("label_streamlines") == (
        f"{glue.log_dir}/label_streamlines{{path}}.log")
    # the constraint of each data rule matches its outputs and nothing of another rule
    import re

    label = re.compile(glue.constraints("label_streamlines")["path"])
    index = re.compile(glue.constraints("index_streamlines")["path"])
    pkl = str(demo_study.parent / "s2" / "s2.pkl")
    assert label.fullmatch(npy) and not label.fullmatch(pkl)
    assert index.fullmatch(pkl) and not index.fullmatch(npy)


def test_an_output_out_of_date_gets_a_stamp_among_its_inputs(demo_study):
    npy = demo_study.parent / "s1" / "scale33.npy"
    import numpy as np

    np.save(npy, np.zeros(3, np.int32))  # an npy with no sidecar (dsi2's?): out of date
    glue = glue_of(demo_study)
    stale = [str(t.output) for t, _ in glue.stale]
    assert stale == [str(npy)]
    inputs = glue.inputs_of("label_streamlines")(SimpleNamespace(path=str(npy)))
    stamp = inputs["ltpa_stale"]
    assert stamp.startswith(f"{glue.work_dir}/stale/label_streamlines") and stamp.endswith(
        f"{npy}.stamp")
    from pathlib import Path

    assert Path(stamp).stat().st_mtime_ns > npy.stat().st_mtime_ns


def test_rerun_triggers_are_narrowed_to_mtime_when_no_profile_set_them(demo_study, caplog):
    wf = fake_workflow(triggers=(RerunTrigger.MTIME, RerunTrigger.PARAMS))
    glue = glue_of(demo_study, workflow=wf)
    with caplog.at_level(logging.INFO, logger=logger.name):
        glue.decide_rebuilds()
    assert wf.dag_settings.rerun_triggers == {RerunTrigger.MTIME}
    assert "rerun triggers mtime params -> mtime for this run" in caplog.text
    caplog.clear()
    wf = fake_workflow()  # the profiles' rerun-triggers: mtime: nothing to say
    with caplog.at_level(logging.INFO, logger=logger.name):
        glue_of(demo_study, workflow=wf).decide_rebuilds()
    assert wf.dag_settings.rerun_triggers == {RerunTrigger.MTIME}
    assert "rerun triggers" not in caplog.text


def test_batches_are_registered_for_remote_executors_only(demo_study):
    local = fake_workflow()
    glue = glue_of(demo_study, workflow=local, scans_per_job=2)
    glue.decide_rebuilds()
    assert dict(local.group_settings.group_components) == {}
    assert glue.group_of("index_streamlines")(
        SimpleNamespace(path=str(demo_study.parent / "s3" / "s3.pkl"))) is None
    remote = fake_workflow(local=False)
    glue = glue_of(demo_study, workflow=remote, scans_per_job=2)
    glue.decide_rebuilds()
    # 3 scans, 2 per job: two batches, each allowed to span all its jobs
    assert dict(remote.group_settings.group_components) == {
        "scans_000000": 10**6, "scans_000001": 10**6}
    group = glue.group_of("index_streamlines")
    assert [group(SimpleNamespace(path=str(demo_study.parent / s / f"{s}.pkl")))
            for s in ("s1", "s2", "s3")] == ["scans_000000", "scans_000000", "scans_000001"]
    assert glue.scan_group(SimpleNamespace(scan="s3")) == "scans_000001"


def test_failed_jobs_are_read_from_snakemakes_error_records():
    handler = FailedJobs()
    logger.addHandler(handler)
    try:
        # as Snakemake logs a failed job (snakemake.jobs.Job.log_error): the fields of the
        # logger-plugin interface's JOB_ERROR event
        for rule, out in (("label_streamlines", "/s/b.npy"), ("index_streamlines", "/s/a.pkl"),
                          (RULE_LEFT_OUT, "/w/flag")):
            logger.error(f"Error in rule {rule}", extra=dict(
                event=LogEvent.JOB_ERROR, rule_name=rule, output=[out],
                log=[f"/logs/{rule}{out}.log"]))
        logger.error("another error", extra=dict(event=LogEvent.ERROR))
        logger.info("job info", extra=dict(event=LogEvent.JOB_INFO, rule_name="x",
                                           output=["/x"], log=[]))
    finally:
        logger.removeHandler(handler)
    assert handler.jobs() == [
        ("index_streamlines", "/s/a.pkl", "/logs/index_streamlines/s/a.pkl.log"),
        ("label_streamlines", "/s/b.npy", "/logs/label_streamlines/s/b.npy.log"),
    ]


def test_the_summary_names_failed_jobs_and_scans_left_out(demo_study, caplog):
    raw = (demo_study.parent / "s2" / "s2.trk").read_bytes()
    (demo_study.parent / "s2" / "s2.trk").write_bytes(raw[:-6])  # a bad header: left out
    glue = glue_of(demo_study)
    try:
        assert list(glue.study.left_out) == ["s2"]
        assert glue.left_out_outputs() == [glue.left_out_flag]
        assert glue.left_out_scans(None) == "s2"
        logger.error("Error in rule", extra=dict(
            event=LogEvent.JOB_ERROR, rule_name="index_streamlines",
            output=[str(demo_study.parent / "s1" / "s1.pkl")], log=["/l.log"]))
        with caplog.at_level(logging.INFO, logger=logger.name):
            glue.print_summary()
    finally:
        logger.removeHandler(glue.failed)
    assert "ltpa: 1 scan left out" in caplog.text and "scan s2:" in caplog.text
    assert "ltpa: 1 job failed" in caplog.text
    assert f"index_streamlines: {demo_study.parent}/s1/s1.pkl (log: /l.log)" in caplog.text


def test_a_dry_run_without_keep_going_stops_on_scans_left_out(demo_study, caplog):
    raw = (demo_study.parent / "s2" / "s2.trk").read_bytes()
    (demo_study.parent / "s2" / "s2.trk").write_bytes(raw[:-6])
    glue = glue_of(demo_study, workflow=fake_workflow(keep_going=False))
    try:
        with caplog.at_level(logging.ERROR, logger=logger.name), pytest.raises(SystemExit):
            glue.decide_rebuilds()
    finally:
        logger.removeHandler(glue.failed)
    assert "scan #1 ('s2'), field 'trk_file'" in caplog.text


def test_kept_outputs_come_from_the_studys_verdicts_as_a_fresh_judgement_gives(demo_study):
    """A scan whose trk was archived after its outputs were built: its pkl and npys are
    kept, flagged in its QC job. The glue takes them from the study's own verdicts; a
    cluster job (no verdicts) judges the files itself: the same list."""
    from ltpa.jobs.pipeline import run

    glue = glue_of(demo_study)
    for spec in glue.specs.values():
        if spec.scan_id == "s2":  # every output of s2 (its pkl, key .trk and npys)
            run(spec)
    (demo_study.parent / "s2" / "s2.trk").unlink()
    glue = glue_of(demo_study)
    want = sorted(str(demo_study.parent / "s2" / f) for f in
                  ("s2.pkl", "scale33.npy", "scale60.npy"))
    assert glue.kept is not None and glue.kept_outputs("s2") == want
    assert glue.kept_outputs("s1") == []
    glue.kept = None  # as in a cluster job
    assert glue.kept_outputs("s2") == want
    assert json.loads(glue.qc_spec(SimpleNamespace(scan="s2")))["extra"]["kept"] == want
