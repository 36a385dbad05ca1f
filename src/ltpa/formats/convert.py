"""Streamline files other than .trk: .trk.gz, MRtrix .tck, TRX .trx (checked, then converted).

Everything downstream reads a TrackVis body in voxmm (``ltpa.formats.trk``), so the other formats
are converted once, chunk by chunk, into a temporary .trk in ``$TMPDIR`` and the same
reader and kernels run on it:

- ``.trk.gz``: decompressed as is (``ltpa.formats.gz``).
- ``.tck`` / ``.trx`` carry RAS mm, not a grid. The grid is given by ``ltpa.formats.grids.grid_for``
  (QSDR 2 mm, MNI152 2 mm, or the scan's ``reference_volume``). A RAS point's voxel is the
  one whose centre is nearest: ``ijk = floor(inv(affine) @ ras + 0.5)``. It is stored as
  TrackVis voxmm ``(ijk_continuous + 0.5) * voxel_size``, so the trk rule
  ``floor(voxmm / voxel_size)`` gives exactly that voxel, except for points within float32
  rounding of a voxel face, where either neighbour may be chosen.

The source is read through one descriptor (``pread``; never memory-mapped), and every
structural problem is an ``LtpaError`` naming the user's file: a .tck cut anywhere (no
end-of-file marker, a streamline without its terminator, a ``count`` that disagrees), a
``file:`` offset that is not inside the file; a .trx whose offsets do not run from 0 to its
vertex count, or whose arrays do not have the sizes its header declares.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import DamagedFileError, InputError, LtpaError
from .gz import check_space, gunzip, gunzip_to_temp, tmp_folder
from .trk import MAX_STREAMLINE_POINTS, Trk, TrkFile, record_starts
from .trkwrite import make_header

CHUNK_POINTS = 1 << 20
SUFFIXES = (".trk", ".trk.gz", ".tck", ".trx")


def kind_of(path) -> str:
    """The streamline format of a file, from its name (case-insensitive).

    Parameters
    ----------
    path : str or os.PathLike
        The file's path.

    Returns
    -------
    str
        One of ".trk.gz", ".trk", ".tck", ".trx".

    Raises
    ------
    InputError
        If the name ends in none of these suffixes.
    """
    name = str(path).lower()
    for suffix in (".trk.gz", ".trk", ".tck", ".trx"):
        if name.endswith(suffix):
            return suffix
    raise InputError(f"file {str(path)!r}: unknown streamline format; expected one of "
                    f"{', '.join(SUFFIXES)}")


@contextlib.contextmanager
def as_trk(path, grid=None):
    """Yield the path of a .trk holding the streamlines of ``path`` (itself for a .trk).

    ``grid`` (a ``ltpa.formats.grids.Grid``) is where .tck/.trx points are put; unused otherwise.

    A context manager. A .trk.gz is decompressed as is and a .tck/.trx is checked and
    converted to voxmm on ``grid``, into a new folder under $TMPDIR that is removed when the
    context exits.

    Parameters
    ----------
    path : str or os.PathLike
        A .trk, .trk.gz, .tck or .trx file (format from the name's suffix).
    grid : Grid, optional
        The voxel grid for .tck/.trx points (``ltpa.formats.grids.grid_for``); required for
        them.

    Yields
    ------
    pathlib.Path
        ``path`` itself for a .trk, else the temporary .trk.

    Raises
    ------
    InputError
        If the suffix is not a streamline format, ``grid`` is None for a .tck/.trx, a file
        to convert does not exist or cannot be opened/read, or $TMPDIR lacks the space for
        the conversion. A .trk is not opened here.
    DamagedFileError
        If the .trk.gz, .tck or .trx is damaged (see ``gunzip``, ``TckReader``,
        ``TrxReader``).
    """
    path = Path(path)
    kind = kind_of(path)
    if kind == ".trk":
        yield path
        return
    folder = tmp_folder()
    tmp = folder / (path.name + ".trk")
    try:
        if kind == ".trk.gz":
            gunzip(path, tmp)
        else:
            if grid is None:
                raise InputError(f"file {str(path)!r}: a {kind} carries RAS mm; a grid is needed")
            reader = TckReader(path) if kind == ".tck" else TrxReader(path)
            with reader:
                check_space(folder, 1000 + 4 * reader.n_streamlines + 12 * reader.n_points_hint,
                             path)
                _write_voxmm_trk(tmp, reader.chunks(), reader.n_streamlines, grid)
        yield tmp
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def read_trk(path) -> Trk:
    """Read a whole .trk (or .trk.gz) into memory, with the reader's checks.

    Parameters
    ----------
    path : str or os.PathLike
        A .trk or .trk.gz file (a .trk.gz is decompressed to a temporary .trk first).

    Returns
    -------
    Trk
        The header, the whole body as a read-only float32 array in this machine's byte
        order, and the int64 starts and counts of the streamlines; ``path`` is the file
        given (the .trk.gz for one).

    Raises
    ------
    InputError
        If the name has no streamline suffix, or the file does not exist or cannot be
        opened or read.
    DamagedFileError
        If the header or the body is damaged (see ``TrkFile.walk``, ``gunzip``).
    """
    path = Path(path)
    if kind_of(path) == ".trk.gz":
        with gunzip_to_temp(path) as tmp:
            trk = read_trk(tmp)
            trk.path = path
            return trk
    with TrkFile(path) as f:
        walked = f.walk(keep_counts=True)
        words = np.empty(f.total_words, dtype=np.float32)
        if f.total_words:
            f.read_words(0, words)
        counts = walked.counts.astype(np.int64)
        starts = record_starts(counts, f.stride, f.n_properties)
        words.flags.writeable = False
        return Trk(path, f.header, words, starts, counts, f.n_scalars, f.n_properties)


# --------------------------------------------------------------------------- .tck


class TckReader:
    """An MRtrix .tck read through one descriptor, checked as it is read."""

    DTYPES = {"Float32LE": "<f4", "Float32BE": ">f4", "Float64LE": "<f8", "Float64BE": ">f8"}

    def __init__(self, path, header_only=False):
        self.path = Path(path)
        try:
            self.fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise InputError(f"file {str(self.path)!r} does not exist") from None
        except OSError as exc:
            raise InputError(f"file {str(self.path)!r} could not be opened: {exc.strerror}") \
                from None
        try:
            self._read_header()
            if not header_only:
                self._scan()
        except BaseException:
            os.close(self.fd)
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _fail(self, what):
        raise DamagedFileError(f"file {str(self.path)!r}: {what}")

    def _read_header(self):
        self.size = os.fstat(self.fd).st_size
        head = os.pread(self.fd, 1 << 16, 0)
        if not head.startswith(b"mrtrix tracks"):
            self._fail("not an MRtrix .tck file (no 'mrtrix tracks' line)")
        end = head.find(b"\nEND\n")
        if end < 0:
            self._fail(".tck header has no END line (in its first 64 KB)")
        header_end = end + len(b"\nEND\n")
        fields = {}
        for line in head[:end].decode("latin-1").splitlines()[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                fields[k.strip()] = v.strip()
        dtype = fields.get("datatype", "Float32LE")
        if dtype not in self.DTYPES:
            self._fail(f".tck datatype {dtype!r} is not supported; expected one of "
                       f"{', '.join(self.DTYPES)}")
        parts = fields.get("file", ". 0").split()
        try:
            if len(parts) != 2 or parts[0] != ".":
                raise ValueError
            offset = int(parts[1])
        except ValueError:
            self._fail(f".tck header field 'file: {fields.get('file')}' is not '. <offset>' "
                       f"(data in this file)")
        if not header_end <= offset <= self.size:
            self._fail(f".tck header says the data start at byte {offset}, but the header ends "
                       f"at byte {header_end} and the file has {self.size} bytes")
        count = fields.get("count")
        try:
            self.count = int(count) if count is not None else None
        except ValueError:
            self._fail(f".tck header field 'count: {count}' is not a number")
        if self.count is not None and self.count < 0:
            self._fail(f".tck header count {self.count} is negative")
        self.dtype = np.dtype(self.DTYPES[dtype])
        self.offset = offset
        self.fields = fields

    def _rows(self):
        """(first row number, rows (k, 3) float64) of the data, read through the descriptor."""
        row_bytes = 3 * self.dtype.itemsize
        n_rows = (self.size - self.offset) // row_bytes
        step = CHUNK_POINTS
        for r0 in range(0, n_rows, step):
            k = min(step, n_rows - r0)
            raw = os.pread(self.fd, k * row_bytes, self.offset + r0 * row_bytes)
            if len(raw) != k * row_bytes:
                self._fail("the file ended while it was read (was it cut?)")
            yield r0, np.frombuffer(raw, dtype=self.dtype).reshape(k, 3).astype(np.float64)

    def _scan(self):
        """Count streamlines and points, check the structure (one pass, nothing kept)."""
        n = 0
        points = 0
        open_len = 0
        ended = False
        for _, rows in self._rows():
            first = rows[:, 0]
            inf = np.flatnonzero(np.isinf(first))
            stop = int(inf[0]) if inf.size else rows.shape[0]
            seps = np.flatnonzero(np.isnan(first[:stop]))
            if seps.size:
                lens = np.diff(np.concatenate([[-1], seps])) - 1
                lens[0] += open_len
                if lens.max() > MAX_STREAMLINE_POINTS:
                    self._fail(f"streamline {n + int(np.argmax(lens))} has more than "
                               f"{MAX_STREAMLINE_POINTS} points: the file is corrupt")
                n += seps.size
                points += int(lens.sum())
                open_len = stop - int(seps[-1]) - 1
            else:
                open_len += stop
            if inf.size:
                ended = True
                break
        if not ended:
            self._fail("no end-of-file marker (a row of Inf) after the last streamline: the "
                       "file is truncated")
        if open_len:
            self._fail(f"the last streamline ({open_len} points) has no terminator (a row of "
                       f"NaN) before the end-of-file marker: the file is truncated or corrupt")
        if self.count is not None and self.count != n:
            self._fail(f"header count says {self.count} streamlines but the file holds {n}; "
                       f"the file is truncated or its header is wrong")
        self.n_streamlines = n
        self.n_points_hint = points

    def chunks(self):
        """(points (P, 3) float64 RAS, lengths) of runs of whole streamlines.

        Reads the data again from the descriptor (about ``CHUNK_POINTS`` rows at a time) up
        to the end-of-file marker; the structure was checked when the reader was made.

        Yields
        ------
        points : numpy.ndarray
            (P, 3) float64 RAS mm coordinates of the run's streamlines, one after another
            (separators dropped).
        lengths : numpy.ndarray
            int64 points per streamline of the run.

        Raises
        ------
        DamagedFileError
            If the file ends early while it is read, or a streamline has an infinite or NaN
            coordinate.
        """
        carry = np.zeros((0, 3))
        for _, rows in self._rows():
            first = rows[:, 0]
            inf = np.flatnonzero(np.isinf(first))
            stop = int(inf[0]) if inf.size else rows.shape[0]
            block = np.concatenate([carry, rows[:stop]]) if carry.shape[0] else rows[:stop]
            seps = np.flatnonzero(np.isnan(block[:, 0]))
            if seps.size:
                whole = block[:seps[-1] + 1]
                lens = np.diff(np.concatenate([[-1], seps])) - 1
                pts = whole[~np.isnan(whole[:, 0])]
                if not np.isfinite(pts).all():
                    self._fail("a streamline has an infinite or NaN coordinate")
                yield pts, lens.astype(np.int64)
                carry = block[seps[-1] + 1:]
            else:
                carry = block
            if inf.size:
                return


# --------------------------------------------------------------------------- .trx


class TrxReader:
    """A TRX file (zip, stored or deflated; or a folder) read with checks, never memory-mapped.

    The header's NB_VERTICES / NB_STREAMLINES decide the sizes ``positions.3.<float>`` and
    ``offsets.<uint>`` must have, before anything is decompressed; the offsets must start at
    0, never decrease and end at NB_VERTICES.
    """

    FLOATS = ("float16", "float32", "float64")
    UINTS = ("uint32", "uint64")

    def __init__(self, path, header_only=False):
        self.path = Path(path)
        self._zip = None
        try:
            if self.path.is_dir():
                names = {str(p.relative_to(self.path)): p for p in self.path.rglob("*")
                         if p.is_file()}
                self._open_member = lambda name: open(names[name], "rb")
                self._size = lambda name: names[name].stat().st_size
            else:
                self._zip = zipfile.ZipFile(self.path)
                infos = {i.filename: i for i in self._zip.infolist()}
                names = infos
                self._open_member = lambda name: self._zip.open(infos[name])
                self._size = lambda name: infos[name].file_size
            self._find(names)
            if not header_only:
                self._read_offsets()
        except LtpaError:
            self.close()
            raise
        except FileNotFoundError:
            self.close()
            raise InputError(f"file {str(self.path)!r} does not exist") from None
        except (OSError, zipfile.BadZipFile, zlib.error, ValueError, KeyError, EOFError,
                NotImplementedError, RuntimeError) as exc:
            # zipfile: NotImplementedError for an unknown compression method, RuntimeError
            # for an encrypted member
            self.close()
            raise DamagedFileError(
                f"file {str(self.path)!r}: not a readable .trx file ({exc})") from None

    def close(self):
        """Close the .trx archive; calling it again does nothing."""
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _fail(self, what):
        raise DamagedFileError(f"file {str(self.path)!r}: {what}")

    def _find(self, names):
        if "header.json" not in names:
            self._fail("no header.json: not a .trx file")
        if self._size("header.json") > 1 << 20:
            self._fail("header.json is larger than 1 MB")
        with self._open_member("header.json") as fh:
            try:
                header = json.loads(fh.read(1 << 20).decode("utf-8"))
            except (ValueError, UnicodeDecodeError) as exc:
                self._fail(f"header.json is not valid JSON ({exc})")
            except RecursionError:
                self._fail("header.json is nested more deeply than Python's JSON reader can "
                           "follow; expected an object with NB_VERTICES, NB_STREAMLINES, ...")
        try:
            self.n_vertices = int(header["NB_VERTICES"])
            self.n_streamlines = int(header["NB_STREAMLINES"])
        except (KeyError, TypeError, ValueError, OverflowError):  # OverflowError: Infinity
            self._fail("header.json lacks integer NB_VERTICES and NB_STREAMLINES")
        if self.n_vertices < 0 or self.n_streamlines < 0:
            self._fail("header.json has a negative NB_VERTICES or NB_STREAMLINES")
        self.n_points_hint = self.n_vertices
        pos = [n for n in names if n.startswith("positions.3.") and "/" not in n]
        off = [n for n in names if n.startswith("offsets.") and "/" not in n]
        if self.n_streamlines == 0:
            self.positions = self.offsets_name = None
            self.pos_dtype = np.dtype("float32")
            return
        if len(pos) != 1 or len(off) != 1:
            self._fail("expected one positions.3.<float> and one offsets.<uint> array")
        self.positions, self.offsets_name = pos[0], off[0]
        ptype, otype = pos[0].split(".")[-1], off[0].split(".")[-1]
        if ptype not in self.FLOATS or otype not in self.UINTS:
            self._fail(f"arrays {pos[0]!r} and {off[0]!r}: expected float16/32/64 positions and "
                       f"uint32/64 offsets")
        self.pos_dtype = np.dtype(ptype).newbyteorder("<")
        self.off_dtype = np.dtype(otype).newbyteorder("<")
        want = 3 * self.n_vertices * self.pos_dtype.itemsize
        if self._size(self.positions) != want:
            self._fail(f"{self.positions} has {self._size(self.positions)} bytes; NB_VERTICES "
                       f"{self.n_vertices} needs {want}")
        n_off = self._size(self.offsets_name) // self.off_dtype.itemsize
        if n_off not in (self.n_streamlines, self.n_streamlines + 1) or \
                self._size(self.offsets_name) % self.off_dtype.itemsize:
            self._fail(f"{self.offsets_name} holds {n_off} offsets; NB_STREAMLINES "
                       f"{self.n_streamlines} needs {self.n_streamlines + 1}")

    def _read_offsets(self):
        if self.n_streamlines == 0:
            if self.n_vertices:
                self._fail(f"NB_STREAMLINES is 0 but NB_VERTICES is {self.n_vertices}")
            self.lengths = np.zeros(0, np.int64)
            return
        with self._open_member(self.offsets_name) as fh:
            raw = fh.read(self._size(self.offsets_name))
        off = np.frombuffer(raw, dtype=self.off_dtype).astype(np.int64)
        if off.shape[0] == self.n_streamlines:  # older files: no final offset
            off = np.concatenate([off, [self.n_vertices]])
        if off[0] != 0 or np.any(np.diff(off) < 0) or off[-1] != self.n_vertices:
            self._fail(f"offsets must run from 0 to NB_VERTICES ({self.n_vertices}) without "
                       f"decreasing; they run from {int(off[0])} to {int(off[-1])}"
                       + (" and decrease" if np.any(np.diff(off) < 0) else ""))
        self.lengths = np.diff(off)
        if self.lengths.size and self.lengths.max() > MAX_STREAMLINE_POINTS:
            self._fail(f"a streamline has more than {MAX_STREAMLINE_POINTS} points")

    def chunks(self):
        """Yield the streamlines' points in runs of whole streamlines.

        Yields
        ------
        points : numpy.ndarray
            (P, 3) float64 coordinates of the run's streamlines, one after another.
        lengths : numpy.ndarray
            Points per streamline of the run.

        Raises
        ------
        DamagedFileError
            If the positions end early, hold a NaN or infinite coordinate, or cannot be read.
        """
        if self.n_streamlines == 0:
            return
        lengths = self.lengths
        n = lengths.shape[0]
        item = 3 * self.pos_dtype.itemsize
        try:
            with self._open_member(self.positions) as fh:
                s = 0
                while s < n:
                    e = s + 1
                    total = int(lengths[s])
                    while e < n and total + lengths[e] <= CHUNK_POINTS:
                        total += int(lengths[e])
                        e += 1
                    raw = fh.read(total * item)
                    if len(raw) != total * item:
                        self._fail(f"{self.positions} ended early while it was read")
                    pts = np.frombuffer(raw, dtype=self.pos_dtype).reshape(total, 3) \
                        .astype(np.float64)
                    if not np.isfinite(pts).all():
                        self._fail("a streamline has a NaN or infinite coordinate")
                    yield pts, lengths[s:e]
                    s = e
        except (OSError, zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError,
                RuntimeError) as exc:
            self._fail(f"could not be read ({exc})")


# --------------------------------------------------------------------------- RAS -> voxmm .trk


def _write_voxmm_trk(dst, chunks, n_streamlines, grid):
    """Write RAS-mm streamline chunks as a .trk on ``grid`` (dim, voxel size, order, affine)."""
    inv = np.linalg.inv(grid.affine)
    hdr = make_header(grid.dim, grid.voxel_size, grid.voxel_order, grid.affine, n_streamlines)
    vs_arr = np.asarray(grid.voxel_size, dtype=np.float64)
    with open(dst, "wb") as fh:
        fh.write(hdr.tobytes())
        for pts, lengths in chunks:
            ijk = pts @ inv[:3, :3].T + inv[:3, 3]
            voxmm = ((ijk + 0.5) * vs_arr).astype("<f4")
            m = lengths.shape[0]
            out = np.empty(m + 3 * voxmm.shape[0], dtype="<f4")
            starts = np.zeros(m, dtype=np.int64)
            if m > 1:
                np.cumsum(lengths[:-1], out=starts[1:])
            count_pos = starts * 3 + np.arange(m)
            mask = np.ones(out.shape[0], dtype=bool)
            mask[count_pos] = False
            out[mask] = voxmm.ravel()
            out.view("<i4")[count_pos] = lengths
            fh.write(out.tobytes())
        fh.flush()
        os.fsync(fh.fileno())
