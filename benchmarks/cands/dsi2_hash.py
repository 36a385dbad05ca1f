"""The dsi2 (2013) voxel->streamline hash: per streamline ijk = floor(voxmm/voxel_size),
then per point ``tracks_at_ijk[tuple(ijk)].update({sid})`` in a defaultdict(set).
Streamline ids are 0-based positions in the file.  Loads with a 2013-style Python loop
(voxmm, like nibabel.trackvis.read).  Optionally pickles the dict (as dsi2 did).
Usage: dsi2_hash.py TRK [OUT.pkl]
"""
import pickle
import sys
from collections import defaultdict

import numpy as np
from _common import Phases, read_trk_voxmm

ph = Phases()
tracks, hdr = read_trk_voxmm(sys.argv[1])
vox = hdr["voxel_sizes"].astype(np.float32)
ph.mark("load")
ijk_tracks = [np.floor(trk / vox).astype(np.int32) for trk in tracks]
ph.mark("floor")
tracks_at_ijk = defaultdict(set)
for trknum, ijk in enumerate(ijk_tracks):
    data = {trknum}
    for _ijk in ijk:
        tracks_at_ijk[tuple(_ijk)].update(data)
ph.mark("hash")
if len(sys.argv) > 2:
    # plain-int keys so the pickle does not depend on numpy scalar pickling
    out = {tuple(int(c) for c in k): v for k, v in tracks_at_ijk.items()}
    with open(sys.argv[2], "wb") as f:
        pickle.dump(out, f, protocol=pickle.HIGHEST_PROTOCOL)
    ph.mark("write")
ph.done(n=len(tracks), voxels=len(tracks_at_ijk))
