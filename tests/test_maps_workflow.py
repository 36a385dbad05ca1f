"""Study maps in the workflow (config `maps`, ltpa.analysis.maps_workflow) and the report's maps.

The references here read the pkl (voxel -> streamline ids) and npy (streamline -> id)
directly: the sphere's voxels, the union of their id lists per scan, the ids' labels
counted with numpy. They check the map files the jobs write, the top centers' values and
the connections named for them; staleness is checked through the same verdict the
workflow uses, after changing an input, an option or a scan's group.
"""

import json
import os
import warnings

import nibabel as nib
import numpy as np
import pytest

from conftest import run_snakemake, study_folder
from ltpa.analysis.maps_workflow import (
    build_map,
    map_items,
    map_jobs,
    map_verdicts,
    top_table_rows,
    write_top_table,
)
from ltpa.errors import LtpaError
from ltpa.study import sidecar
from ltpa.study.config import with_defaults
from ltpa.study.staleness import OK, OUT_OF_DATE
from ltpa.study.study import load_study

ATLAS = {"name": "Lausanne2008", "parameters": {"scale": 33}}
PLANTED = ["lh.superiorfrontal", "lh.precuneus"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A 6-scan demo study (3 controls, 3 patients) with its pkls and npys made."""
    from ltpa.demo.study import make_study_demo
    from ltpa.jobs.pipeline import run

    path = make_study_demo(tmp_path_factory.mktemp("maps") / "study", n_scans=6,
                           n_streamlines=1500, seed=4)
    config = with_defaults({"local_data": str(path)})
    targets = load_study(path, config, check_inputs_of_jobs=False).targets
    for t in sorted(targets, key=lambda t: t.rule != "map_b0_atlas"):
        run(t.spec(config))
    return path


def config_with(path, *maps):
    return with_defaults({"local_data": str(path), "maps": list(maps)})


def sphere(center, r, dim):
    a = np.arange(-r, r + 1)
    off = np.stack(np.meshgrid(a, a, a, indexing="ij"), -1).reshape(-1, 3)
    off = off[(off ** 2).sum(1) <= r * r]
    vox = np.asarray(center) + off
    return vox[np.all((vox >= 0) & (vox < np.asarray(dim)), axis=1)]


def reference_counts(path, center, r, n_ids):
    """(scans x connection ids) distinct streamlines in the sphere, from the pkl and npy."""
    from ltpa.dataset import load_track_dataset

    scans = json.loads(path.read_text())
    out = np.zeros((len(scans), n_ids), dtype=np.int64)
    for s, scan in enumerate(scans):
        ds = load_track_dataset(path.parent / scan["pkl_path"])
        labels = np.load(path.parent / scan["track_labels"][0]["numpy_path"])
        ids = set()
        for v in sphere(center, r, ds.tracks_at_ijk.dim):
            ids.update(int(x) for x in ds.tracks_at_ijk.get(tuple(int(c) for c in v), ()))
        if ids:
            out[s] = np.bincount(labels[sorted(ids)], minlength=n_ids)[:n_ids]
    return out


def make(path, item):
    config = config_with(path, item)
    job = map_jobs(load_study(path, config))[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # patterns computed in memory (no pattern files)
        build_map(job, config)
    return job, config


def test_coverage_map_file_sidecar_and_top_centers(study):
    """The map's NIfTI (key grid), its study_map sidecar, the top centers' values and
    named drivers equal the references counted from the pkls and npys."""
    item = {"name": "cov", "atlas": ATLAS, "radius": 1, "stat": "coverage"}
    job, config = make(study, item)
    assert job.output == str(study_folder(study) / "maps" / "cov.nii.gz")
    img = nib.load(job.output)
    vol = np.asarray(img.dataobj)
    assert vol.shape == (91, 109, 91)
    body, why = sidecar.read(job.output)
    assert why is None and body["kind"] == "study_map" and body["stat"] == "coverage"
    assert body["params"]["map"]["radius"] == 1
    assert set(body["inputs"]) == {f"{s}.{f}" for s in job.scan_ids
                                   for f in ("pkl_path", "numpy_path")}
    n_ids = 83 * 84 // 2 + 1
    top = body["top_centers"]
    assert len(top) == 10
    assert [t["value"] for t in top] == sorted((t["value"] for t in top), reverse=True)
    assert top[0]["value"] == np.nanmax(vol) == 6  # every scan covers the busiest centers
    from ltpa.demo.study import study_regions

    names = {r["id"]: r["name"] for r in study_regions()["scale33"]}
    iu = np.triu_indices(83)
    for t in top[:3]:
        counts = reference_counts(study, t["ijk"], 1, n_ids)
        assert t["value"] == vol[tuple(t["ijk"])] == (counts.sum(axis=1) > 0).sum()
        np.testing.assert_allclose(t["mm"], (img.affine @ [*t["ijk"], 1])[:3], atol=0.01)
        mean = counts[:, 1:].mean(axis=0)
        order = np.lexsort((np.arange(mean.size), -mean))[:3]
        want = [f"{names[iu[0][k] + 1]} -- {names[iu[1][k] + 1]}" for k in order]
        assert [d["name"] for d in t["drivers"]] == want
        np.testing.assert_allclose([d["mean_streamlines"] for d in t["drivers"]], mean[order],
                                   atol=1e-3)
    # the report's table: one row per top center, in rank order, the drivers named
    rows = top_table_rows(body)
    assert [r["rank"] for r in rows] == list(range(1, 11))
    assert rows[0]["connections"].startswith(top[0]["drivers"][0]["name"])
    assert [rows[0][k] for k in ("x_mm", "y_mm", "z_mm")] == top[0]["mm"]
    no_mm = {**body, "top_centers": [{**t, "mm": None} for t in body["top_centers"]]}
    assert top_table_rows(no_mm)[0]["x_mm"] == ""  # a map without an affine: no mm, no error
    # a fresh map is up to date; the verdict is the workflow's (ltpa.study.staleness)
    study_ = load_study(study, config)
    assert [v.status for v in map_verdicts([job], study_.specs.values())] == [OK]


def test_group_difference_map_with_permutations(study, tmp_path):
    """The planted pair's t at the top centers equals Welch's t of the counts computed
    here; p_fwe is written as an extra map and named in the sidecar and the table."""
    item = {"name": "gd", "atlas": ATLAS, "radius": 1, "stat": "group_difference",
            "connection": PLANTED, "groups": ["control", "patient"], "n_permutations": 50}
    job, _ = make(study, item)
    body, _ = sidecar.read(job.output)
    assert body["extra_map_files"] == {"p_fwe": "gd.p_fwe.nii.gz"}
    p = np.asarray(nib.load(os.path.join(os.path.dirname(job.output),
                                         "gd.p_fwe.nii.gz")).dataobj)
    vol = np.asarray(nib.load(job.output).dataobj)
    scans = json.loads(study.read_text())
    patient = np.array([s["scan_group"] == "patient" for s in scans])
    from ltpa.demo.study import study_pair_id

    cid = study_pair_id(PLANTED)
    for t in body["top_centers"][:3]:
        x = reference_counts(study, t["ijk"], 1, cid + 1)[:, cid].astype(float)
        a, b = x[~patient], x[patient]
        welch = (b.mean() - a.mean()) / np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
        assert t["value"] == pytest.approx(welch, rel=1e-5)
        assert t["value"] == pytest.approx(vol[tuple(t["ijk"])], rel=1e-6)
        assert t["p_fwe"] == pytest.approx(p[tuple(t["ijk"])])
        d = t["drivers"][0]
        assert d["name"] == " -- ".join(PLANTED) and d["connection_id"] == cid
        assert d["mean_by_group"] == {"control": pytest.approx(a.mean(), abs=1e-3),
                                      "patient": pytest.approx(b.mean(), abs=1e-3)}
    tsv = tmp_path / "top.tsv"
    write_top_table(job.output, tsv)
    header, first = tsv.read_text().splitlines()[:2]
    assert header.split("\t") == ["rank", "i", "j", "k", "x_mm", "y_mm", "z_mm", "value",
                                  "p_fwe", "connections"]
    assert "lh.superiorfrontal -- lh.precuneus (mean streamlines: control" in first


def test_stale_after_an_input_an_option_or_a_group_changes(study, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(study.parent, folder, symlinks=True)
    path = folder / study.name
    item = {"name": "sim", "atlas": ATLAS, "radius": 0, "stat": "similarity"}
    job, config = make(path, item)

    def verdict(cfg):
        s = load_study(path, cfg)
        return map_verdicts(map_jobs(s), s.specs.values())[0]

    assert verdict(config).status == OK
    # an option: radius 1 instead of 0
    v = verdict(config_with(path, {**item, "radius": 1}))
    assert v.status == OUT_OF_DATE and "radius" in v.reason
    # a scan's group (the pkl carries the metadata: it needs work, so the map too)
    scans = json.loads(path.read_text())
    scans[0]["scan_group"] = "patient" if scans[0]["scan_group"] == "control" else "control"
    path.write_text(json.dumps(scans))
    assert verdict(config).status == OUT_OF_DATE
    scans[0]["scan_group"] = json.loads(study.read_text())[0]["scan_group"]
    path.write_text(json.dumps(scans))
    assert verdict(config).status == OK
    # an npy rewritten (other content, same size)
    npy = folder / scans[1]["track_labels"][0]["numpy_path"]
    np.save(npy, np.load(npy)[::-1])
    v = verdict(config)
    assert v.status == OUT_OF_DATE and scans[1]["scan_id"] in v.reason


def test_bad_map_items_are_reported_together_before_any_job(study):
    items = [
        {"name": "a", "atlas": {"name": "Lausanne2008", "parameters": {"scale": 500}},
         "stat": "coverage"},
        {"name": "b", "atlas": ATLAS, "stat": "group_difference", "connection": PLANTED,
         "groups": ["control", "nobody"]},
        {"name": "c", "atlas": ATLAS, "stat": "coverage", "n_permutations": 10},
        {"name": "d", "atlas": ATLAS, "stat": "group_difference"},
    ]
    with pytest.raises(LtpaError) as err:
        map_jobs(load_study(study, config_with(study, *items)))
    text = str(err.value)
    assert "maps[0] ('a'): atlas name='Lausanne2008', scale=500: no track_labels entry" in text
    assert "group 'nobody' has 0 scans" in text and "control, patient" in text
    assert "maps[2] ('c'): n_permutations is an option of group_difference" in text
    assert "maps[3] ('d'): stat group_difference needs a connection" in text
    assert "needs groups" in text
    with pytest.raises(LtpaError, match=r"maps\[1\].name 'a': another map"):
        map_items(config_with(study, items[0], items[0]))
    with pytest.raises(LtpaError, match="radius"):
        config_with(study, {**items[2], "radius": 11})


def test_mosaic_figure(study, tmp_path):
    from ltpa.qc.report import map_mosaic_figure, mosaic_slices, plot_map

    item = {"name": "cov0", "atlas": ATLAS, "radius": 0, "stat": "coverage"}
    job, _ = make(study, item)
    out = tmp_path / "m.png"
    plot_map(job.output, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = nib.load(job.output)
    vol = np.asarray(img.dataobj, dtype=float)
    body, _ = sidecar.read(job.output)
    fig, info = map_mosaic_figure(vol, img.affine, body)
    has = np.flatnonzero(np.isfinite(vol).any(axis=(0, 1)))
    assert info["slices"] == mosaic_slices(vol).tolist()
    assert info["slices"][0] == has[0] and info["slices"][-1] == has[-1]
    assert info["limits"] == (np.nanmin(vol), np.nanmax(vol))
    marked = dict(info["marked"])
    for rank, t in enumerate(body["top_centers"], start=1):
        if t["ijk"][2] in info["slices"]:
            assert marked[rank] == tuple(t["ijk"])


@pytest.mark.slow
def test_workflow_builds_maps_and_rebuilds_only_stale_ones(study, tmp_path):
    """The workflow makes each configured map with its report figure and table; a second
    run makes nothing; changing one map's option rebuilds that map only."""
    import shutil

    import yaml

    folder = tmp_path / "wf"
    shutil.copytree(study.parent, folder, symlinks=True)
    path = folder / study.name
    maps = [{"name": "cov", "atlas": ATLAS, "radius": 1, "stat": "coverage"},
            {"name": "gd", "atlas": ATLAS, "radius": 1, "stat": "group_difference",
             "connection": PLANTED, "groups": ["control", "patient"], "n_permutations": 20}]
    cfg = tmp_path / "maps.yaml"
    cfg.write_text(yaml.safe_dump({"maps": maps}))
    run_snakemake(tmp_path / "work", "--configfile", str(cfg), local_data=path, qc=True)
    work = study_folder(path)
    for name in ("cov", "gd"):
        assert sidecar.read(work / "maps" / f"{name}.nii.gz")[0]["kind"] == "study_map"
        assert (work / "report" / "maps" / f"{name}.png").stat().st_size > 0
        assert (work / "report" / "maps" / f"{name}.top.tsv").read_text().startswith("rank")
    proc = run_snakemake(tmp_path / "work", "-n", "--configfile", str(cfg), local_data=path,
                         qc=True)
    assert "Nothing to be done" in proc.output
    maps[1]["n_permutations"] = 30
    cfg.write_text(yaml.safe_dump({"maps": maps}))
    proc = run_snakemake(tmp_path / "other", "-n", "--configfile", str(cfg), local_data=path,
                         qc=True)
    assert "map 'gd'" in proc.output and "is out of date" in proc.output
    jobs = [line.split()[1].rstrip(":") for line in proc.output.splitlines()
            if line.startswith(("rule ", "localrule "))]
    assert sorted(jobs) == ["all", "ltpa_map", "plot_map"], jobs


def test_similarity_top_centers_are_reached_by_half_the_scans(study):
    """A similarity of 1 from two scans' single streamlines is no top center: the table ranks
    only centers that at least half the scans reach (reference: the pkls)."""
    item = {"name": "sim1", "atlas": ATLAS, "radius": 1, "stat": "similarity"}
    job, _ = make(study, item)
    vol = np.asarray(nib.load(job.output).dataobj)
    body, _ = sidecar.read(job.output)
    top = body["top_centers"]
    assert len(top) == 10
    for t in top:
        counts = reference_counts(study, t["ijk"], 1, 83 * 84 // 2 + 1)
        assert (counts.sum(axis=1) > 0).sum() >= 3
        assert t["value"] == pytest.approx(vol[tuple(t["ijk"])])
    values = [t["value"] for t in top]
    assert values == sorted(values, reverse=True)
    assert np.nanmax(vol) >= values[0]


def test_ltpa_status_lists_the_maps_as_the_workflow_judges_them(study, tmp_path, capsys):
    """ltpa status: a configured map is missing, ok once built, out of date after one of
    its npys is rewritten (the exit status says whether anything needs work)."""
    import shutil

    import yaml

    from ltpa.cli import main

    folder = tmp_path / "copy"
    shutil.copytree(study.parent, folder, symlinks=True)
    path = folder / study.name
    # the module's study is shared: test_mosaic_figure may have built cov0 in it already
    shutil.rmtree(study_folder(path) / "maps", ignore_errors=True)
    item = {"name": "cov0", "atlas": ATLAS, "radius": 0, "stat": "coverage"}
    config = config_with(path, item)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"maps": config["maps"]}))
    out = str(study_folder(path) / "maps" / "cov0.nii.gz")

    def status():
        try:
            code = main(["status", str(path), "--configfile", str(cfg), "--tsv"])
        except SystemExit as ended:  # needs work
            code = ended.code
        rows = [ln.split("\t") for ln in capsys.readouterr().out.splitlines()[1:]]
        got = [r for r in rows if r[1] == "ltpa_map"]
        others = [r for r in rows if r[1] != "ltpa_map"]
        return code, got, others

    code, got, others = status()
    assert got == [["missing", "ltpa_map", "", out, got[0][4]]] and code == 1
    assert all(r[0] == "ok" for r in others)  # the maps alone need work
    make(path, item)
    code, got, _ = status()
    assert [r[:4] for r in got] == [["ok", "ltpa_map", "", out]] and code == 0
    scans = json.loads(path.read_text())
    npy = folder / scans[1]["track_labels"][0]["numpy_path"]
    np.save(npy, np.load(npy)[::-1])
    code, got, _ = status()
    assert got[0][0] == "out of date" and scans[1]["scan_id"] in got[0][4] and code == 1
