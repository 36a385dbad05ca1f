"""dsi2's per-streamline labeling loop.  labels = atlas[floor(voxmm/2)] along the
streamline; nz = flatnonzero(labels); if len(nz) > 1: a, b = labels[nz[0]], labels[nz[-1]]
and the connection id is 1 + the position of (index(min), index(max)) in
np.triu_indices(R) over the sorted list of the R regions present in the atlas; else 0.
Usage: dsi2_label.py TRK ATLAS.nii.gz OUT.npy
"""
import sys

import numpy as np
from _common import Phases, read_trk_voxmm

ph = Phases()
import nibabel as nib  # noqa: E402  (after Phases(): timed in the first phase)

tracks, hdr = read_trk_voxmm(sys.argv[1])
vox = hdr["voxel_sizes"].astype(np.float32)
atlas = np.asarray(nib.load(sys.argv[2]).dataobj).astype(np.int64)
ph.mark("load")
regions = np.unique(atlas[atlas > 0])
R = len(regions)
rows, cols = np.triu_indices(R)
conn_id = {(int(r), int(c)): i + 1 for i, (r, c) in enumerate(zip(rows, cols))}
region_index = {int(r): i for i, r in enumerate(regions)}
out = np.zeros(len(tracks), dtype=np.int64)
for sid, trk in enumerate(tracks):
    ijk = np.floor(trk / vox).astype(np.int64)
    labels = atlas[ijk[:, 0], ijk[:, 1], ijk[:, 2]]
    nz = np.flatnonzero(labels)
    if len(nz) > 1:
        a, b = int(labels[nz[0]]), int(labels[nz[-1]])
        lo, hi = (a, b) if a <= b else (b, a)
        out[sid] = conn_id[(region_index[lo], region_index[hi])]
ph.mark("label")
np.save(sys.argv[3], out)
ph.mark("write")
ph.done(n=len(out), labeled=int((out > 0).sum()), regions=R)
