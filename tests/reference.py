"""Slow, obviously-correct references for the fast kernels (dsi2's loops, struct reads)."""

import struct

import numpy as np


def read_trk_slow(path):
    """Every streamline's points, read record by record with struct (little-endian only)."""
    with open(path, "rb") as fh:
        data = fh.read()
    n_scalars = struct.unpack_from("<h", data, 36)[0]
    n_props = struct.unpack_from("<h", data, 238)[0]
    pos = 1000
    out = []
    while pos < len(data):
        (n,) = struct.unpack_from("<i", data, pos)
        pos += 4
        pts = []
        for _ in range(n):
            row = struct.unpack_from(f"<{3 + n_scalars}f", data, pos)
            pos += 4 * (3 + n_scalars)
            pts.append(row[:3])
        pos += 4 * n_props
        out.append(np.array(pts, dtype=np.float32).reshape(-1, 3))
    return out


def native_voxel(point, voxel_size):
    return tuple(int(np.floor(float(point[a]) / float(voxel_size[a]))) for a in range(3))


def hash_slow(streamlines, voxel_size, to_key, key_dim):
    """dsi2's dict-of-sets hashing; to_key maps a native voxel tuple to a key tuple."""
    table = {}
    for sid, sl in enumerate(streamlines):
        for p in sl:
            key = to_key(native_voxel(p, voxel_size))
            if all(0 <= key[a] < key_dim[a] for a in range(3)):
                table.setdefault(key, set()).add(sid)
    return {k: sorted(v) for k, v in table.items()}


def region_pair_dict(regions, start=1):
    """dsi2's region_pair_dict_from_roi_list."""
    roi = np.array(sorted(regions))
    return {
        (int(roi[i]), int(roi[j])): num + start
        for num, (i, j) in enumerate(np.array(np.triu_indices(len(roi))).T)
    }


def end_regions(streamlines, atlas, voxel_size, regions):
    """Per streamline, (a, b): its first and last nonzero labels in ``regions`` (out-of-grid
    points and labels not in the list are background), or None with fewer than two."""
    regions = set(int(r) for r in regions)
    for sl in streamlines:
        labels = []
        for p in sl:
            v = native_voxel(p, voxel_size)
            if all(0 <= v[a] < atlas.shape[a] for a in range(3)):
                lab = int(atlas[v])
                labels.append(lab if lab in regions else 0)
            else:
                labels.append(0)
        nz = [lab for lab in labels if lab != 0]
        yield (nz[0], nz[-1]) if len(nz) >= 2 else None


def label_slow(streamlines, atlas, voxel_size, regions, start=1):
    """dsi2's connection_ids_from_tracks, with out-of-grid points as background."""
    pairs = region_pair_dict(regions, start)
    out = np.zeros(len(streamlines), dtype=np.int64)
    for sid, ends in enumerate(end_regions(streamlines, atlas, voxel_size, regions)):
        if ends is not None:
            a, b = ends
            out[sid] = pairs[(min(a, b), max(a, b))]
    return out
