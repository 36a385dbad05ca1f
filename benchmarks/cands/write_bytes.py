"""Floor for writing outputs: write N bytes (32 MB blocks from one buffer) to a new file
in DIR, fsync it (as ltpa's atomic writes do), then delete it.

    python write_bytes.py N DIR
"""
import os
import sys

from _common import Phases

ph = Phases()
n, folder = int(sys.argv[1]), sys.argv[2]
path = os.path.join(folder, ".write_bytes.tmp")
block = bytearray(32 << 20)
view = memoryview(block)
with open(path, "wb", buffering=0) as fh:
    left = n
    while left:
        k = fh.write(view[:min(left, len(block))])
        left -= k
    ph.mark("write")
    os.fsync(fh.fileno())
    ph.mark("fsync")
os.remove(path)
ph.done(bytes=n)
