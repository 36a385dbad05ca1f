"""Region lists: from a graphml, from a label table (TSV/CSV or an MRtrix/FreeSurfer LUT)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .errors import LtpaError

MAX_LABEL = 2**63 - 1


def regions_from_table(path) -> np.ndarray:
    """Sorted positive region indices from a label table.

    Accepted: TSV/CSV with ``index,name`` columns (a header row is skipped), and
    MRtrix / FreeSurfer colour LUTs (``index name R G B A``). Lines starting with
    ``#`` are comments; index 0 (Unknown / background) is left out.
    """
    path = Path(path)
    if not path.exists():
        raise LtpaError(f"label table {str(path)!r} does not exist")
    ids = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            first = re.split(r"[,\t ]+", text, maxsplit=1)[0].strip().strip('"')
            try:
                value = int(first)
            except ValueError:
                if not ids and lineno <= 5:
                    continue  # a header row ("index,name")
                raise LtpaError(f"label table {str(path)!r} line {lineno}: first column "
                                f"{first!r} is not an integer region index") from None
            if value < 0:
                raise LtpaError(f"label table {str(path)!r} line {lineno}: negative index {value}")
            if value > MAX_LABEL:
                raise LtpaError(f"label table {str(path)!r} line {lineno}: index {value} is "
                                f"larger than 2^63 - 1")
            if value:
                ids.append(value)
    if not ids:
        raise LtpaError(f"label table {str(path)!r} lists no region indices")
    return np.unique(np.asarray(ids, dtype=np.int64))


def regions_from_graphml(path) -> np.ndarray:
    """The graphml's node ids as ints, sorted (what networkx's read_graphml gives)."""

    path = Path(path)
    if not path.exists():
        raise LtpaError(f"graphml file {str(path)!r} does not exist")
    nodes = _graphml_node_ids(path)
    if nodes is None:  # anything unusual: networkx decides
        import networkx as nx

        try:
            nodes = list(nx.read_graphml(str(path)).nodes)
        except Exception as exc:
            raise LtpaError(f"graphml file {str(path)!r} could not be read ({exc})") from exc
    ids = []
    for node in nodes:
        try:
            value = int(str(node).strip())
        except ValueError:
            raise LtpaError(
                f"graphml file {str(path)!r} has node id {node!r}; expected integer node "
                f"ids (the atlas labels)"
            ) from None
        if value > MAX_LABEL:
            raise LtpaError(f"graphml file {str(path)!r} has node id {value}, larger than "
                            f"2^63 - 1; expected region labels that fit a 64-bit integer")
        ids.append(value)
    if not ids:
        raise LtpaError(f"graphml file {str(path)!r} has no nodes")
    regions = np.unique(np.asarray(ids, dtype=np.int64))
    if regions[0] <= 0:
        raise LtpaError(f"graphml file {str(path)!r} has node id {int(regions[0])}; "
                        f"region ids must be positive (0 is background)")
    return regions


_GRAPHML_NS = "{http://graphml.graphdrawing.org/xmlns}"


def _graphml_node_ids(path):
    """Node ids of a plain GraphML file's first graph, in file order, with the stdlib parser.

    Importing networkx and building the graph costs ~0.15 s of a labeling job that
    needs only the ids. Returns None (the caller then uses networkx, which also
    reports errors) unless the file is the plain case: a ``graphml`` root in the
    GraphML namespace whose first ``graph`` has ``node`` children with ids and no
    nested graphs or hyperedges.
    """
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(str(path)).getroot()
    except (ET.ParseError, OSError, ValueError):
        return None
    if root.tag != _GRAPHML_NS + "graphml":
        return None
    graph = root.find(_GRAPHML_NS + "graph")
    if graph is None or root.find(f".//{_GRAPHML_NS}hyperedge") is not None:
        return None
    if graph.find(f".//{_GRAPHML_NS}node/{_GRAPHML_NS}graph") is not None:
        return None
    ids = []
    for node in graph.iter(_GRAPHML_NS + "node"):
        nid = node.get("id")
        if nid is None:
            return None
        ids.append(nid)
    return ids


