"""Endpoint labeling (dsi2's rule): one connection id per streamline.

For each point, label = atlas[native voxel] (background outside the atlas grid).
With fewer than two labeled points the id is 0; otherwise a, b are the first and
last nonzero labels along the streamline and the id is the position of
(min(a, b), max(a, b)) in the enumeration of ``np.triu_indices(R)`` (diagonal
included) over the sorted region list, plus ``start`` (1 by default; 0 as dsi2's
DSI2_CONN_START_AT_0).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import LtpaError
from .trk import Trk

log = logging.getLogger(__name__)


@dataclass
class Atlas:
    path: Path
    data: np.ndarray  # int64 labels, in the trk grid
    labels: np.ndarray  # sorted unique nonzero labels present


def load_atlas(path, expected_dim=None, context="") -> Atlas:
    """Load a label volume with nibabel and check it is a usable integer atlas."""
    import nibabel as nib

    path = Path(path)
    pre = f"{context}: " if context else ""
    if not path.exists():
        raise LtpaError(f"{pre}atlas file {str(path)!r} does not exist")
    try:
        img = nib.load(str(path))
        raw = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise LtpaError(f"{pre}atlas file {str(path)!r} could not be read as an image ({exc})") from exc
    if raw.ndim != 3:
        raise LtpaError(
            f"{pre}atlas file {str(path)!r} has {raw.ndim} dimensions {raw.shape}; "
            f"expected a 3-D label volume"
        )
    if expected_dim is not None and tuple(raw.shape) != tuple(expected_dim):
        raise LtpaError(
            f"{pre}atlas file {str(path)!r} has shape {tuple(raw.shape)} but the trk grid is "
            f"{tuple(int(d) for d in expected_dim)}; the atlas must share the trk's grid"
        )
    if raw.dtype.kind == "f":
        if not np.isfinite(raw).all():
            raise LtpaError(f"{pre}atlas file {str(path)!r} contains NaN or infinite values; "
                            f"expected integer labels")
        if not np.array_equal(raw, np.round(raw)):
            bad = raw[raw != np.round(raw)]
            raise LtpaError(
                f"{pre}atlas file {str(path)!r} has non-integral values (e.g. {float(bad[0]):g}); "
                f"expected integer labels"
            )
    elif raw.dtype.kind not in "iub":
        raise LtpaError(f"{pre}atlas file {str(path)!r} has data type {raw.dtype}; expected integer labels")
    data = np.asarray(raw, dtype=np.int64)
    if data.size and data.min() < 0:
        raise LtpaError(
            f"{pre}atlas file {str(path)!r} has negative labels (min {int(data.min())}); "
            f"expected 0 for background and positive region labels"
        )
    labels = np.unique(data)
    return Atlas(path, np.ascontiguousarray(data), labels[labels != 0])


def regions_from_graphml(path, context="") -> np.ndarray:
    """The graphml's node ids as ints, sorted (what networkx's read_graphml gives)."""

    path = Path(path)
    pre = f"{context}: " if context else ""
    if not path.exists():
        raise LtpaError(f"{pre}graphml file {str(path)!r} does not exist")
    nodes = _graphml_node_ids(path)
    if nodes is None:  # anything unusual: networkx decides
        import networkx as nx

        try:
            nodes = list(nx.read_graphml(str(path)).nodes)
        except Exception as exc:
            raise LtpaError(f"{pre}graphml file {str(path)!r} could not be read ({exc})") from exc
    ids = []
    for node in nodes:
        try:
            value = int(str(node).strip())
        except ValueError:
            raise LtpaError(
                f"{pre}graphml file {str(path)!r} has node id {node!r}; expected integer node "
                f"ids (the atlas labels)"
            ) from None
        ids.append(value)
    if not ids:
        raise LtpaError(f"{pre}graphml file {str(path)!r} has no nodes")
    regions = np.unique(np.asarray(ids, dtype=np.int64))
    if regions[0] <= 0:
        raise LtpaError(f"{pre}graphml file {str(path)!r} has node id {int(regions[0])}; "
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


@dataclass
class LabelResult:
    ids: np.ndarray  # int64 per streamline
    regions: np.ndarray
    start: int
    unknown_labels: np.ndarray  # atlas labels not in the region list (treated as background)
    n_points_outside: int
    stats: dict = field(default_factory=dict)


def pair_index(lo: np.ndarray, hi: np.ndarray, n_regions: int) -> np.ndarray:
    """Position of (lo, hi), lo <= hi, in the enumeration of np.triu_indices(n_regions)."""
    lo = lo.astype(np.int64)
    return lo * n_regions - (lo * (lo - 1)) // 2 + (hi.astype(np.int64) - lo)


@dataclass
class LabelingTables:
    regions: np.ndarray  # sorted region list
    unknown: np.ndarray  # atlas labels not in it
    rank: np.ndarray  # flat atlas: 0 = background, r + 1 = position of the label in regions
    vs: np.ndarray  # float64 voxel size
    adim: np.ndarray  # int64 atlas dims
    upper: np.ndarray  # float32 per-axis thresholds (kernels.upper_thresholds)


def labeling_tables(atlas: Atlas, regions, start: int, voxel_size) -> LabelingTables:
    """What the labeling kernels need: the rank volume, the grid thresholds, the region list."""
    from .kernels import upper_thresholds

    if start not in (0, 1):
        raise LtpaError(f"connection_ids_start_at must be 0 or 1, not {start!r}")
    regions = atlas.labels if regions is None else np.unique(np.asarray(regions, dtype=np.int64))
    n_regions = int(regions.shape[0])
    dim = tuple(int(d) for d in atlas.data.shape)
    max_label = int(max(atlas.data.max(initial=0), regions.max(initial=0)))
    lut = np.zeros(max_label + 1, dtype=np.int32)
    lut[regions] = np.arange(1, n_regions + 1, dtype=np.int32)
    unknown = atlas.labels[lut[atlas.labels] == 0]
    rank_flat = np.ascontiguousarray(lut[atlas.data].ravel())
    return LabelingTables(regions, unknown, rank_flat, np.asarray(voxel_size, dtype=np.float64),
                          np.asarray(dim, dtype=np.int64), upper_thresholds(dim, voxel_size))


def label_streamlines(trk: Trk, atlas: Atlas, regions=None, start: int = 1,
                      progress=None) -> LabelResult:
    """Connection id per streamline of ``trk`` from ``atlas`` (which shares the trk grid).

    One compiled pass over the mapped points (``ltpa.kernels.label_chunk``): every
    point is checked (finite, inside the atlas grid); the label is looked up from
    the front until the first nonzero one and from the back until the last, so no
    per-point arrays exist.
    """
    from .kernels import label_chunk

    tables = labeling_tables(atlas, regions, start, trk.voxel_size)
    regions, unknown, rank_flat = tables.regions, tables.unknown, tables.rank
    n_regions = int(regions.shape[0])
    vs, adim, upper = tables.vs, tables.adim, tables.upper

    n = trk.n_streamlines
    ids = np.zeros(n, dtype=np.int64)
    words = trk.native_words()
    n_outside = 0
    for s0, s1 in trk.ranges():
        n_out, bad = label_chunk(words, trk.starts, trk.counts, s0, s1, trk.stride, vs, adim,
                                 upper, rank_flat, np.int64(n_regions), np.int64(start), ids)
        if bad >= 0:
            raise LtpaError(
                f"file {str(trk.path)!r}: streamline {bad} has a NaN or infinite coordinate; "
                f"expected finite voxmm coordinates"
            )
        n_outside += n_out
        if progress:
            progress(s1, n)
    return LabelResult(ids, regions, start, unknown, int(n_outside))


def label_trk_body(body, atlas: Atlas, regions=None, start: int = 1,
                   progress=None) -> tuple[LabelResult, int]:
    """``label_streamlines`` for a native-order .trk opened with ``trk.open_trk_body``, in one pass.

    The records are walked and labeled in the same sweep over the body (``open_trk``
    plus ``label_streamlines`` read it twice); same ids, same errors. Returns the
    result and the number of streamlines.
    """
    from .trk import walk_and_label

    tables = labeling_tables(atlas, regions, start, body.voxel_size)
    n_regions = int(tables.regions.shape[0])
    ids, n_outside = walk_and_label(body, tables.vs, tables.adim, tables.upper, tables.rank,
                                    np.int64(n_regions), np.int64(start), progress=progress)
    return LabelResult(ids, tables.regions, start, tables.unknown, n_outside), int(ids.shape[0])
