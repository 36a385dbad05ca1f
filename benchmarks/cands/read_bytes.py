"""Floor: read the whole file into memory (one read() into a bytes object)."""
import sys

from _common import Phases

ph = Phases()
with open(sys.argv[1], "rb") as f:
    b = f.read()
ph.mark("read")
ph.done(bytes=len(b))
