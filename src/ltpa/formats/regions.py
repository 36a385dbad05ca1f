"""Region lists: from a graphml, from a label table (TSV/CSV, a BIDS ``*_dseg.tsv`` or an
MRtrix/FreeSurfer LUT), each with its region names."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from ..errors import InputError, LtpaError

log = logging.getLogger("ltpa")

MAX_LABEL = 2**63 - 1
NAME_ATTRIBUTES = ("dn_name", "name", "label", "dn_fsname")  # dn_*: the Connectome Mapper's


def regions_from_table(path) -> np.ndarray:
    """Sorted positive region indices from a label table.

    Accepted: TSV/CSV with ``index,name`` columns (a header row is skipped), a BIDS
    ``*_dseg.tsv`` (tab-separated, a header row naming an ``index`` and a ``name`` column, in
    any order), and MRtrix / FreeSurfer colour LUTs (``index name R G B A``). Lines starting
    with ``#`` are comments; index 0 (Unknown / background) is left out. A UTF-8 byte order
    mark (Excel's "CSV UTF-8") is not content.

    Parameters
    ----------
    path : str or os.PathLike
        The label table.

    Returns
    -------
    numpy.ndarray
        int64 region indices, unique and sorted ascending, all positive.

    Raises
    ------
    InputError
        If the file does not exist; a line's index (after an optional header row within
        the first five lines) is not an integer, is negative, is larger than 2^63 - 1 or is
        spelled with too many digits; or the table lists no positive index.
    """
    return _read_table(path)[0]


def table_names(path) -> dict:
    """{region id: name} of a label table read as :func:`regions_from_table` reads it: the
    ``name`` column of a table with a header, else the second column (a LUT's name).

    Parameters
    ----------
    path : str or os.PathLike
        The label table.

    Returns
    -------
    dict
        int region id -> str name, for the positive ids that have a non-empty name (the
        first one when an id is listed twice); a header without a ``name`` column gives {}.

    Raises
    ------
    InputError
        If the file does not exist; a line's index (after an optional header row within
        the first five lines) is not an integer, is negative, is larger than 2^63 - 1 or is
        spelled with too many digits; or the table lists no positive index.
    """
    return _read_table(path)[1]


def _cells(text: str) -> list:
    """A table line's cells: tab-separated (TSV, BIDS), else comma-separated (CSV), else
    separated by white space (MRtrix / FreeSurfer LUTs)."""
    if "\t" in text:
        return [c.strip().strip('"') for c in text.split("\t")]
    if "," in text:
        return [c.strip().strip('"') for c in text.split(",")]
    return text.split()


def _read_table(path):
    path = Path(path)
    if not path.exists():
        raise InputError(f"label table {str(path)!r} does not exist")
    ids, names = [], {}
    index_col, name_col = 0, 1
    with open(path, encoding="utf-8-sig", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            first = re.split(r"[,\t ]+", text, maxsplit=1)[0].strip().strip('"')
            where = f"label table {str(path)!r} line {lineno}"
            cells = None
            if index_col:
                cells = _cells(text)
                first = cells[index_col] if index_col < len(cells) else ""
            value = _index(first, where, "label index")
            if value is None:
                if not ids and lineno <= 5:
                    # a header row ("index,name"); BIDS dseg.tsv columns come in any order
                    header = [c.lower() for c in _cells(text)]
                    if "index" in header:
                        index_col = header.index("index")
                        name_col = header.index("name") if "name" in header else None
                    continue
                raise InputError(f"{where}: {'column index' if index_col else 'first column'} "
                                 f"{_short(first)} is not an integer region index")
            if value < 0:
                raise InputError(f"{where}: negative index {_short(value)}")
            if value > MAX_LABEL:
                raise InputError(f"{where}: index {_short(value)} is larger than 2^63 - 1")
            if value:
                ids.append(value)
                cells = cells if cells is not None else _cells(text)
                if name_col is not None and name_col < len(cells) and cells[name_col]:
                    names.setdefault(value, cells[name_col])
    if not ids:
        raise InputError(f"label table {str(path)!r} lists no region indices")
    return np.unique(np.asarray(ids, dtype=np.int64)), names


_DECIMAL = re.compile(r"[+-]?[0-9]+")


def _index(text: str, where: str, what: str):
    """The integer ``text`` spells, or None if it is not an integer. An index spelled with
    more digits than Python's int() reads (4300) is an error, not "not an integer": it is a
    number, larger than any label."""
    try:
        return int(text)
    except ValueError:
        core = text.strip()
        if _DECIMAL.fullmatch(core):
            raise InputError(f"{where}: {what} too long ({len(core.lstrip('+-'))} digits); "
                            f"expected a region index from 1 to 2^63 - 1") from None
        return None


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:40] + f"... ({len(str(value))} characters)"


def regions_from_graphml(path) -> np.ndarray:
    """The graphml's node ids as ints, sorted: networkx's ``read_graphml`` nodes.

    networkx decides what the nodes are (also the ones that only edges name, and not the
    nodes of nested graphs), so a graphml means the same here as in any tool built on it.

    Parameters
    ----------
    path : str or os.PathLike
        The graphml file.

    Returns
    -------
    numpy.ndarray
        int64 node ids, unique and sorted ascending, all positive.

    Raises
    ------
    InputError
        If the file does not exist or networkx cannot read it; a node id is not an integer,
        is not positive or is larger than 2^63 - 1; or the graph has no nodes.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"graphml file {str(path)!r} does not exist")
    nodes, exc = _graphml_nodes(path)
    if exc is not None:
        text = f"{type(exc).__name__}: {exc}" if isinstance(exc, (KeyError, LookupError)) \
            else str(exc)
        raise InputError(f"graphml file {str(path)!r} could not be read ({text[:300]}); "
                        f"expected a GraphML file whose node ids are the atlas labels") from None
    where = f"graphml file {str(path)!r}"
    ids = []
    for node in nodes:
        value = _index(str(node), where, "node id")
        if value is None:
            # networkx names a node 'None' for a <node> without id or an <edge> without
            # source or target
            hint = " (a node without id, or an edge without source or target)" \
                if str(node) == "None" else ""
            raise InputError(f"{where} has node id {_short(node)}{hint}; expected integer node "
                            f"ids (the atlas labels)")
        if value <= 0:
            raise InputError(f"{where} has node id {_short(value)}; region ids must be positive "
                            f"(0 is background)")
        if value > MAX_LABEL:
            raise InputError(f"{where} has node id {_short(value)}, larger than 2^63 - 1; "
                            f"expected region labels that fit a 64-bit integer")
        ids.append(value)
    if not ids:
        raise InputError(f"graphml file {str(path)!r} has no nodes")
    return np.unique(np.asarray(ids, dtype=np.int64))


def _graphml_nodes(path, data=False):
    """(networkx's ``read_graphml`` nodes, None), with their attributes when ``data``; or
    (None, the exception) for a file networkx cannot read: broken XML, an unknown
    encoding, undeclared keys, data of the wrong type, ..."""
    import xml.etree.ElementTree as ET

    import networkx as nx

    try:
        return list(nx.read_graphml(str(path)).nodes(data=data)), None
    except (nx.NetworkXError, ET.ParseError, OSError, KeyError, ValueError, LookupError,
            TypeError, IndexError, AttributeError, RecursionError) as exc:
        return None, exc


def is_graphml(path) -> bool:
    """Whether a region list is a graphml (by its name), rather than a label table.

    Parameters
    ----------
    path : str or os.PathLike
        The region list's path.

    Returns
    -------
    bool
        True when the name ends in ".graphml", ".graphml.xml" or ".xml" (any case).
    """
    return str(path).lower().endswith((".graphml", ".graphml.xml", ".xml"))


def region_names(path, kind: str | None = None) -> dict:
    """{region id: name} from any region list: a graphml's node attribute (the first of
    ``NAME_ATTRIBUTES`` that some node has), or a label table's names (:func:`table_names`);
    {} when it names none or cannot be read (plots and tables then show ids).

    ``kind`` is ``"graphml"`` or ``"table"`` (the field that named the list: ``graphml_path``
    or ``labels_path``); None: a graphml if the name says so (:func:`is_graphml`).

    Never raises for an unreadable list: it logs a warning (logger ``ltpa``) and returns {}.

    Parameters
    ----------
    path : str or os.PathLike
        The region list (graphml or label table).
    kind : {"graphml", "table"}, optional
        How to read it; any value other than "graphml" reads a table. None: by the name.

    Returns
    -------
    dict
        int region id -> str name; {} when the list names no region or cannot be read.
    """
    if kind is None:
        kind = "graphml" if is_graphml(path) else "table"
    if kind != "graphml":
        try:
            return table_names(path)
        except LtpaError as exc:
            log.warning("%s: region names not read (%s); region ids are shown instead", path, exc)
            return {}
    nodes, exc = _graphml_nodes(path, data=True)
    if exc is not None:
        log.warning("%s: region names not read (%s); region ids are shown instead", path, exc)
        return {}
    for attr in NAME_ATTRIBUTES:
        names = {}
        for node, data in nodes:
            name = str(data.get(attr, "")).strip()
            try:
                if name:
                    names[int(str(node).strip())] = name
            except ValueError:
                pass
        if names:
            return names
    return {}
