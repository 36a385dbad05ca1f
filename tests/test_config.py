"""The config schema is the one place the defaults live; docs/config.md states each of them."""

import json
import re

import pytest
import yaml

from conftest import REPO
from ltpa.errors import LtpaError
from ltpa.study.config import SCHEMA_PATH, default_config, read_config, schema, with_defaults


def readme_rows():
    """option -> (type, default) cells of docs/config.md's table."""
    rows = {}
    text = (REPO / "docs" / "config.md").read_text().split("## Fields of a map", 1)[0]
    for line in text.splitlines():
        m = re.match(r"\|\s*`([a-z_0-9]+)`\s*\|([^|]*)\|([^|]*)\|", line)
        if m:
            rows[m.group(1)] = (m.group(2).strip(), m.group(3).strip())
    return rows


def as_yaml(value) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def test_readme_documents_every_option_with_the_schemas_default():
    props = schema()["properties"]
    rows = readme_rows()
    assert set(rows) == set(props), "docs/config.md's table and the schema list other options"
    for key, prop in props.items():
        default_cell = rows[key][1]
        if "default" in prop:
            assert default_cell == f"`{as_yaml(prop['default'])}`", (key, default_cell)
        else:
            assert key in schema()["required"], f"{key}: no default, so it must be required"
            assert default_cell.startswith("required"), (key, default_cell)


def test_every_null_default_says_what_it_computes():
    """A null default is computed from the study: the schema says where."""
    for key, prop in schema()["properties"].items():
        if prop.get("default", 0) is None:
            assert "null:" in prop["description"] and "ltpa." in prop["description"], key


def test_config_yaml_sets_only_what_a_user_sets():
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert set(config) == {"local_data"}


def test_default_config_is_the_checkouts_config_with_the_schemas_defaults():
    config = default_config()
    props = schema()["properties"]
    assert config["local_data"] == "demo/local_data.json"
    assert {k: config[k] for k in props if "default" in props[k]} == {
        k: p["default"] for k, p in props.items() if "default" in p}


@pytest.mark.parametrize("given, where", [
    ({"patterns": {"radii": [1.0]}}, "patterns.radii.0: 1.0"),
    ({"scans_per_job": 20.0}, "scans_per_job: 20.0"),
    ({"scans_per_job": True}, "scans_per_job: True"),
])
def test_an_integer_option_written_as_a_float_or_bool_is_refused_by_name(given, where):
    """JSON Schema counts 1.0 as an integer; a radius or count must be an int (the jobs take
    ints only): the config check refuses it, naming the option."""
    with pytest.raises(LtpaError, match=re.escape(where) + " is not of type 'integer'"):
        with_defaults(given)
    assert with_defaults({"patterns": {"radii": [1]}, "scans_per_job": 20})["scans_per_job"] == 20


def test_with_defaults_keeps_given_values_and_names_invalid_ones(tmp_path):
    config = with_defaults({"connection_ids_start_at": 0, "report_scan": "s2"})
    assert config["connection_ids_start_at"] == 0 and config["report_scan"] == "s2"
    assert config["scans_per_job"] == schema()["properties"]["scans_per_job"]["default"]
    given = {"qc": False}
    with_defaults(given)
    assert given == {"qc": False}  # a copy: the caller's dict is left alone
    with pytest.raises(LtpaError) as err:
        with_defaults({"connection_ids_start_at": 2, "scans_per_jobs": 3})
    text = str(err.value)
    assert "connection_ids_start_at" in text and "scans_per_jobs" in text
    bad = tmp_path / "c.yaml"
    bad.write_text("max_unmatched_labels: 2\n")
    with pytest.raises(LtpaError, match=r"(?s)c\.yaml.*max_unmatched_labels"):
        read_config(bad)


def test_schema_ships_with_the_package():
    assert SCHEMA_PATH.is_file() and SCHEMA_PATH.parent.name == "schemas"
    assert SCHEMA_PATH.parent.parent.name == "ltpa"
    assert not (REPO / "workflow" / "schemas").exists()


FALLBACK = re.compile(r"config\.get\(")


@pytest.mark.parametrize("path", sorted(
    [p.relative_to(REPO) for p in (REPO / "workflow").rglob("*.smk")]
    + [p.relative_to(REPO) for p in (REPO / "workflow").glob("Snakefile")]
    + [p.relative_to(REPO) for p in (REPO / "src" / "ltpa").rglob("*.py")]), ids=str)
def test_no_default_outside_the_schema(path):
    """No `config.get(key, default)` (nor `or default`) in the workflow or the package: a config
    is always filled from the schema first (ltpa.study.config, snakemake.utils.validate)."""
    text = (REPO / path).read_text()
    assert not FALLBACK.search(text), f"{path}: config.get(...) (defaults live in the schema)"


def map_field_rows():
    """field -> (type, default) cells of docs/config.md's table of map fields."""
    text = (REPO / "docs" / "config.md").read_text()
    part = text.split("## Fields of a map", 1)[1]
    rows = {}
    for line in part.splitlines():
        m = re.match(r"\|\s*`([a-z_0-9]+)`\s*\|([^|]*)\|([^|]*)\|", line)
        if m:
            rows[m.group(1)] = (m.group(2).strip(), m.group(3).strip())
    return rows


def test_readme_documents_every_map_field_with_the_schemas_default():
    items = schema()["properties"]["maps"]["items"]
    rows = map_field_rows()
    assert set(rows) == set(items["properties"])
    for key, prop in items["properties"].items():
        if "default" in prop:
            assert rows[key][1] == f"`{as_yaml(prop['default'])}`", (key, rows[key])
        else:
            assert key in items["required"] and rows[key][1] == "required", key


def test_demo_config_lists_valid_maps():
    """config/demo.yaml (make demo's --configfile) is valid: patterns and maps."""
    demo = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    assert set(demo) == {"patterns", "maps"}
    config = with_defaults(demo)
    assert [m["stat"] for m in config["maps"]] == ["coverage", "similarity", "group_difference"]
