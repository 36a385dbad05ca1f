"""The job server's wire protocol and where its socket lives (shared by server and client).

A message is a 4-byte big-endian length and a JSON object. A request (client -> server) is
one message, ``{"argv": [str], "cwd": str, "env": {str: str}}``, sent with the client's
stdin, stdout and stderr as SCM_RIGHTS ancillary data; the server answers ``{"pid": ...}``
once the job's process is forked, then ``{"exit": status}``. The socket lives in a folder
private to the user (``folder_problem``) and each side checks the other's uid
(``peer_uid``); a request is checked (size, JSON depth, types) before it is used, and only an
allowlist of environment variables crosses (``job_environment``).
This module imports nothing heavy: ``ltpa-job`` starts in milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import stat
import struct
import sys
import time
from pathlib import Path

import ltpa

MAX_MESSAGE = 16 << 20  # a reply (the server's few bytes)
MAX_REQUEST = 1 << 20  # a request: argv (the job's JSON spec), cwd and the allowlisted env
MAX_JSON_DEPTH = 64  # a real request nests 4 levels (its spec is a string)
REQUEST_TIMEOUT = 10.0  # seconds a connection has to deliver its request

# The environment a job gets, and all the client sends: enough for the job to behave as in
# its own process, and nothing else of the user's (tokens, keys, passwords stay home).
#   PATH, HOME, USER, LOGNAME  programs, ~ and the user's name, as libraries look them up
#   LANG, LANGUAGE, LC_*, TZ   how text is decoded and log times are printed
#   TMPDIR                     where temporary files go (a SLURM job's node-local folder)
#   thread counts              OMP/OPENBLAS/MKL/NUMEXPR/VECLIB: BLAS and OpenMP thread pools;
#                              NUMBA_*: numba's threads and cache (the job's CPU share)
#   LTPA_*                     the package's own switches
#   SLURM_JOB_ID, SLURM_CPUS_* the allocation a job runs in (what the job is allowed to use)
ENV_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR",
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS", "SLURM_JOB_ID", "SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE",
})
ENV_PREFIXES = ("LC_", "LTPA_", "NUMBA_")


def job_environment(env) -> dict:
    """The variables of ``env`` a job needs (``ENV_NAMES``, ``ENV_PREFIXES``), as str -> str.

    Parameters
    ----------
    env : mapping
        An environment, e.g. ``os.environ`` or a request's ``env``.

    Returns
    -------
    dict
        Name -> value for the names in ``ENV_NAMES`` or starting with one of
        ``ENV_PREFIXES``; entries whose name or value is not a str are left out.
    """
    return {k: v for k, v in env.items()
            if isinstance(k, str) and isinstance(v, str)
            and (k in ENV_NAMES or k.startswith(ENV_PREFIXES))}


# --------------------------------------------------------------------------- where


def socket_path() -> Path:
    """The server socket for this user, Python, ltpa install and SLURM job.

    The socket's name holds a hash of the Python executable, the package's folder and
    version, every module's mtime and ``SLURM_JOB_ID``, so a changed install gets a new
    server. Nothing is created here (``folder_problem`` makes the folder).

    Returns
    -------
    pathlib.Path
        ``$XDG_RUNTIME_DIR/ltpa/jobs-<hash>.sock`` when ``XDG_RUNTIME_DIR`` is an existing
        folder, else ``/tmp/ltpa-<uid>/jobs-<hash>.sock`` (hash: 16 hex digits).
    """
    here = Path(ltpa.__file__).resolve().parent
    # the code's version: a changed module (an upgrade, an edit) gets a new server
    stamp = sorted(f"{p.relative_to(here)}:{p.stat().st_mtime_ns}" for p in here.rglob("*.py"))
    key = "|".join([sys.executable, str(here), ltpa.__version__, *stamp,
                    os.environ.get("SLURM_JOB_ID", "")])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    base = os.environ.get("XDG_RUNTIME_DIR")
    folder = Path(base) / "ltpa" if base and os.path.isdir(base) else \
        Path("/tmp") / f"ltpa-{os.getuid()}"
    return folder / f"jobs-{digest}.sock"


def folder_problem(folder: Path, create: bool = True) -> str | None:
    """None if ``folder`` is private to this user, else what is wrong with it.

    Private: a real folder (lstat: not a symlink to one), owned by this uid, with no
    permission for group or others (0700). Anyone can create ``/tmp/ltpa-<uid>`` before
    this user does; a folder that fails this is never used (``create``: make it if absent).

    Parameters
    ----------
    folder : pathlib.Path
        The socket's folder.
    create : bool, optional
        Make the folder (mode 0700) first when it does not exist (default True).

    Returns
    -------
    str or None
        None when the folder is private to this user; else what is wrong with it (it
        cannot be stat'ed, is a symlink or not a folder, or has another owner or a mode
        other than 0700), naming the folder.
    """
    if create:
        try:
            os.mkdir(folder, 0o700)  # never follows a symlink: an existing name is kept
        except OSError:
            pass  # it exists, or cannot be made: the lstat below says what is wrong
    try:
        st = os.lstat(folder)
    except OSError as exc:
        return f"{folder} cannot be used ({exc.strerror})"
    if not stat.S_ISDIR(st.st_mode):
        kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a folder"
        return f"{folder} is {kind}; expected a folder of uid {os.getuid()} with mode 0700"
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        return (f"{folder} belongs to uid {st.st_uid} with mode {stat.S_IMODE(st.st_mode):04o}; "
                f"expected uid {os.getuid()} and mode 0700")
    return None


def peer_uid(sock) -> int:
    """The uid of the process at the other end of the Unix socket ``sock`` (SO_PEERCRED).

    Parameters
    ----------
    sock : socket.socket
        A connected Unix stream socket.

    Returns
    -------
    int
        The peer process's uid (as it was when the connection was made).

    Raises
    ------
    OSError
        If the socket's peer credentials cannot be read.
    """
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


# --------------------------------------------------------------------------- framing


def send_message(sock, obj) -> None:
    """Send ``obj`` as one message: a 4-byte big-endian length, then its JSON (UTF-8).

    Parameters
    ----------
    sock : socket.socket
        A connected stream socket.
    obj : object
        Anything ``json.dumps`` takes.

    Raises
    ------
    OSError
        If the socket cannot send it.
    """
    data = json.dumps(obj).encode()
    sock.sendall(struct.pack("!I", len(data)) + data)


def recv_message(sock):
    """Receive one message written by ``send_message``.

    Parameters
    ----------
    sock : socket.socket
        A connected stream socket (its timeout applies to each read).

    Returns
    -------
    object or None
        The decoded JSON value, or None when the other end closed the connection before
        a whole message arrived.

    Raises
    ------
    ValueError
        If the announced length is over ``MAX_MESSAGE`` (16 MB) or the body is not UTF-8 JSON.
    OSError
        If a read fails or times out.
    """
    head = _recv_exact(sock, 4)
    if head is None:
        return None
    (n,) = struct.unpack("!I", head)
    if n > MAX_MESSAGE:
        raise ValueError("message too large")
    data = _recv_exact(sock, n)
    return None if data is None else json.loads(data.decode())


def _recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def send_request(sock, request: dict) -> None:
    """Send a job request with this process's stdin, stdout and stderr (SCM_RIGHTS).

    The request is framed as ``send_message`` frames it; file descriptors 0, 1 and 2 travel
    with its first bytes.

    Parameters
    ----------
    sock : socket.socket
        A connected Unix stream socket to the job server.
    request : dict
        ``{"argv": [str], "cwd": str, "env": {str: str}}``.

    Raises
    ------
    OSError
        If the socket cannot send it (or times out).
    """
    data = json.dumps(request).encode()
    frame = struct.pack("!I", len(data)) + data
    sent = sock.sendmsg([frame], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                   struct.pack("3i", 0, 1, 2))])
    sock.sendall(frame[sent:])  # (a socket with a timeout may take a big one in parts)


# --------------------------------------------------------------------------- requests


class BadRequest(ValueError):
    """A request the server does not run (its child says why in the exit status)."""


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")


def json_depth(text: str) -> int:
    """How deeply the JSON ``text`` nests (no recursion: strings removed, brackets counted).

    Parameters
    ----------
    text : str
        JSON text (need not be valid).

    Returns
    -------
    int
        The greatest number of ``[``/``{`` open at once outside strings; 0 for a scalar.
    """
    depth = peak = 0
    for m in _BRACKET.finditer(_STRING.sub("", text)):
        if m.group() in "[{":
            depth += 1
            peak = max(peak, depth)
        else:
            depth -= 1
    return peak


def parse_request(data: bytes) -> dict:
    """A job request (``{"argv": [str], "cwd": str, "env": {str: str}}``) from its JSON bytes.

    Raises ``BadRequest`` for anything else: too large, nested more than ``MAX_JSON_DEPTH``
    levels (checked before parsing, so no recursion limit is reached), not UTF-8, not JSON,
    missing or wrong-typed fields.

    Parameters
    ----------
    data : bytes
        The request's JSON, without the length prefix.

    Returns
    -------
    dict
        ``{"argv": [str], "cwd": str, "env": {str: str}}``, ``env`` cut down to the
        variables a job gets (``job_environment``).

    Raises
    ------
    BadRequest
        If ``data`` is over ``MAX_REQUEST`` bytes, nests more than ``MAX_JSON_DEPTH``
        levels, is not UTF-8 or not JSON, is not an object of exactly argv, cwd and env,
        has a field of the wrong type, a cwd that is not absolute, or a NUL character (or,
        in an env name, ``=``).
    """
    if len(data) > MAX_REQUEST:
        raise BadRequest(f"request of {len(data)} bytes; at most {MAX_REQUEST}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("request is not UTF-8") from None
    if json_depth(text) > MAX_JSON_DEPTH:
        raise BadRequest(f"request nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"request is not JSON ({str(exc)[:100]})") from None
    if not isinstance(msg, dict) or set(msg) != {"argv", "cwd", "env"}:
        raise BadRequest("request must be an object with argv, cwd and env")
    argv, cwd, env = msg["argv"], msg["cwd"], msg["env"]
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise BadRequest("argv must be a list of strings")
    if not isinstance(cwd, str) or not cwd.startswith("/") or "\0" in cwd:
        raise BadRequest("cwd must be an absolute path")
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise BadRequest("env must map names to strings")
    if any("\0" in a for a in argv) or any("\0" in k or "=" in k or "\0" in v
                                          for k, v in env.items()):
        raise BadRequest("argv and env must not hold NUL characters")
    return {"argv": argv, "cwd": cwd, "env": job_environment(env)}


def recv_request(conn, deadline: float):
    """A request: its length, then the JSON with the client's three fds (SCM_RIGHTS).

    Returns (bytes, fds); on any error the fds received so far are closed.

    Parameters
    ----------
    conn : socket.socket
        The accepted connection.
    deadline : float
        The ``time.monotonic()`` time by which the whole request must have arrived.

    Returns
    -------
    tuple of (bytes, list of int)
        The request's JSON bytes (without the length prefix) and the three file
        descriptors received (the client's stdin, stdout and stderr), now owned by the
        caller.

    Raises
    ------
    BadRequest
        If the request does not arrive by ``deadline``, the connection closes before it is
        complete, it announces more than ``MAX_REQUEST`` bytes, more bytes follow it, or it
        does not come with exactly three file descriptors.
    OSError
        If a read fails.
    """
    fds = []
    buf = bytearray()
    need = None
    try:
        while need is None or len(buf) < need:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BadRequest("no request in time")
            conn.settimeout(left)
            try:
                data, ancdata, _, _ = conn.recvmsg(1 << 16, socket.CMSG_SPACE(3 * 4))
            except TimeoutError:
                raise BadRequest("no request in time") from None
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    k = len(payload) // 4
                    fds += list(struct.unpack(f"{k}i", payload[:4 * k]))
            if not data:
                raise BadRequest("connection closed before the request was complete")
            buf += data
            if need is None and len(buf) >= 4:
                (need,) = struct.unpack("!I", bytes(buf[:4]))
                if need > MAX_REQUEST:
                    raise BadRequest(f"request of {need} bytes; at most {MAX_REQUEST}")
                need += 4
        if len(buf) != need:
            raise BadRequest("more bytes than the request's length")
        if len(fds) != 3:
            raise BadRequest(f"{len(fds)} file descriptors; expected 3 (stdin, stdout, stderr)")
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return bytes(buf[4:need]), fds
