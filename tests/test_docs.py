"""The documentation cannot drift from the code: the site builds with --strict (no broken link
or anchor, every API page generated from the docstrings), and the examples the pages mark with
``<!-- test: NAME -->`` run: an example local_data.json validates in a demo study, the init
specs run ``ltpa init`` on generated trees, the entry shown is the one ``ltpa init`` writes."""

import importlib.util
import json
import re
import subprocess

import pytest
import yaml

from bids_study import make_bids_tree, make_demo_source
from conftest import BIN, REPO
from ltpa.study.init import init_study, merged_spec

PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
MARK = re.compile(r"<!-- test: ([\w-]+) -->\s*\n```(\w*)\n(.*?)\n```", re.S)


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
                               "local-data-demo", "readme-entry"}


def ltpa(*args):
    return subprocess.run([str(BIN / "ltpa"), *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo_source(tmp_path_factory.mktemp("docs") / "demo").parent


def test_example_local_data_validates_in_a_demo_study(demo):
    _, lang, text = examples()["local-data-demo"]
    assert lang == "json"
    path = demo / "example.json"
    path.write_text(text)
    proc = ltpa("validate", path)
    assert proc.returncode == 0, proc.stderr
    assert "1 scans, 2 atlas labelings: valid" in proc.stdout


def test_bids_spec_runs_and_writes_the_entry_shown(tmp_path, demo):
    _, lang, text = examples()["init-bids"]
    assert lang == "yaml"
    root = make_bids_tree(tmp_path / "qsirecon", demo)
    spec = tmp_path / "init.yaml"
    spec.write_text(text)
    out = tmp_path / "study" / "local_data.json"
    proc = ltpa("init", root, "--spec", spec, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert ltpa("validate", out).returncode == 0
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
    assert set(props) <= set(rows), set(props) - set(rows)
    for key, prop in props.items():
        if "default" in prop:
            assert rows[key] == f"`{json.dumps(prop['default']).strip(chr(34))}`", key
        elif key in schema()["required"]:
            assert rows[key] == "required", key
        else:
            assert rows[key] == "none", key
