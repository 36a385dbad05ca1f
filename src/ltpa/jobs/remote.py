"""What a cluster job makes, told to its Snakemake by the executor (no command-line parsing).

A SLURM job of the workflow runs a Snakemake of its own on a batch of jobs. For a batch of
data jobs only (pkl, npy, ...), that Snakemake needs only those outputs' scans, not the
study's thousands: the executor ``ltpa-slurm`` puts the outputs in the job's environment
(``ENV``, through the executor plugin interface's ``get_job_exec_prefix``), and the workflow
reads them back (``outputs_from_environment``). A job that also runs a study-level job (the
QC summary and plots) or whose Snakemake was started otherwise gets no such list and reads
the whole study. Standard library only: the executor plugin is imported by every Snakemake.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import zlib

ENV = "LTPA_REMOTE_OUTPUTS"


def encode(outputs) -> str:
    """``outputs`` (paths) as one shell-safe word: zlib-compressed JSON, URL-safe base64.

    Parameters
    ----------
    outputs : iterable of str
        The output paths.

    Returns
    -------
    str
        Letters, digits, ``-``, ``_`` and ``=`` only (no quoting needed anywhere).
    """
    raw = json.dumps(sorted({str(p) for p in outputs}), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode("ascii")


def decode(text: str) -> set[str]:
    """The outputs that ``encode`` wrote.

    Parameters
    ----------
    text : str
        ``encode``'s word.

    Returns
    -------
    set of str

    Raises
    ------
    ValueError
        If ``text`` is not such a word (not base64, not zlib, not a JSON list of strings).
    """
    try:
        value = json.loads(zlib.decompress(base64.urlsafe_b64decode(text.encode("ascii"))))
    except (ValueError, UnicodeEncodeError, zlib.error) as exc:
        raise ValueError(f"{ENV} is not a list of outputs ({exc})") from None
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise ValueError(f"{ENV} is not a list of outputs")
    return set(value)


def export_command(outputs) -> str:
    """The shell command that puts ``outputs`` in the environment of what follows it.

    Parameters
    ----------
    outputs : iterable of str
        The output paths.

    Returns
    -------
    str
        ``export LTPA_REMOTE_OUTPUTS=<word>``.
    """
    return f"export {ENV}={shlex.quote(encode(outputs))}"


def outputs_from_environment(environ=None) -> set[str] | None:
    """The outputs this cluster job makes, or None when the executor named none.

    Parameters
    ----------
    environ : mapping, optional
        The environment (default ``os.environ``).

    Returns
    -------
    set of str or None

    Raises
    ------
    ValueError
        If the variable is set but is not ``encode``'s word.
    """
    text = (os.environ if environ is None else environ).get(ENV)
    return None if not text else decode(text)
