"""The workflow's configuration: its schema, the one place where the defaults live.

``schemas/config.schema.yaml`` describes every option with its default (docs/config.md
documents them, and a test checks that it states each one). The Snakefile validates its
config against that file (``snakemake.utils.validate``, which fills in the defaults), and
``ltpa status``, ``ltpa query`` and ``TrackDataSource`` read a config through
``with_defaults`` / ``read_config`` / ``default_config``, which do the same: the workflow and
the commands see the same values.

A default of ``null`` means "computed from the study", in one place each: ``data_root``
(the JSON's folder, ``ltpa.study.localdata.read_records``), ``results_dir`` (``<json stem>.ltpa``,
``ltpa.study.study.study_work_dir``), ``log_dir`` and ``report_scan`` (``ltpa.study.study.Study``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from ..errors import LtpaError

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"
# the workflow's own config file, in a checkout (the Snakefile's `configfile:`)
CHECKOUT_CONFIG = Path(__file__).resolve().parents[3] / "config" / "config.yaml"


@lru_cache(maxsize=1)
def schema() -> dict:
    """The workflow config's JSON Schema, read once from ``schemas/config.schema.yaml``.

    Returns
    -------
    dict
        The parsed schema: every option under ``properties``, with its default. Cached: each
        call returns the same dict, so callers must not change it.
    """
    import yaml

    with open(SCHEMA_PATH) as fh:
        return yaml.safe_load(fh)


def default(key: str):
    """The schema's default of option ``key``.

    Parameters
    ----------
    key : str
        An option of the config schema (e.g. "connection_ids_start_at").

    Returns
    -------
    object
        Its default as the schema gives it (None for a default computed from the study).

    Raises
    ------
    KeyError
        If the schema has no such option, or the option has no default.
    """
    return schema()["properties"][key]["default"]


def with_defaults(config: dict | None) -> dict:
    """A copy of ``config`` with every option it leaves out set to the schema's default.

    LtpaError naming every invalid option. ``local_data`` may be left out: the package's
    functions are given the study itself (the Snakefile's validation requires it).

    Parameters
    ----------
    config : dict or None
        The options given (None: none); not changed.

    Returns
    -------
    dict
        A shallow copy with the schema's default for every option left out.

    Raises
    ------
    LtpaError
        If an option is invalid under the schema: one message listing every invalid option
        and why.
    """
    import jsonschema

    out = dict(config or {})
    for key, prop in schema()["properties"].items():
        if "default" in prop:
            out.setdefault(key, prop["default"])
    # an "integer" is an int here: JSON Schema counts 1.0 as one, but a radius or a count
    # written 1.0 would reach code that takes ints only (a clear error now, not in a job)
    strict = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, v: isinstance(v, int) and not isinstance(v, bool))
    cls = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=strict)
    validator = cls({**schema(), "required": []})
    errors = sorted(validator.iter_errors(out), key=lambda e: list(e.path))
    if errors:
        lines = [f"{'.'.join(map(str, e.path)) or 'config'}: {e.message}" for e in errors]
        raise LtpaError("invalid config (options: docs/config.md):\n  " + "\n  ".join(lines))
    return out


def read_config(path) -> dict:
    """The config in the YAML file ``path``, with the schema's defaults.

    Parameters
    ----------
    path : str or os.PathLike
        The YAML config file; an empty file is an empty config.

    Returns
    -------
    dict
        The options of the file, with the schema's default for every option left out.

    Raises
    ------
    LtpaError
        If the file cannot be read, is not valid YAML, is not a mapping of options, or has
        an invalid option; the message names the file.
    """
    import yaml

    try:
        with open(path) as fh:
            config = yaml.safe_load(fh) or {}
    except OSError as exc:
        raise LtpaError(f"config file {str(path)!r} could not be read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise LtpaError(f"config file {str(path)!r} is not valid YAML ({exc})") from None
    if not isinstance(config, dict):
        raise LtpaError(f"config file {str(path)!r}: expected a mapping of options")
    try:
        return with_defaults(config)
    except LtpaError as exc:
        raise exc.in_context(f"config file {str(path)!r}") from None


def default_config() -> dict:
    """The config of a workflow run without ``--configfile``: this checkout's
    config/config.yaml (when the package runs from a checkout) with the schema's defaults.

    Returns
    -------
    dict
        The checkout's config with defaults (``read_config``), or the schema's defaults
        alone when there is no checkout config.

    Raises
    ------
    LtpaError
        If the checkout's config file cannot be read or is invalid.
    """
    return read_config(CHECKOUT_CONFIG) if CHECKOUT_CONFIG.exists() else with_defaults({})
