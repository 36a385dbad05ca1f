"""The documentation cannot drift from the code: the site builds with --strict (no broken link
or anchor, every API page generated from the docstrings), and the examples the pages mark with
``<!-- test: NAME -->`` run: an example local_data.json validates in a demo study, the init
specs run ``ltpa init`` on generated trees, the entry shown is the one ``ltpa init`` writes,
the Python examples run against a built demo study, the config examples pass the config
schema, and every ``ltpa`` command line of the pages is read by ltpa's own argument parser.
The reference tables (init spec keys, local_data.json fields) list exactly the schemas' keys."""

import argparse
import contextlib
import importlib.util
import io
import json
import re
import shlex
import subprocess
import warnings

import nibabel as nib
import numpy as np
import pytest
import yaml

from bids_study import make_bids_tree, make_demo_source
from conftest import BIN, REPO, ltpa_main
from ltpa.study.init import init_study, merged_spec

PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
MARK = re.compile(r"<!-- test: ([\w-]+) -->\s*\n```(\w*)\n(.*?)\n```", re.S)
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def examples() -> dict:
    """{name: (page, language, text)} of every marked example."""
    found = {}
    for page in PAGES:
        for m in MARK.finditer(page.read_text()):
            assert m.group(1) not in found, f"example {m.group(1)} marked twice"
            found[m.group(1)] = (page, m.group(2), m.group(3))
    return found


def test_the_marked_examples_are_the_ones_run_here():
    assert set(examples()) == {"init-bids", "init-bids-entry", "init-dsistudio",
                               "local-data-demo", "readme-entry", "readme-query",
                               "reader-source", "reader-query", "reader-pkl", "ltpa-api",
                               "ltpa-patterns-config", "maps-config"}


def test_every_python_yaml_and_json_example_is_marked_and_so_run():
    marked = {(page, text) for page, _, text in examples().values()}
    unmarked = [f"{page.relative_to(REPO)}:{page.read_text()[:m.start()].count(chr(10)) + 1}"
                for page in PAGES for m in FENCE.finditer(page.read_text())
                if m.group(1) in ("python", "yaml", "json")
                and (page, m.group(2).rstrip("\n")) not in marked]
    assert not unmarked, f"code examples no test runs (mark them <!-- test: NAME -->): {unmarked}"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo_source(tmp_path_factory.mktemp("docs") / "demo").parent


# The pages' ``ltpa`` commands run here as ``ltpa.cli.main`` in process (``ltpa_main``: the same
# code, its exit status and what it wrote on fds 1 and 2); test_cli, test_init and test_reader
# run the real commands.


def test_example_local_data_validates_in_a_demo_study(demo, capfd):
    _, lang, text = examples()["local-data-demo"]
    assert lang == "json"
    path = demo / "example.json"
    path.write_text(text)
    proc = ltpa_main(capfd, "validate", path)
    assert proc.returncode == 0, proc.stderr
    assert "1 scans, 2 atlas labelings: valid" in proc.stdout


def test_bids_spec_runs_and_writes_the_entry_shown(tmp_path, demo, capfd):
    _, lang, text = examples()["init-bids"]
    assert lang == "yaml"
    root = make_bids_tree(tmp_path / "qsirecon", demo)
    spec = tmp_path / "init.yaml"
    spec.write_text(text)
    out = tmp_path / "study" / "local_data.json"
    proc = ltpa_main(capfd, "init", root, "--spec", spec, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert ltpa_main(capfd, "validate", out).returncode == 0
    first = json.loads(out.read_text())[0]
    for name in ("init-bids-entry", "readme-entry"):
        shown = json.loads(examples()[name][2].replace("/data/bids/derivatives/qsirecon",
                                                       str(root)))
        assert first == shown, name


def test_dsistudio_spec_runs_on_the_demo_layout(tmp_path, demo):
    _, lang, text = examples()["init-dsistudio"]
    spec = tmp_path / "dsistudio.yaml"
    spec.write_text(text)
    out = tmp_path / "study" / "local_data.json"
    result = init_study(demo, merged_spec(spec), out, allow_missing=True)
    records = json.loads((demo / "local_data.json").read_text())
    b0 = [r["scan_id"] for r in records if "fib_file" in r]
    assert result.left_out == [f"sub-{s}" for s in b0]  # b0 atlases: not mapped by init
    assert len(result.added) == len(records) - len(b0)


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None,
                    reason="mkdocs not installed (pip install -e '.[docs]')")
def test_site_builds_strict(tmp_path):
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    config["docs_dir"] = str(REPO / "docs")
    config["site_dir"] = str(tmp_path / "site")
    config["plugins"][1]["mkdocstrings"]["handlers"]["python"]["paths"] = [str(REPO / "src")]
    cfg = tmp_path / "mkdocs.yml"
    cfg.write_text(yaml.safe_dump(config))
    proc = subprocess.run([str(BIN / "mkdocs"), "build", "--strict", "-f", str(cfg)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "site" / "api" / "init" / "index.html").exists()


def test_the_spec_table_lists_every_key_of_the_init_schema_with_its_default():
    from ltpa.study.init import schema

    rows = {}
    for line in (REPO / "docs" / "start.md").read_text().splitlines():
        m = re.match(r"\|\s*`([a-z_]+)`\s*\|([^|]*)\|", line)
        if m:
            rows[m.group(1)] = m.group(2).strip()
    props = schema()["properties"]
    assert set(rows) == set(props), (f"documented, not in the schema: {set(rows) - set(props)}; "
                                     f"in the schema, not documented: {set(props) - set(rows)}")
    for key, prop in props.items():
        if "default" in prop:
            assert rows[key] == f"`{json.dumps(prop['default']).strip(chr(34))}`", key
        elif key in schema()["required"]:
            assert rows[key] == "required", key
        else:
            assert rows[key] == "none", key


# --------------------------------------------------------------- the local_data.json table


def local_data_table() -> dict:
    """docs/local_data.md's field table: {"scan" | "track_label" | "track_scalar": {field:
    row's second cell}} from its first column (``track_labels[].x`` rows are atlas fields;
    the ``{...}`` lists of the track_labels / track_scalars rows name their items' fields)."""
    text = (REPO / "docs" / "local_data.md").read_text().split("## Fields", 1)[1]
    table = text.split("\n\n## ", 1)[0]
    fields = {"scan": {}, "track_label": {}, "track_scalar": {}}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("`"):
            continue
        for name in re.findall(r"`([^`]+)`", cells[0]):
            if name.startswith("track_labels[]."):
                fields["track_label"][name.split(".", 1)[1]] = cells[0]
            else:
                fields["scan"][name] = cells[0] + " | " + cells[1]
        item = {"`track_labels`": "track_label", "`track_scalars`": "track_scalar"}.get(cells[0])
        if item:
            inner = re.match(r"list of `\{([^}]*)\}`", cells[1])
            assert inner, f"docs/local_data.md: the {cells[0]} row no longer lists its fields"
            for name in inner.group(1).split(","):
                fields[item][name.strip()] = cells[0]
    return fields


def test_the_local_data_table_lists_exactly_the_schemas_fields():
    schema = json.loads((REPO / "src" / "ltpa" / "schemas" / "local_data.schema.json")
                        .read_text())["$defs"]
    documented = local_data_table()
    for kind, fields in documented.items():
        props = schema[kind]["properties"]
        assert set(fields) == set(props), (
            f"{kind}: documented, not in local_data.schema.json: {set(fields) - set(props)}; "
            f"in the schema, not documented: {set(props) - set(fields)}")
    scan = schema["scan"]
    for name, row in documented["scan"].items():
        assert ("(required)" in row.split(" | ")[0]) == (name in scan["required"]), name
        if "default" in scan["properties"][name]:
            assert f"`{scan['properties'][name]['default']}` (default)" in row, name


# ------------------------------------------------------------------ Python examples, run


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    """``ltpa demo --small`` (the 3-scan cube demo the reader page quotes; ``ltpa.cli.main`` in
    process), every output made by the workflow's own job functions."""
    from ltpa import cli
    from ltpa.jobs.pipeline import run
    from ltpa.study.config import default_config
    from ltpa.study.study import load_study

    folder = tmp_path_factory.mktemp("small") / "demo"
    assert cli.main(["demo", str(folder), "--small"]) == 0
    path = folder / "local_data.json"
    config = default_config()
    for target in load_study(path, config, check_inputs_of_jobs=False).targets:
        run(target.spec(config))
    return path


def run_example(name, paths, cwd, monkeypatch):
    """Run the marked Python example ``name`` in ``cwd`` with each documented path replaced
    by a real one; its globals, what it printed and the warnings it raised."""
    page, lang, text = examples()[name]
    assert lang == "python", name
    for shown, real in paths.items():
        assert shown in text, f"{page.name} example {name}: {shown!r} is no longer in it"
        text = text.replace(shown, str(real))
    monkeypatch.chdir(cwd)
    scope, out = {"__name__": f"docs_{name.replace('-', '_')}"}, io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out):
        warnings.simplefilter("always")
        exec(compile(text, f"{page.relative_to(REPO)} ({name})", "exec"), scope)
    return scope, out.getvalue(), [str(w.message) for w in caught]


def slow_ids(study, voxels) -> dict:
    """scan_id -> sorted ids of the streamlines through ``voxels``, from the trk files read
    record by record and hashed with dsi2's loop (tests/reference.py)."""
    from ltpa.formats.grids import MNI_DIM
    from reference import hash_slow, read_trk_slow

    def qsdr_key(v):
        return (v[0] + 6, 101 - v[1], v[2] + 11)

    out = {}
    for scan in json.loads(study.read_text()):
        table = hash_slow(read_trk_slow(study.parent / scan["trk_file"]), (2.0, 2.0, 2.0),
                          qsdr_key, MNI_DIM)
        out[scan["scan_id"]] = sorted(set().union(*(table.get(v, set()) for v in voxels)))
    return out


def test_readme_query_example_runs_and_gives_the_slow_references_answer(
        small_demo, tmp_path, monkeypatch):
    scope, _, caught = run_example("readme-query", {"/data/study/local_data.json": small_demo},
                                   tmp_path, monkeypatch)
    assert not caught, caught  # every output is up to date
    expected = slow_ids(small_demo, [(44, 53, 25), (45, 53, 25)])
    assert {q.scan_id: list(q.ids) for q in scope["results"]} == expected
    assert all(expected.values()), "the example's voxels should hold streamlines in each scan"
    m = scope["m"]
    for s, scan_id in enumerate(("s1", "s2", "s3")):
        # each labeled streamline once in the upper triangle; the demo wrote the ids it drew
        drawn = np.load(small_demo.parent / "expected" / f"{scan_id}.scale33.npy")
        assert np.triu(m.counts[s]).sum() == np.count_nonzero(drawn), scan_id
    assert "Brain-Stem" in list(m.names)


def documented_query():
    """The reader page's ``ltpa query`` example: its argv and the rows it shows."""
    _, _, text = examples()["reader-query"]
    command, *rows = text.splitlines()
    assert command.startswith("$ ltpa ")
    return shlex.split(command[len("$ ltpa "):]), rows


def test_reader_query_command_prints_the_rows_shown(small_demo, capfd):
    argv, rows = documented_query()
    argv = [str(small_demo) if a == "demo/local_data.json" else a for a in argv]
    proc = ltpa_main(capfd, *argv)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == rows


def test_reader_source_example_runs_and_agrees_with_the_query_shown(
        small_demo, tmp_path, monkeypatch):
    scope, printed, caught = run_example("reader-source", {"demo/local_data.json": small_demo},
                                         tmp_path, monkeypatch)
    assert not caught, caught
    shown = [row.split("\t")[:3] for row in documented_query()[1][1:]]
    assert [line.split()[:3] for line in printed.splitlines()] == shown
    expected = slow_ids(small_demo, [(44, 53, 25), (45, 53, 25)])
    saved = nib.streamlines.load(str(tmp_path / "s01_roi.trk"))
    assert len(saved.streamlines) == len(expected["s1"]) == len(scope["results"][0])
    m = scope["m"]
    assert m.counts.shape[0] == 3 and list(m.groups) == ["control", "patient", "control"]


def test_reader_pkl_example_runs(small_demo, tmp_path, monkeypatch):
    pkl = small_demo.parent / "s1" / "s1.pkl"
    scope, _, _ = run_example("reader-pkl", {"demo/s01/s01.pkl": pkl}, tmp_path, monkeypatch)
    ds = scope["ds"]
    assert ds.scan_id == "s1"
    assert list(ds.tracks_at_ijk[(44, 53, 25)]) == slow_ids(small_demo, [(44, 53, 25)])["s1"]


def test_ltpa_api_example_runs_and_writes_its_map(small_demo, tmp_path, monkeypatch):
    from ltpa.formats.grids import MNI_DIM

    scope, _, caught = run_example("ltpa-api", {'"local_data.json"': f'"{small_demo}"'},
                                   tmp_path, monkeypatch)
    # the small demo's workflow built no pattern files: computed in memory, with a warning
    assert any("computed on the fly" in w for w in caught), caught
    pm = scope["pm"]
    assert pm.counts.shape[0] == 3 and pm.scan_ids == ["s1", "s2", "s3"]
    img = nib.load(tmp_path / "similarity.nii.gz")
    assert img.shape == tuple(MNI_DIM)
    values = np.asarray(img.dataobj)
    assert np.isfinite(values).any()


# ------------------------------------------------------------------- config examples


def demo_config() -> dict:
    return yaml.safe_load((REPO / "config" / "demo.yaml").read_text())


def test_ltpa_patterns_example_is_a_valid_config_and_the_demos():
    from ltpa.study.config import with_defaults

    _, lang, text = examples()["ltpa-patterns-config"]
    assert lang == "yaml"
    config = yaml.safe_load(text)
    assert with_defaults(config)["patterns"] == config["patterns"]
    # the page says config/demo.yaml is exactly this
    assert config["patterns"] == demo_config()["patterns"]


def test_maps_example_is_a_valid_config_whose_maps_a_demo_study_accepts(tmp_path):
    from ltpa.analysis.maps_workflow import study_map_jobs
    from ltpa.demo.study import make_study_demo
    from ltpa.study.config import with_defaults
    from ltpa.study.study import load_study

    _, lang, text = examples()["maps-config"]
    assert lang == "yaml"
    config = with_defaults(yaml.safe_load(text))
    # the page says config/demo.yaml lists exactly these and a similarity map
    demo = demo_config()
    assert config["patterns"] == demo["patterns"]
    assert [m for m in demo["maps"] if m["stat"] != "similarity"] == yaml.safe_load(text)["maps"]
    # and a demo study (4 scans, two groups) takes them: atlas, groups, options
    study = load_study(make_study_demo(tmp_path / "d", n_scans=4, n_streamlines=200), config,
                       check_inputs_of_jobs=False)
    assert sorted(j.name for j in study_map_jobs(study)) == ["coverage_r1", "planted_pair_r1"]


def test_a_config_example_with_a_misspelt_option_would_fail():
    from ltpa.errors import LtpaError
    from ltpa.study.config import with_defaults

    text = examples()["maps-config"][2].replace("n_permutations:", "permutations:")
    with pytest.raises(LtpaError, match="permutations"):
        with_defaults(yaml.safe_load(text))


# --------------------------------------------------------------- command lines, parsed

COMMAND = re.compile(r"^(?:\$ )?(?:cd \S+ && )?(?:\S*/)?ltpa (\S.*)$")
SPAN = re.compile(r"`((?:[^`\s]*/)?ltpa [^`]+)`")
SYNOPSIS = re.compile(r"[\[\]|()]|\.\.\.")
FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


def command_lines(text):
    """(line, kind) of every ``ltpa ...`` command of a page: ``fenced`` (a line of a shell
    block, continuation lines joined, comments cut) or ``inline`` (a code span of the prose).
    """
    found = []
    for m in FENCE.finditer(text):
        if m.group(1) not in ("", "sh", "bash", "console"):
            continue
        current = None
        for line in m.group(2).replace("\\\n", " ").splitlines():
            code = "" if line.lstrip().startswith("#") else line.split(" #", 1)[0].rstrip()
            start = COMMAND.match(code)
            if start:
                current = [start.group(1), "fenced"]
                found.append(current)
            elif current and line[:1].isspace() and code.strip():
                current[0] += " " + code.strip()
            elif not line[:1].isspace():
                current = None
    for span in SPAN.finditer(FENCE.sub("", text)):
        found.append([span.group(1).split("ltpa ", 1)[1], "inline"])
    return [tuple(f) for f in found]


def subcommands(parser):
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def command_problems(text):
    """What ltpa's parser says of each command line of ``text``: an unknown command or
    option; a complete command line (no ``[...]``, ``|``, ``...``) that does not parse."""
    from ltpa.cli import build_parser

    parser = build_parser()
    subs = subcommands(parser)
    problems = []
    for line, kind in command_lines(text):
        words = line.split()
        first = words[0]
        if first.startswith("-"):
            options, sub = parser._option_string_actions, None
        elif re.fullmatch(r"[a-z][a-z-]*", first):
            if first not in subs:
                problems.append(f"ltpa {line}: no command {first!r}")
                continue
            options, sub = subs[first]._option_string_actions, first
        else:
            continue  # a placeholder (ltpa <command> --help) or a message (ltpa error: ...)
        unknown = [f for f in FLAG.findall(" ".join(words[1:] if sub else words))
                   if f.split("=")[0] not in options]
        problems += [f"ltpa {line}: {sub or 'ltpa'} has no option {f}" for f in unknown]
        if kind == "fenced" and not SYNOPSIS.search(line) and not unknown:
            err = io.StringIO()
            try:
                with contextlib.redirect_stderr(err):
                    parser.parse_args(shlex.split(line))
            except SystemExit:
                problems.append(f"ltpa {line}: {err.getvalue().strip().splitlines()[-1]}")
    return problems


def test_every_ltpa_command_line_of_the_pages_is_one_ltpas_parser_reads():
    problems, parsed = [], set()
    for page in PAGES:
        text = page.read_text()
        problems += [f"{page.relative_to(REPO)}: {p}" for p in command_problems(text)]
        parsed |= {line.split()[0] for line, kind in command_lines(text)
                   if kind == "fenced" and not SYNOPSIS.search(line)}
    assert not problems, "\n".join(problems)
    # the complete command lines parsed cover the commands a newcomer types first
    assert {"init", "status", "query", "map", "validate"} <= parsed, parsed


@pytest.mark.parametrize("text, expected", [
    ("```\nltpa init ROOT --specs init.yaml -o out.json\n```\n", "init has no option --specs"),
    ("```\n$ ltpa query s.json --ijk 1,2,3 --atlas A --top\n```\n",
     "argument --top: expected one argument"),
    ("```\nltpa map S.json --atlas NAME [--perms N] -o OUT\n```\n", "has no option --perms"),
    ("see `ltpa status --tvs`\n", "status has no option --tvs"),
    ("```\n.venv/bin/ltpa mapp s.json\n```\n", "no command 'mapp'"),
    ("```\nltpa map s.json --atlas A --stat coverage \\\n    --radius x -o o.nii.gz\n```\n",
     "invalid int value"),
])
def test_a_wrong_command_line_in_a_page_is_caught(text, expected):
    problems = command_problems(text)
    assert len(problems) == 1 and expected in problems[0], problems
