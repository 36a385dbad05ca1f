""".trk.gz: decompressed as is into a temporary .trk (the stored voxmm values are kept exactly).

The one module that decompresses streamline files. The output is bounded before it is
written: by the header's ``n_count`` (decompression stops after that many records, and more
data is an error), else by ``GZ_MAX_RATIO`` times the file's size, and always by the free
space in ``$TMPDIR``.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import tempfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import DamagedFileError, InputError
from .trk import HEADER_SIZE, MAX_STREAMLINE_POINTS, check_header, read_header

GZ_MAX_RATIO = 20  # a .trk.gz without n_count may expand to at most this many times its size
TMP_MARGIN = 64 << 20


def tmp_folder() -> Path:
    """A new private folder in $TMPDIR for one converted file.

    Returns
    -------
    pathlib.Path
        A new folder named ``ltpa-*`` created by ``tempfile.mkdtemp`` (mode 0700); the
        caller removes it.
    """
    return Path(tempfile.mkdtemp(prefix="ltpa-"))


def check_space(folder: Path, need: int, source) -> None:
    """Refuse a conversion that would leave less than ``TMP_MARGIN`` free in ``folder``.

    Parameters
    ----------
    folder : pathlib.Path
        The temporary folder the converted file goes to.
    need : int
        Bytes the converted file will take.
    source : str or os.PathLike
        The file being converted, named in the message.

    Raises
    ------
    InputError
        If ``need`` plus ``TMP_MARGIN`` (64 MB) is more than the free space in ``folder``.
    """
    free = shutil.disk_usage(folder).free
    if need + TMP_MARGIN > free:
        raise InputError(
            f"file {str(source)!r}: converting it needs {need / 2**20:.0f} MB in the temporary "
            f"folder {str(folder.parent)!r}, which has {free / 2**20:.0f} MB free; set TMPDIR to "
            f"a folder with more space")


@contextlib.contextmanager
def gunzip_to_temp(path):
    """Yield the path of a temporary .trk holding the decompressed ``path`` (a .trk.gz).

    A context manager; the temporary folder is removed when it exits.

    Parameters
    ----------
    path : str or os.PathLike
        The .trk.gz file.

    Yields
    ------
    pathlib.Path
        The decompressed .trk, in a new folder under $TMPDIR.

    Raises
    ------
    InputError
        If ``path`` cannot be read (see ``gunzip``).
    DamagedFileError
        If it is not a readable gzip of a valid .trk, or decompresses to too much (see
        ``gunzip``).
    """
    folder = tmp_folder()
    tmp = folder / (Path(path).name[:-3] or "x.trk")
    try:
        gunzip(Path(path), tmp)
        yield tmp
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def gunzip(src: Path, dst: Path) -> None:
    """Decompress a .trk.gz, bounded by its header's n_count (else a ratio) and free space.

    The header is checked and the records are walked while decompressing; an incomplete last
    record is written as is (the .trk reader names it).

    Parameters
    ----------
    src : pathlib.Path
        The .trk.gz file.
    dst : pathlib.Path
        The .trk to write (created or overwritten); its folder must exist.

    Raises
    ------
    InputError
        If the size of ``src`` cannot be read (it does not exist, ...).
    DamagedFileError
        If the decompressed header is not a valid TrackVis header; a streamline has a
        negative point count or claims more than ``MAX_STREAMLINE_POINTS`` points; the file
        holds more streamlines or data than a nonzero header ``n_count`` says; without
        ``n_count`` it decompresses to more than ``GZ_MAX_RATIO`` times its size (at least
        1 MB counted); it needs more than the free space in the folder of ``dst`` less
        ``TMP_MARGIN``; or it is not a readable gzip file (any OSError, EOFError or zlib
        error while reading or writing).
    """
    # numba (~0.45 s to import) only when a file is read: the dry run and
    # `ltpa status` import this module without it
    from ..kernels import WALK_NEGATIVE, walk_range

    try:
        size = os.path.getsize(src)
    except OSError as exc:
        raise InputError(f"file {str(src)!r} could not be read: {exc.strerror}") from None
    free = shutil.disk_usage(dst.parent).free - TMP_MARGIN
    try:
        with gzip.open(src, "rb") as fin, open(dst, "wb") as fout:
            head = fin.read(HEADER_SIZE)
            header, order = read_header(head, src)
            n_scalars, n_props = check_header(header, src, 0)
            stride = 3 + n_scalars
            n_count = int(header["nb_streamlines"])
            limit = GZ_MAX_RATIO * max(size, 1 << 20) if n_count <= 0 else None
            fout.write(head)
            written = HEADER_SIZE
            carry = b""
            n = 0
            starts = ends = np.empty(0, np.int64)
            while True:
                chunk = fin.read(4 << 20)
                if not chunk:
                    break
                data = carry + chunk
                n_words = len(data) // 4
                ints = np.frombuffer(data[:4 * n_words], dtype=order + "i4").astype(np.int32)
                cap = n_words // (1 + n_props) + 1
                if starts.shape[0] < cap:
                    starts, ends = np.empty(cap, np.int64), np.empty(cap, np.int64)
                w, m, status = walk_range(ints, 0, n_words, stride, n_props, starts, ends, 0)
                if status == WALK_NEGATIVE:
                    raise DamagedFileError(f"file {str(src)!r}: streamline {n + m} has a negative "
                                    f"point count ({int(ints[w])})")
                n += m
                if n_count > 0 and n > n_count:
                    raise DamagedFileError(
                        f"file {str(src)!r}: header n_count says {n_count} streamlines but "
                        f"the file holds more; the file is corrupt or its header is wrong")
                keep = 4 * w
                written += keep
                if (limit is not None and written > limit) or written > free:
                    why = (f"more than {GZ_MAX_RATIO} times its size and its header gives no "
                           f"n_count" if limit is not None and written > limit
                           else f"more than the {free >> 20} MB free in the temporary folder")
                    raise DamagedFileError(f"file {str(src)!r}: decompresses to {why}; refusing it")
                fout.write(data[:keep])
                carry = data[keep:]
                if len(carry) > MAX_STREAMLINE_POINTS * 12:
                    raise DamagedFileError(f"file {str(src)!r}: streamline {n} claims more than "
                                    f"{MAX_STREAMLINE_POINTS} points: the file is corrupt")
                if n_count > 0 and n == n_count and (carry or fin.peek(1)):
                    raise DamagedFileError(
                        f"file {str(src)!r}: header n_count says {n_count} streamlines but the "
                        f"file holds more data after them; the file is corrupt")
            if carry:
                fout.write(carry)  # an incomplete last record: the reader names it
    except (OSError, EOFError, zlib.error) as exc:
        raise DamagedFileError(f"file {str(src)!r}: not a readable gzip file ({exc})") from exc
