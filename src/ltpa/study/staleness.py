"""Is an output up to date? One answer, from what lives with the study, for every caller.

The workflow (``workflow/rules/common.smk``: which outputs Snakemake must rebuild) and
``ltpa status`` both call ``judge_all``. The answer depends only on the study's files: each
output, its ``.json`` sidecar (``ltpa.study.sidecar``: what it was built from) and the inputs the
JSON names now; never on Snakemake's records in the working directory, so it is the same
from any folder, as a module, on a cluster, or after the study was moved.

An output is

- ``missing``: not on disk;
- ``out of date`` when its sidecar is missing or invalid, or describes another file than
  the output on disk (outputs up to 256 MB are compared by content when their mtime moved:
  ``_same_output``); when an input path differs from the one it was built from (compared
  by real path, or relative to the output's folder for a study that was moved); when an
  input's size differs, or its modification time does unless its content hash (kept for
  inputs up to 1 MB) is unchanged; when a parameter differs (``JobSpec.params``: space,
  legacy offset, numbering, atlas key, the metadata a pkl carries); or when an input that
  is itself an output (a b0-mapped atlas) needs work;
- ``kept (inputs missing)``: on disk, built from the files the JSON names, which are gone
  (archived raw data): nothing can or need be done;
- ``ok`` otherwise.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ..io import atomic_open, read_regular
from . import sidecar

OK = "ok"
MISSING = "missing"
OUT_OF_DATE = "out of date"
KEPT = "kept (inputs missing)"
NEEDS_WORK = (MISSING, OUT_OF_DATE)


@dataclass
class Verdict:
    """The verdict on one output: its status and why.

    Attributes
    ----------
    status : str
        ``OK``, ``MISSING``, ``OUT_OF_DATE`` or ``KEPT``.
    reason : str
        Why, in words (empty when ok, or missing with nothing more to say).
    own : bool
        False when it needs work only because an input that is itself an output does.
    buildable : bool
        Whether every input is present or will be made.
    missing : tuple
        ``(field, path)`` of inputs that are not on disk and not made by the study, where
        the verdict names them.
    built_from : str or None
        For an input path that changed to a file that does not exist: the path it was
        built from.
    """

    status: str
    reason: str = ""
    own: bool = True  # out of date by itself (not only because an input output needs work)
    buildable: bool = True  # every input is present or will be made
    missing: tuple = ()  # (field, path) of inputs that are not on disk and not made
    built_from: str | None = None  # for a changed input path: the one it was built from


def _stat(path):
    """os.stat, or None for a file that is not there (or a path no file system can take:
    a NUL byte, a lone surrogate, which the JSON may hold)."""
    try:
        return os.stat(path)
    except (OSError, ValueError):  # ValueError: NUL; UnicodeEncodeError: surrogates
        return None


def _same_path(recorded: dict, path: str, output_folder: str) -> bool:
    if recorded.get("path") == path:
        return True
    try:
        if os.path.realpath(recorded["path"]) == os.path.realpath(path):
            return True
    except ValueError:  # a NUL byte or a lone surrogate: no such file, so not the same one
        pass
    rel = recorded.get("relpath")
    return rel is not None and os.path.normpath(os.path.join(output_folder, rel)) == \
        os.path.normpath(path)


class OutputHashes:
    """sha256 of outputs by file identity (device, inode, size, mtime_ns, ctime_ns), kept in
    the study's ``cache/outputs.json``: an output whose mtime moved since its sidecar was
    written (Snakemake touches outputs) is hashed once, not at every dry run. An edit
    changes ctime (which no user can set), so a cached answer never outlives the content."""

    MAX_BYTES = 64 << 20

    def __init__(self, cache_file=None):
        self.cache_file = cache_file
        self._known = {}
        self._used = {}
        if cache_file is not None:
            try:
                body = json.loads(read_regular(cache_file, self.MAX_BYTES))
            except (OSError, ValueError, RecursionError):
                body = None
            if isinstance(body, dict) and body.get("version") == 1 and \
                    isinstance(body.get("sha256"), dict):
                self._known = {k: v for k, v in body["sha256"].items()
                               if isinstance(k, str) and isinstance(v, str) and len(v) == 64}

    def sha256(self, path, st) -> str | None:
        """The sha256 of an output, from the cache when its identity is known, else read.

        A digest read here is cached only if the file's size, mtime and ctime are still
        those of ``st`` after the read.

        Parameters
        ----------
        path : str or os.PathLike
            The output.
        st : os.stat_result
            Its ``os.stat``, taken by the caller; its identity is the cache key.

        Returns
        -------
        str or None
            The hex digest, or None when the file is not a regular file, is larger than
            ``sidecar.OUTPUT_HASH_MAX_BYTES`` or cannot be read.
        """
        key = f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"
        digest = self._known.get(key)
        if digest is None:
            digest = sidecar.sha256_of(path, sidecar.OUTPUT_HASH_MAX_BYTES)
            if digest is None:
                return None
            again = _stat(path)  # changed while it was read: not cached
            if again is None or (again.st_mtime_ns, again.st_ctime_ns, again.st_size) != \
                    (st.st_mtime_ns, st.st_ctime_ns, st.st_size):
                return digest
        self._used[key] = digest
        return digest

    def save(self) -> None:
        """Keep the identities of this judgement's outputs (best effort)."""
        if self.cache_file is None or self._used == self._known:
            return
        try:
            with atomic_open(self.cache_file, "w") as fh:
                json.dump({"version": 1, "sha256": self._used}, fh)
        except (OSError, ValueError):
            pass


def _same_output(recorded: dict, path: str, st, hashes=None) -> bool:
    """Is the output on disk the one the sidecar was written for (Snakemake touches outputs)?

    An output of at most ``sidecar.OUTPUT_HASH_MAX_BYTES`` carries its sha256 in the
    sidecar: when its mtime is not the one recorded, its content is compared in full. A
    larger one (or a sidecar without the hash) is compared by size, and, when its mtime moved
    by more than ``TOUCH_WINDOW_NS``, by its first and last 4 KB.
    """
    if st.st_size != recorded["size"]:
        return False
    digest = recorded.get("sha256")
    if digest is not None:
        if st.st_mtime_ns == recorded["mtime_ns"]:
            return True
        hashes = hashes if hashes is not None else OutputHashes()
        return hashes.sha256(path, st) == digest
    moved = st.st_mtime_ns - recorded["mtime_ns"]
    if 0 <= moved <= sidecar.TOUCH_WINDOW_NS:
        return True
    return sidecar.fingerprint(path) == recorded["fingerprint"]


def _changed_file(fld, recorded: dict, path: str, st) -> str | None:
    if st.st_size != recorded["size"]:
        return f"{fld} {path!r} changed (size {recorded['size']} -> {st.st_size} bytes)"
    if st.st_mtime_ns != recorded["mtime_ns"]:
        digest = recorded.get("sha256")
        if digest is not None and sidecar.sha256_of(path) == digest:
            return None  # touched, same content
        return f"{fld} {path!r} changed (modified since the output was built)"
    return None


def judge(spec, produced: dict, verdicts: dict, hashes=None) -> Verdict:
    """The verdict on ``spec.output``; ``produced`` maps output paths to their specs.

    An input that is itself an output of the study is judged first (recursively), and an
    output is judged once: later calls return the verdict recorded in ``verdicts``.

    Parameters
    ----------
    spec : ltpa.study.spec.JobSpec
        The job that makes the output.
    produced : dict
        Output path (str) -> the JobSpec that makes it, for every output of the study: an
        input among them counts as present and is judged too.
    verdicts : dict
        Output path -> Verdict of the outputs judged so far; updated in place.
    hashes : OutputHashes, optional
        The output hash cache (None: a fresh one, without a file).

    Returns
    -------
    Verdict
        ``MISSING``, ``OUT_OF_DATE``, ``KEPT`` or ``OK``, with the reason and which inputs
        are missing.
    """
    out = spec.output
    if out in verdicts:
        return verdicts[out]
    verdicts[out] = Verdict(OK)  # a guard against cycles (the study check forbids them)
    verdicts[out] = v = _judge(spec, produced, verdicts, hashes)
    return v


def _judge(spec, produced, verdicts, hashes=None) -> Verdict:
    missing = []
    for fld, path in spec.inputs.items():
        if path is not None and path not in produced and _stat(path) is None:
            missing.append((fld, path))
    out_st = _stat(spec.output)
    if out_st is None:
        if missing:
            names = ", ".join(f"{f} {p!r}" for f, p in missing)
            return Verdict(MISSING, f"cannot be built: {names} missing", buildable=False,
                           missing=tuple(missing))
        return Verdict(MISSING)
    body, why = sidecar.read(spec.output)
    if body is None:
        if missing:
            return Verdict(KEPT, f"{why}; its inputs are missing")
        if why == sidecar.NO_SIDECAR:  # e.g. made by dsi2 (ltpa.study.sniff: its format)
            why += " (made by another tool?): it will be rebuilt, replacing it"
        return Verdict(OUT_OF_DATE, f"{why}")
    if not _same_output(body["output"], spec.output, out_st, hashes):
        return Verdict(OUT_OF_DATE, "the output on disk is not the one its sidecar describes "
                                    "(it was replaced or changed)", buildable=not missing)
    folder = os.path.dirname(spec.output)
    # a null record (or input) is no input: one that is null on both sides is the same
    recorded = {k: v for k, v in body["inputs"].items() if v is not None}
    given = {k: v for k, v in spec.inputs.items() if v is not None}
    # inputs: the same files as when it was built?
    for fld in sorted(set(recorded) | set(given)):
        rec, path = recorded.get(fld), given.get(fld)
        if path is None:
            return Verdict(OUT_OF_DATE, f"{fld} was {rec['path']!r}, now not given",
                           buildable=not missing)
        if rec is None:
            return Verdict(OUT_OF_DATE, f"{fld} was not used, now {path!r}",
                           buildable=not missing)
        if not _same_path(rec, path, folder):
            why = f"{fld} was {rec['path']!r}, now {path!r}"
            if (fld, path) in missing:
                return Verdict(OUT_OF_DATE, why + ", which does not exist", buildable=False,
                               missing=((fld, path),), built_from=rec["path"])
            return Verdict(OUT_OF_DATE, why, buildable=not missing, missing=tuple(missing))
    if missing:
        names = ", ".join(f"{f} {p!r}" for f, p in missing)
        return Verdict(KEPT, f"{names} missing", missing=tuple(missing))
    for fld, path in given.items():
        if path in produced:
            up = judge(produced[path], produced, verdicts, hashes)
            if up.status in NEEDS_WORK:
                return Verdict(OUT_OF_DATE, f"its input {fld} {path!r} is {up.status}",
                               own=False, buildable=up.buildable)
        changed = _changed_file(fld, recorded[fld], path, _stat(path))
        if changed:
            return Verdict(OUT_OF_DATE, changed)
    params = spec.params()
    was = body["params"]
    diffs = [_param_change(k, was.get(k), params[k]) for k in sorted(params)
             if was.get(k) != params[k]]
    if diffs:
        return Verdict(OUT_OF_DATE, "; ".join(diffs))
    return Verdict(OK)


def _param_change(key, was, now) -> str:
    if key == "metadata_sha256":
        return "the scan's metadata changed (the pkl carries it)"
    return f"{key} was {was!r}, now {now!r}"


def judge_all(specs, hashes: OutputHashes | None = None) -> list[Verdict]:
    """The verdict on each spec's output, in order (``hashes``: the study's output hash
    cache, saved after).

    Parameters
    ----------
    specs : list of ltpa.study.spec.JobSpec
        The jobs of every output of the study (their inputs made by other specs are judged
        through them).
    hashes : OutputHashes, optional
        The study's output hash cache, saved (best effort) once every output is judged;
        None: a fresh one without a file.

    Returns
    -------
    list of Verdict
        One per spec, in the order of ``specs``.
    """
    produced = {s.output: s for s in specs}
    verdicts: dict = {}
    hashes = hashes if hashes is not None else OutputHashes()
    out = [judge(s, produced, verdicts, hashes) for s in specs]
    hashes.save()
    return out
