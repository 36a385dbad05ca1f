"""dipy.tracking.utils.connectivity_matrix (end points only, symmetric) with the atlas.
Figure includes nibabel load of trk + atlas.
Usage: dipy_connectivity.py TRK ATLAS.nii.gz
"""
import sys

import numpy as np
from _common import Phases, skip

ph = Phases()
try:
    from dipy.tracking.utils import connectivity_matrix
except Exception as e:  # pragma: no cover
    skip(f"dipy not importable ({type(e).__name__}: {e})")
# after Phases(): the imports are the timed "import" phase
import dipy  # noqa: E402
import nibabel as nib  # noqa: E402

ph.mark("import")
t = nib.streamlines.load(sys.argv[1])
img = nib.load(sys.argv[2])
atlas = np.asarray(img.dataobj).astype(np.int32)
ph.mark("load")
M = connectivity_matrix(t.streamlines, img.affine, atlas)
ph.mark("matrix")
ph.done(matrix=list(M.shape), total=int(np.triu(M).sum()), dipy=dipy.__version__)
