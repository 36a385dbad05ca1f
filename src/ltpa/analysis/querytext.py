"""Text in and out of ``ltpa query``: its ``--param`` and ``--ijk`` values, its TSV."""

from __future__ import annotations

import json

import numpy as np

from ..errors import InputError


def parse_param(text: str):
    """``name=value`` of ``ltpa query --param``: the value as JSON if it is one (33), else text.

    Parameters
    ----------
    text : str
        The option's value, ``NAME=VALUE``; it is split at the first ``=``.

    Returns
    -------
    name : str
        The text before the first ``=``, stripped of spaces.
    value : int, float, bool, str or None
        The text after it parsed as JSON when it is a JSON number, string, ``true``,
        ``false`` or ``null``; otherwise (not JSON, or a JSON object or array) the text as
        it is.

    Raises
    ------
    InputError
        If the text has no ``=`` or the name before it is empty.
    """
    if "=" not in text:
        raise InputError(f"--param {text!r}: expected NAME=VALUE, e.g. scale=33")
    key, value = text.split("=", 1)
    key = key.strip()
    if not key:
        raise InputError(f"--param {text!r}: the name is empty")
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    if isinstance(parsed, (dict, list)):
        parsed = value
    return key, parsed


def parse_mm(text: str) -> tuple:
    """A point of ``ltpa query --mm``: ``X,Y,Z`` in RAS mm (spaces ignored).

    Parameters
    ----------
    text : str
        The option's value.

    Returns
    -------
    tuple of float
        (x, y, z).

    Raises
    ------
    InputError
        If the text is not three finite numbers separated by commas.
    """
    parts = text.replace(" ", "").split(",")
    try:
        if len(parts) != 3:
            raise ValueError
        out = tuple(float(p) for p in parts)
        if not all(np.isfinite(out)):
            raise ValueError
        return out
    except ValueError:
        raise InputError(f"--mm {text!r}: expected three numbers X,Y,Z (RAS mm)") from None


def parse_ijk(text: str) -> tuple:
    """A voxel of ``ltpa query --ijk``: ``I,J,K`` of the key grid (spaces ignored).

    The values are not checked against a grid here (the query does that per scan).

    Parameters
    ----------
    text : str
        The option's value.

    Returns
    -------
    tuple of int
        (i, j, k).

    Raises
    ------
    InputError
        If the text is not three integers separated by commas.
    """
    parts = text.replace(" ", "").split(",")
    try:
        if len(parts) != 3:
            raise ValueError
        return tuple(int(p) for p in parts)
    except ValueError:
        raise InputError(f"--ijk {text!r}: expected three integers I,J,K") from None


def query_table(source, results, top=5) -> str:
    """The TSV of ``ltpa query``: one row per scan.

    Columns ``scan_id``, ``scan_group``, ``n_streamlines`` (the selected streamlines); when
    ``source`` has an atlas selected, also ``n_labeled`` (those whose connection id decodes
    to a region pair) and ``top_connections`` (``"<region a> -- <region b>: <count>"`` of
    the ``top`` pairs with the most streamlines, ties by connection id, joined by ``"; "``).

    Parameters
    ----------
    source : ltpa.analysis.reader.TrackDataSource
        The study queried; its selected atlas (if any) decodes and names the connections.
    results : ltpa.analysis.results.QueryResults
        The query's result of every scan, in the source's scan order (a result's position
        is the scan whose connection ids decode it).
    top : int, optional
        How many connections ``top_connections`` names per scan (default 5; below 0: none).

    Returns
    -------
    str
        The header line, then one line per result, tab-separated, without a final newline.

    Raises
    ------
    LtpaError
        With an atlas selected: if a result's query ran before any atlas was selected
        (``ScanQuery.connections``), or a scan's connection ids cannot be read or decoded.
    """
    atlas = source.atlas is not None
    header = ["scan_id", "scan_group", "n_streamlines"]
    if atlas:
        header += ["n_labeled", "top_connections"]
        names = source.region_names()
    lines = ["\t".join(header)]
    for pos, q in enumerate(results):
        row = [q.scan_id, str(q.scan_group), str(len(q))]
        if atlas:
            conn = q.connections
            ids, counts = np.unique(conn, return_counts=True)
            a, b = source.decode(ids, pos)
            keep = a >= 0
            ids, counts, a, b = ids[keep], counts[keep], a[keep], b[keep]
            order = np.lexsort((ids, -counts))[:max(int(top), 0)]
            row.append(str(int(counts.sum())))
            row.append("; ".join(
                f"{names.get(int(a[k]), a[k])} -- {names.get(int(b[k]), b[k])}: {int(counts[k])}"
                for k in order))
        lines.append("\t".join(row))
    return "\n".join(lines)
