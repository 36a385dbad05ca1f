"""Writing outputs: a temp file in the destination folder, checks, then one rename; output locks.

A job that fails or is killed leaves, at worst, a hidden ``.<name>.ltpa-tmp-*`` file; it never
leaves a partial output under the real name and never replaces a good output with a bad one.

Each job holds its output's lock (``output_lock``) from start to rename, so at most one
writer works on an output at a time: a second job for the same output (an orphan of a killed
run, a second run from another folder) fails at once naming the holder, instead of renaming
an older result over a newer one. The lock is a byte-range ``fcntl`` lock (NFS-safe) on one
hidden ``.ltpa-lock`` file per output folder, at an offset derived from the output's name.
While it holds the lock, a writer removes the temp files earlier writers of that output left
(they are dead or they would hold the lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import mmap
import os
import struct
import tempfile
import threading
from pathlib import Path

from .errors import LtpaError

TMP_MARK = ".ltpa-tmp-"
LOCK_NAME = ".ltpa-lock"


def _tmp_prefix(dest: Path) -> str:
    return f".{dest.name}{TMP_MARK}"


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = exc.strerror or str(exc)
        if folder.exists() and not folder.is_dir():
            why += " (a file, not a folder, has that name)"
        raise LtpaError(f"cannot create output folder {str(folder)!r}: {why}") from exc


# --------------------------------------------------------------------------- bounded reads

class NotARegularFile(OSError):
    """The path names a FIFO, a device, a folder or a socket: never read as a small file."""


def read_regular(path, limit: int) -> bytes:
    """The bytes of the regular file at ``path``, refusing anything else and more than
    ``limit`` bytes (OSError; ``NotARegularFile`` or a ``strerror`` saying why).

    For the small files ltpa reads beside a study (sidecars, caches): a FIFO there would
    block a plain ``open``/``read`` for ever and ``/dev/zero`` would fill memory, so the
    file is opened without blocking, checked with ``fstat`` (the same file that is read) and
    read up to ``limit + 1`` bytes.

    Parameters
    ----------
    path : str or os.PathLike
        The file to read.
    limit : int
        The most bytes accepted.

    Returns
    -------
    bytes
        The whole content of the file.

    Raises
    ------
    NotARegularFile
        If ``path`` is not a regular file (a FIFO, a device, a folder, a socket).
    OSError
        If the file cannot be opened or read, or holds more than ``limit`` bytes (by its
        size, or by what was read).
    """
    import stat

    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotARegularFile(0, "not a regular file")
        if st.st_size > limit:
            raise OSError(0, f"{st.st_size} bytes, more than {limit}")
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, limit + 1 - total)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise OSError(0, f"more than {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- output locks

class _LockFiles:
    """One open descriptor per lock file in this process, and the offsets this process holds.

    fcntl locks belong to the process and closing *any* descriptor of the file drops them
    all, so every lock of the process on a lock file goes through this one descriptor.
    """

    def __init__(self):
        self._mutex = threading.Lock()
        self._files = {}  # lock file path -> [fd, set of offsets]

    def acquire(self, lock_path: Path, offset: int, dest: Path) -> None:
        with self._mutex:
            entry = self._files.get(lock_path)
            if entry is None:
                try:
                    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0),
                                 0o666)
                except OSError as exc:
                    raise LtpaError(f"cannot write in output folder {str(lock_path.parent)!r}: "
                                    f"{exc.strerror}") from None
                entry = self._files[lock_path] = [fd, set()]
            fd, held = entry
            if offset in held:
                raise LtpaError(f"output {str(dest)!r} is already being written by this process")
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset, os.SEEK_SET)
            except OSError:
                if not held:
                    os.close(fd)
                    del self._files[lock_path]
                who = _holder(fd if held else None, lock_path, offset)
                raise LtpaError(
                    f"output {str(dest)!r} is being written by another ltpa job{who}; "
                    f"nothing was done: wait for it to finish (or stop it), then run again"
                ) from None
            held.add(offset)

    def release(self, lock_path: Path, offset: int) -> None:
        with self._mutex:
            entry = self._files.get(lock_path)
            if entry is None or offset not in entry[1]:
                return
            fd, held = entry
            with contextlib.suppress(OSError):
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, offset, os.SEEK_SET)
            held.discard(offset)
            if not held:
                os.close(fd)
                del self._files[lock_path]


_LOCKS = _LockFiles()


def _holder(fd, lock_path, offset) -> str:
    """' (pid N)' of the process holding the lock at ``offset``, when the system says."""
    try:
        own = fd is None
        if own:
            fd = os.open(lock_path, os.O_RDWR)
        try:
            fmt = "hhqqi4x" if struct.calcsize("P") == 8 else "hhqqi"
            arg = struct.pack(fmt, fcntl.F_WRLCK, os.SEEK_SET, offset, 1, 0)
            res = fcntl.fcntl(fd, fcntl.F_GETLK, arg)
            pid = struct.unpack(fmt, res)[4]
        finally:
            if own:
                os.close(fd)
        return f" (pid {pid})" if pid > 0 else ""
    except (OSError, struct.error, ValueError):
        return ""


def _lock_offset(dest: Path) -> int:
    return int.from_bytes(hashlib.blake2b(dest.name.encode("utf-8", "surrogateescape"),
                                          digest_size=8).digest(), "little") >> 2


@contextlib.contextmanager
def output_lock(dest):
    """Hold ``dest``'s lock (non-blocking: LtpaError naming the holder if another job has it).

    While held, temp files of earlier writers of ``dest`` are removed: they are dead.

    A context manager; the output's folder is created if needed, and the lock is released
    when the context exits.

    Parameters
    ----------
    dest : str or os.PathLike
        The output to lock (made absolute).

    Yields
    ------
    None
        Control to the body of the ``with`` block, with the lock held.

    Raises
    ------
    LtpaError
        If the output's folder cannot be created or written in (the lock file), this
        process already holds the lock of ``dest``, or another process holds it (the
        message names its pid when the system says).
    """
    dest = Path(os.path.abspath(dest))
    _make_folder(dest.parent)
    lock_path = dest.parent / LOCK_NAME
    offset = _lock_offset(dest)
    _LOCKS.acquire(lock_path, offset, dest)
    try:
        _remove_temps(dest)
        yield
    finally:
        _LOCKS.release(lock_path, offset)


def _remove_temps(dest: Path) -> None:
    prefix = _tmp_prefix(dest)
    with contextlib.suppress(OSError):
        for entry in dest.parent.iterdir():
            if entry.name.startswith(prefix):
                with contextlib.suppress(OSError):
                    entry.unlink()


# --------------------------------------------------------------------------- atomic writes

@contextlib.contextmanager
def atomic_path(dest, suffix="", before_rename=None):
    """Yield a temp path beside ``dest``; on success rename it onto ``dest``.

    ``suffix`` keeps an extension that a writer insists on (nibabel picks the format by
    extension, numpy.save appends .npy). ``before_rename()`` runs after the data is on
    disk and before the rename; it raises to stop the output from replacing ``dest``
    (e.g. an input changed while the job ran).

    A context manager. The temp file (``.<name>.ltpa-tmp-*<suffix>``, created empty in the
    folder of ``dest``, which is created if needed) is fsynced, given mode 0644 less the
    umask, and renamed onto ``dest`` when the body succeeds; on any error it is removed.

    Parameters
    ----------
    dest : str or os.PathLike
        The output path.
    suffix : str, optional
        Ending of the temp file's name (e.g. ".nii.gz"); default none.
    before_rename : callable, optional
        Called with no arguments before the rename; an exception from it is raised and
        ``dest`` is left as it was.

    Yields
    ------
    pathlib.Path
        The temp file to write.

    Raises
    ------
    LtpaError
        If the folder cannot be created or written in, or an OSError occurs in the body,
        the fsync, the chmod, ``before_rename`` or the rename (the message names ``dest``).
    """
    dest = Path(dest)
    folder = dest.parent
    _make_folder(folder)
    try:
        fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(dest), suffix=suffix, dir=folder)
    except OSError as exc:
        raise LtpaError(f"cannot write in output folder {str(folder)!r}: {exc.strerror}") from exc
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        # make the data durable before the name points at it
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644 & ~_umask())
        if before_rename is not None:
            before_rename()
        os.replace(tmp, dest)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise LtpaError(f"could not write {str(dest)!r}: {exc.strerror or exc}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_open(dest, mode="wb", before_rename=None):
    """Open a temp file beside ``dest`` for writing; rename it onto ``dest`` on success.

    A context manager over ``atomic_path``: the file is closed before it is made durable
    and renamed.

    Parameters
    ----------
    dest : str or os.PathLike
        The output path.
    mode : str, optional
        Mode for ``open`` (default "wb").
    before_rename : callable, optional
        Called with no arguments before the rename; an exception from it is raised and
        ``dest`` is left as it was.

    Yields
    ------
    file object
        The open temp file.

    Raises
    ------
    LtpaError
        As ``atomic_path``: the folder cannot be created or written in, or an OSError
        occurs while writing, syncing or renaming.
    """
    with atomic_path(dest, before_rename=before_rename) as tmp:
        with open(tmp, mode) as fh:
            yield fh


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --------------------------------------------------------------------------- mapped pages


def mapping_of(array):
    """The ``mmap`` an array reads from (through its base chain), or None.

    Parameters
    ----------
    array : numpy.ndarray or memoryview or mmap.mmap
        The object to follow (``.base`` of arrays, ``.obj`` of memoryviews), at most eight
        steps deep.

    Returns
    -------
    mmap.mmap or None
        The mapping found, or None when the chain ends (or is longer) without one.
    """
    x = array
    for _ in range(8):
        if isinstance(x, mmap.mmap):
            return x
        # an array's .base (np.memmap -> mmap), a memoryview's .obj
        x = x.obj if isinstance(x, memoryview) else getattr(x, "base", None)
        if x is None:
            return None
    return None


def release_pages(*arrays) -> None:
    """Unmap the pages of the read-only file mappings behind ``arrays`` that this process
    touched (they stay in the page cache: the next access maps them again from it), so a
    long pass over big memory-mapped files keeps its resident memory flat.

    Uses ``madvise(MADV_DONTNEED)`` on the whole mapping of each array (see
    ``mapping_of``); arrays without a mapping, closed mappings and platforms without it are
    skipped silently.

    Parameters
    ----------
    *arrays : numpy.ndarray
        Arrays (or memoryviews) backed by read-only file mappings.
    """
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if advice is None:
        return
    for array in arrays:
        mm = mapping_of(array)
        if mm is None:
            continue
        try:
            mm.madvise(advice)
        except (OSError, ValueError):
            pass  # closed, or a platform without it: only memory is at stake
