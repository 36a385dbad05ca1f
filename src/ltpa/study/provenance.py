"""What a run was made with: resolved config, software versions, the study JSON's checksum."""

from __future__ import annotations

import hashlib
import logging
import platform
import sys
from importlib import metadata
from pathlib import Path

import yaml

from .. import __version__
from ..io import atomic_open

log = logging.getLogger("ltpa")

PACKAGES = ("ltpa-prep", "snakemake", "numpy", "nibabel", "networkx", "jsonschema", "scipy",
            "matplotlib")


def sha256_of(path) -> str:
    """The sha256 of a file's content, read in 1 MB blocks.

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    str
        The hex digest (64 characters).

    Raises
    ------
    OSError
        If the file cannot be opened or read.
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def versions() -> dict:
    """The versions of ltpa, Python and the packages in ``PACKAGES`` that are installed.

    Returns
    -------
    dict
        Name -> version string: "ltpa", "python", then each installed package of
        ``PACKAGES`` (one that is not installed is left out).
    """
    out = {"ltpa": __version__, "python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def write_provenance(out_config, out_provenance, *, config: dict, local_data,
                     snakemake_version=None) -> dict:
    """Write the resolved config (YAML) and versions + the JSON's sha256 (YAML).

    Both files are written atomically (their folders made), keys in insertion order.

    Parameters
    ----------
    out_config : str or os.PathLike
        The YAML file for the resolved config.
    out_provenance : str or os.PathLike
        The YAML file for the provenance record.
    config : dict
        The resolved config (with defaults), written as it is.
    local_data : str or os.PathLike
        The study's local_data.json, whose content is hashed.
    snakemake_version : str, optional
        The running Snakemake's version; when given it replaces the installed one found
        by ``versions``.

    Returns
    -------
    dict
        The provenance record written: "local_data" (absolute path), "local_data_sha256"
        (hex), "versions" (``versions``), "python_executable" and "platform".

    Raises
    ------
    OSError
        If the local_data file cannot be read or an output cannot be written.
    """
    local_data = Path(local_data).resolve()
    body = {
        "local_data": str(local_data),
        "local_data_sha256": sha256_of(local_data),
        "versions": versions(),
        "python_executable": sys.executable,
        "platform": platform.platform(),
    }
    if snakemake_version:
        body["versions"]["snakemake"] = snakemake_version
    for path, content in ((out_config, dict(config)), (out_provenance, body)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, "w") as fh:
            yaml.safe_dump(content, fh, sort_keys=False, default_flow_style=False)
    log.info("wrote %s and %s (local_data sha256 %s)", out_config, out_provenance,
             body["local_data_sha256"])
    return body
