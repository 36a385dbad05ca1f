"""ltpa.study.targets: atlas keys from file names, and the regexes of the rules' ``{path}``
wildcard."""

import re
from pathlib import Path

import pytest

from ltpa.study.localdata import LabelRecord, ScanRecord
from ltpa.study.targets import (
    RULE_EXPORT,
    RULE_INDEX,
    RULE_LABEL,
    RULE_MAP_B0,
    atlas_key_of,
    build_targets,
    by_output,
    check_templates,
    exact_paths_regex,
    ids_alternation,
    path_templates,
)


@pytest.mark.parametrize("path, scan_id, known, key", [
    ("/d/s1/scale33.npy", "s1", None, "scale33"),  # the scan's folder names the scan
    ("/d/s1_scale33.npy", "s1", None, "scale33"),  # after the scan id
    ("/d/s1-scale33.npy", "s1", None, "scale33"),
    ("/d/s1.scale33.npy", "s1", None, "scale33"),
    ("/d/scale33_s1.npy", "s1", None, "scale33"),  # before it, when nothing follows
    ("/d/scale33__s1.npy", "s1", None, "scale33"),  # every separator dropped
    ("/d/s1.npy", "s1", None, "s1"),  # the file is named by the scan only: its stem
    ("/d/s1/s1_lausanne_scale60.npy", "s1", None, "lausanne_scale60"),
    ("/d/s1_a/s1_a_x.npy", "s1_a", None, "x"),  # the last occurrence of the scan id
    ("/s1/x/s1.s1.npy", "s1", None, "s1"),  # stem after the last s1 is empty: before it
    ("/d/s1/atlas.txt", "s1", None, "atlas.txt"),  # not .npy: the whole name is the stem
    # a b0-mapped atlas takes its labeling's key where its file name holds it ...
    ("/d/s1/s1.scale33.QSDR.nii.gz", "s1", "scale33", "scale33"),
    # ... else the same rule as any other output
    ("/d/s1/qsdr_atlas.nii.gz", "s1", "scale33", "qsdr_atlas.nii.gz"),
    ("/d/s1_atlas.nii.gz", "s1", "scale33", "atlas.nii.gz"),
])
def test_atlas_key_of(path, scan_id, known, key):
    assert atlas_key_of(path, scan_id, known) == key


def test_atlas_key_of_only_looks_at_the_file_name():
    # a known key in a folder name does not count
    assert atlas_key_of("/scale33/s1/s1_other.npy", "s1", "scale33") == "other"


@pytest.mark.parametrize("values", [["a", "ab", "abc"], ["x.y", "x+y", "x"], ["a", ""], ["s"]])
def test_ids_alternation_matches_exactly_its_values(values):
    rx = re.compile(f"(?:{ids_alternation(values)})$")
    for v in values:
        assert rx.match(v), v
    for other in ("b", "xy", "x_y", "abcd", "ab.", "a b", "."):
        if other not in values:
            assert not rx.match(other), other
    if "" not in values:
        assert not rx.match("")


def test_ids_alternation_of_nothing_matches_nothing():
    rx = re.compile(f"(?:{ids_alternation([])})$")
    assert not rx.match("") and not rx.match("a")


def test_exact_paths_regex():
    paths = ["/d/s1/a.npy", "/d/s1/ab.npy", "/d/s10/a.npy", "/d/s1/a.npy.json"]
    rx = re.compile(f"(?:{exact_paths_regex(paths)})$")
    for p in paths:
        assert rx.match(p), p
    for p in ["/d/s1/a", "/d/s1/b.npy", "/d/s2/a.npy", "/d/s1/a.npyx", "/d/s1/ab.npy.json"]:
        assert not rx.match(p), p
    assert not re.compile(f"(?:{exact_paths_regex([])})$").match("")
    # one character per trie level: the regex grows with the paths' length, not their count
    assert len(exact_paths_regex([f"/d/s{i:04d}/a.npy" for i in range(1000)])) < 30_000


def _scan(index, scan_id, root, atlases=("scale33", "scale60"), b0=False):
    folder = root / scan_id
    labels = []
    for pos, name in enumerate(atlases):
        labels.append(LabelRecord(
            pos, name, None, folder / f"{scan_id}.{name}.npy", folder / f"{name}.nii.gz",
            folder / f"{name}.graphml",
            b0_volume_path=(folder / f"{name}.b0.nii.gz") if b0 else None))
    return ScanRecord(index, scan_id, "g", "qsdr", folder / f"{scan_id}.trk",
                      folder / f"{scan_id}.pkl", folder / f"{scan_id}.pkl.trk", labels,
                      fib_file=(folder / f"{scan_id}.fib.gz") if b0 else None)


def test_targets_keys_and_by_output():
    root = Path("/data/study")
    scans = [_scan(i, f"sub-{i:02d}", root, b0=i == 1) for i in range(3)]
    targets = build_targets(scans)
    rules = [t.rule for t in targets]
    assert rules.count(RULE_INDEX) == rules.count(RULE_EXPORT) == 3
    assert rules.count(RULE_LABEL) == 6 and rules.count(RULE_MAP_B0) == 2
    assert {t.atlas_key for t in targets if t.rule == RULE_LABEL} == {"scale33", "scale60"}
    # the b0-mapped atlas's file name (scale33.nii.gz) holds its labeling's key
    assert sorted(t.atlas_key for t in targets if t.rule == RULE_MAP_B0) == ["scale33", "scale60"]
    assert all(t.atlas_key is None for t in targets if t.rule in (RULE_INDEX, RULE_EXPORT))
    table = by_output(targets)
    assert len(table) == len(targets)
    for t in targets:
        assert table[(t.rule, str(t.output))] is t


def test_path_templates_match_their_rules_outputs_only():
    root = Path("/data/study")
    targets = build_targets([_scan(i, f"sub-{i:02d}", root, b0=True) for i in range(50)])
    produced = {str(t.output): t.rule for t in targets}
    constraints = {r: path_templates(targets, r)
                   for r in (RULE_INDEX, RULE_EXPORT, RULE_LABEL, RULE_MAP_B0)}
    # a study laid out by scan: a template or two per rule, whatever the number of scans
    assert all(c.count("|") <= 2 for c in constraints.values()), constraints
    compiled = {r: re.compile(f"(?:{c})$") for r, c in constraints.items()}
    for path, rule in produced.items():
        assert [r for r, rx in compiled.items() if rx.match(path)] == [rule], path
    # no template matches another file the workflow asks about
    others = {str(p) for t in targets for p in t.inputs.values() if p is not None}
    assert check_templates(constraints, produced, others - set(produced)) == []
    assert path_templates(targets, "average_track_scalars") == "(?!)"


def test_check_templates_names_a_rule_whose_template_matches_another_file():
    root = Path("/data/study")
    targets = build_targets([_scan(i, f"sub-{i:02d}", root) for i in range(3)])
    produced = {str(t.output): t.rule for t in targets}
    constraints = {r: path_templates(targets, r) for r in (RULE_INDEX, RULE_LABEL)}
    # the scan id in the template is any name: a pkl of a scan the JSON does not list
    # matches the index rule's template, and the workflow must then use exact paths
    assert check_templates(constraints, produced, ["/data/study/other/other.pkl"]) == [RULE_INDEX]
    assert check_templates(constraints, produced, ["/data/study/sub-00/notes.txt"]) == []
    exact = re.compile(
        f"(?:{exact_paths_regex([p for p, r in produced.items() if r == RULE_INDEX])})$")
    assert not exact.match("/data/study/other/other.pkl")
