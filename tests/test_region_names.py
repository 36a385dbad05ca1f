"""Region names from every kind of region list (graphml, label table / LUT, BIDS dseg.tsv) reach
the QC group-difference table, the report's axes, ``connection_matrices().names`` and
``ltpa query`` alike. Each kind gets names of its own, so a name shown proves which file it
was read from."""

import json

import numpy as np
import pytest

from conftest import ltpa_main
from ltpa.analysis.reader import TrackDataSource
from ltpa.formats.regions import regions_from_graphml
from ltpa.jobs.pipeline import index_scan, label_scan
from ltpa.qc.groupdiff import group_differences
from ltpa.qc.report import connectivity_figure

KINDS = ("graphml", "lut", "dseg")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The 4-scan cube demo with its pkls, and per kind of region list a local_data.json
    whose scale33 labeling reads that list, its npys made, and the names that list gives."""
    from ltpa.demo.small import make_demo

    root = tmp_path_factory.mktemp("names")
    local_data = make_demo(root / "study", n_scans=4, seed=2)
    folder = local_data.parent
    records = json.loads(local_data.read_text())
    graphml = folder / records[0]["track_labels"][0]["graphml_path"]
    ids = regions_from_graphml(graphml).tolist()
    from ltpa.formats.regions import region_names

    lists = {
        "graphml": (graphml, "graphml_path", region_names(graphml, "graphml")),
        "lut": (folder / "atlases" / "scale33_LUT.txt", "labels_path",
                {i: f"lut-{i}" for i in ids}),
        "dseg": (folder / "atlases" / "atlas-scale33_dseg.tsv", "labels_path",
                 {i: f"Dseg Region {i}" for i in ids}),  # names with spaces (TSV)
    }
    lists["lut"][0].write_text("#No. Label Name: R G B A\n0 Unknown 0 0 0 0\n" + "".join(
        f"{i} lut-{i} 10 20 30 0\n" for i in ids))
    lists["dseg"][0].write_text("index\tname\tabbreviation\n" + "".join(
        f"{i}\tDseg Region {i}\tR{i}\n" for i in ids))
    for rec in records:
        index_scan(str(folder / rec["trk_file"]), str(folder / rec["pkl_path"]), space="qsdr",
                   scan_id=rec["scan_id"])
    out = {}
    for kind, (path, fld, names) in lists.items():
        entries = json.loads(json.dumps(records))
        items = []
        for rec in entries:
            lab = rec["track_labels"][0]
            lab.pop("graphml_path")
            lab[fld] = str(path)
            lab["numpy_path"] = f"{kind}/{rec['scan_id']}_scale33.npy"
            rec["track_labels"] = [lab]
            label_scan(str(folder / rec["trk_file"]), str(folder / lab["volume_path"]),
                       str(folder / lab["numpy_path"]), scan_id=rec["scan_id"],
                       **{fld: str(path)})
            items.append((rec["scan_id"], rec["scan_group"], str(folder / lab["numpy_path"])))
        json_path = folder / f"local_data_{kind}.json"
        json_path.write_text(json.dumps(entries, indent=1))
        out[kind] = {"json": json_path, "items": items, "names": names}
    assert out["graphml"]["names"][1] == "region_1"  # the demo graphml's own names
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_group_difference_table_names_the_regions(study, kind):
    s = study[kind]
    result = group_differences(s["items"], min_mean_count=1)
    assert result["rows"], "the demo has pairs to compare"
    for row in result["rows"]:
        assert row["name_a"] == s["names"][int(row["region_a"])]
        assert row["name_b"] == s["names"][int(row["region_b"])]


@pytest.mark.parametrize("kind", KINDS)
def test_report_axes_are_named_from_the_region_list(study, kind):
    import matplotlib.pyplot as plt

    s = study[kind]
    fig, info = connectivity_figure("scale33", s["items"], s["items"][0][0])
    plt.close(fig)
    shown = [lab for lab in info["labels"] if lab]
    assert shown and all(lab in s["names"].values() for lab in shown)
    assert info["names"] == {r: s["names"][r] for r in info["regions"].tolist()}


@pytest.mark.parametrize("kind", KINDS)
def test_reader_names_and_ltpa_query(study, kind, capfd):
    s = study[kind]
    with pytest.warns(UserWarning):  # the npys were not made by the workflow's config
        source = TrackDataSource(s["json"])
    source.change_atlas("Lausanne2008", scale=33)
    m = source.connection_matrices()
    assert list(m.names) == [s["names"][int(r)] for r in m.regions]
    assert source.region_names() == {int(r): s["names"][int(r)] for r in m.regions}
    ds = source.dataset(0)
    voxel = next(iter(ds.tracks_at_ijk))
    # ltpa query in process (test_reader runs the real command)
    proc = ltpa_main(capfd, "query", s["json"], "--ijk", ",".join(map(str, voxel)), "--atlas",
                     "Lausanne2008", "--param", "scale=33")
    assert proc.returncode == 0, proc.stderr
    tops = [line.split("\t")[4] for line in proc.stdout.splitlines()[1:]]
    pairs = [p.rsplit(":", 1)[0] for t in tops for p in t.split("; ") if p]
    assert pairs, proc.stdout
    for pair in pairs:
        a, b = pair.split(" -- ")
        assert a in s["names"].values() and b in s["names"].values(), pair
    assert np.all(m.counts >= 0)


@pytest.mark.parametrize("kind", KINDS)
def test_qc_tables_name_the_regions_never_reached(study, kind, tmp_path):
    from ltpa.demo.small import expected_id
    from ltpa.qc.tables import read_tsv, write_scan_qc, write_summary

    s = study[kind]
    ids = sorted(s["names"])
    pair_of = {expected_id(a, b, len(ids)): (a, b) for a in ids for b in ids}
    folder = s["json"].parent
    tsvs = []
    for scan_id, group, npy in s["items"]:
        out = tmp_path / f"{scan_id}.tsv"
        write_scan_qc(scan_id, out, tmp_path / f"{scan_id}.lengths.tsv",
                      atlases=[("scale33", npy)])
        tsvs.append(out)
        row, = read_tsv(out)
        # the regions the demo drew this scan's streamlines between: independent of ltpa's
        drawn = np.load(folder / "expected" / f"{scan_id}.scale33.npy")
        reached = {r for i in drawn[drawn > 0] for r in pair_of[int(i)]}
        never = [r for r in ids if r not in reached]
        assert 0 < len(never) < len(ids)
        assert row["regions_never_reached"] == ",".join(map(str, never))
        assert row["regions_never_reached_names"].split("; ") == [s["names"][r] for r in never]
    scans = [{"scan_id": scan_id, "scan_group": group} for scan_id, group, _ in s["items"]]
    summary = write_summary(tsvs, tmp_path / "summary.tsv", scans)
    assert [r["regions_never_reached_names"] for r in read_tsv(tmp_path / "summary.tsv")] == \
        [r["regions_never_reached_names"] for r in summary] != [""] * len(summary)


def test_qc_table_shows_the_id_of_a_region_its_list_does_not_name(tmp_path):
    from ltpa.qc.tables import never_reached_names

    dseg = tmp_path / "atlas-x_dseg.tsv"
    dseg.write_text("name\tindex\nleft, front\t2\nback\t7\n")
    side = {"inputs": {"labels_path": {"path": str(dseg)}}}
    assert never_reached_names([2, 5, 7], side, tmp_path / "x.npy") == "left, front; 5; back"
    assert never_reached_names([2], {"inputs": {}}, tmp_path / "x.npy") is None
