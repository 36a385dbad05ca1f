"""The job server's wire protocol and where its socket lives (shared by server and client).

A message is a 4-byte big-endian length and a JSON object. A request (client -> server) is one
message, sent with the client's stdin, stdout and stderr as SCM_RIGHTS ancillary data; the
server answers ``{"pid": ...}`` once the job's process is forked, then ``{"exit": status}``.
This module imports nothing heavy: ``ltpa-job`` starts in milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import struct
import sys
from pathlib import Path

import ltpa

MAX_MESSAGE = 16 << 20
PROTOCOL = 1


# --------------------------------------------------------------------------- where


def socket_path() -> Path:
    """The server socket for this user, Python, ltpa install and SLURM job."""
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


def private_folder(folder: Path) -> bool:
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(folder)
    except OSError:
        return False
    return (stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()
            and (st.st_mode & 0o077) == 0)


# --------------------------------------------------------------------------- framing


def send_message(sock, obj) -> None:
    data = json.dumps(obj).encode()
    sock.sendall(struct.pack("!I", len(data)) + data)


def recv_message(sock):
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



def recv_request(conn):
    """A request: its length, then the JSON with the client's three fds (SCM_RIGHTS)."""
    fds = []
    buf = bytearray()
    need = None
    while need is None or len(buf) < need:
        data, ancdata, _, _ = conn.recvmsg(1 << 16, socket.CMSG_LEN(3 * 4))
        if not data:
            raise ValueError("connection closed")
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                k = len(payload) // 4
                fds += list(struct.unpack(f"{k}i", payload[:4 * k]))
        buf += data
        if need is None and len(buf) >= 4:
            (need,) = struct.unpack("!I", bytes(buf[:4]))
            need += 4
            if need > MAX_MESSAGE:
                raise ValueError("request too large")
    return json.loads(bytes(buf[4:need]).decode()), fds


def send_request(sock, request: dict) -> None:
    """Send a job request with this process's stdin, stdout and stderr (SCM_RIGHTS)."""
    data = json.dumps(request).encode()
    sock.sendmsg([struct.pack("!I", len(data)) + data],
                 [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("3i", 0, 1, 2))])
