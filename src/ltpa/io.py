"""Atomic writes: a temp file in the destination folder, then one rename.

A job that fails or is killed leaves, at worst, a hidden ``.<name>.ltpa-tmp-*``
file that the next write of the same output removes (once its writer is dead); it never leaves a partial output under the real name
and never replaces a good output with a bad one.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import time
from pathlib import Path

from .errors import LtpaError

TMP_MARK = ".ltpa-tmp-"


HOST = socket.gethostname().replace("-", "_") or "host"
# a temp file of another machine (shared file system) is only removed after this long
FOREIGN_TEMP_AGE_S = 7 * 24 * 3600


def _tmp_prefix(dest: Path) -> str:
    return f".{dest.name}{TMP_MARK}"


def _own_prefix(dest: Path) -> str:
    """Temp names carry the writer's host and pid: .<name>.ltpa-tmp-<host>-<pid>-<random>."""
    return f"{_tmp_prefix(dest)}{HOST}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(dest: Path) -> None:
    """Remove temp files that a killed earlier job left beside ``dest``.

    Only the temps of dead writers go: a temp of a live process on this host (a
    concurrent run, from another working directory) is left alone, and so is a
    recent temp written from another host of a shared file system.
    """
    folder = dest.parent
    if not folder.is_dir():
        return
    prefix = _tmp_prefix(dest)
    for entry in folder.iterdir():
        if not entry.name.startswith(prefix):
            continue
        host, _, rest = entry.name[len(prefix):].partition("-")
        pid_text = rest.partition("-")[0]
        stale = False
        if host == HOST and pid_text.isdigit():
            stale = not _pid_alive(int(pid_text))
        else:
            with contextlib.suppress(OSError):
                stale = time.time() - entry.stat().st_mtime > FOREIGN_TEMP_AGE_S
        if stale:
            with contextlib.suppress(OSError):
                entry.unlink()


@contextlib.contextmanager
def atomic_path(dest, suffix=""):
    """Yield a temp path beside ``dest``; on success rename it onto ``dest``.

    ``suffix`` keeps an extension that a writer insists on (nibabel picks the
    format by extension, numpy.save appends .npy).
    """
    dest = Path(dest)
    folder = dest.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = exc.strerror
        if folder.exists() and not folder.is_dir():
            why += " (a file, not a folder, has that name)"
        raise LtpaError(f"cannot create output folder {str(folder)!r}: {why}") from exc
    remove_stale_temps(dest)
    try:
        fd, tmp = tempfile.mkstemp(prefix=_own_prefix(dest), suffix=suffix, dir=folder)
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
def atomic_open(dest, mode="wb"):
    """Open a temp file beside ``dest`` for writing; rename it onto ``dest`` on success."""
    with atomic_path(dest) as tmp:
        with open(tmp, mode) as fh:
            yield fh


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
