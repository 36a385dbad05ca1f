"""Run one command as the benchmarks measure it: wall time, CPU time and peak RSS.

Shared by run.py and study_scale.py (standard library only; the scripts run from this folder,
so ``from measure import measure`` finds it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time

TIME_BIN = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


def measure(argv, timeout, cwd=None, env=None, stdout_path=None) -> dict:
    """Run argv (stdin closed, in a new session); dict(rc, wall, cpu, rss_mb, stdout, stderr,
    timed_out). ``stdout_path``: the command's stdout goes to that file ("" returned).

    Wall = time.perf_counter() around the process; CPU = user + system of the process and
    all it waited for; peak RSS = GNU time's %M when /usr/bin/time exists, else wait4's
    ru_maxrss. After ``timeout`` seconds the process group gets SIGTERM, then SIGKILL 5 s
    later.
    """
    with tempfile.TemporaryDirectory(prefix="ltpa_bench_") as td:
        tfile = os.path.join(td, "time.txt")
        full = ([TIME_BIN, "-f", "%e %M %U %S", "-o", tfile] if TIME_BIN else []) + list(argv)
        fo = open(stdout_path or os.path.join(td, "out"), "w+")
        fe = open(os.path.join(td, "err"), "w+")
        timed_out = []
        t0 = time.perf_counter()
        p = subprocess.Popen(full, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL, cwd=cwd,
                             env=env, start_new_session=True)

        def _kill():
            timed_out.append(True)
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(p.pid, sig)  # the group of the process started here
                except ProcessLookupError:
                    return
                if sig == signal.SIGTERM:
                    time.sleep(5)

        timer = threading.Timer(timeout, _kill)
        timer.start()
        try:
            _, status, ru = os.wait4(p.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - t0
        p.returncode = rc = os.waitstatus_to_exitcode(status)
        rss_kb = ru.ru_maxrss
        cpu = ru.ru_utime + ru.ru_stime
        if TIME_BIN and os.path.exists(tfile):
            lines = [ln for ln in open(tfile).read().splitlines() if ln.strip()]
            try:
                _e, m, u, sy = lines[-1].split()
                rss_kb = int(m)
                cpu = float(u) + float(sy)
            except (IndexError, ValueError):
                pass
        fo.seek(0)
        fe.seek(0)
        out = "" if stdout_path else fo.read()
        err = fe.read()
        fo.close()
        fe.close()
    return dict(rc=rc, wall=wall, cpu=cpu, rss_mb=rss_kb / 1024.0, stdout=out, stderr=err,
                timed_out=bool(timed_out))
