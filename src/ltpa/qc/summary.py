"""What affects results without being an error, for a person to read: one short summary.

At 1,000 scans nobody opens 7,000 job logs, so everything that changes what the outputs
mean is gathered here, per scan and atlas: labels outside the region list (background),
the atlas's own labels used as the region list, regions of the list absent from the atlas,
atlases reoriented to the streamlines' voxel order, points outside the key or atlas grid
above ``OUTSIDE_SHARE``, b0 atlas indices outside the b0 volume, archived inputs. It comes
from the study check (``ltpa.study.study.Note``, before any job) and from the outputs' sidecars
(what the jobs found); the workflow prints it at the end of every run, ``ltpa status``
prints it, and the QC tables carry it as flags.
"""

from __future__ import annotations

from collections import defaultdict

from ..study import sidecar
from ..study.study import Note

OUTSIDE_SHARE = 0.01

# flag (QC column) for each kind of note
FLAGS = {
    "atlas labels not in the region list (background)": "labels_not_in_region_list",
    "no region list: the atlas's own labels": "atlas_own_labels",
    "regions of the list not in the atlas": "regions_not_in_atlas",
    "atlas reoriented": "atlas_reoriented",
    "points outside the key grid": "points_outside_key_grid",
    "points outside the atlas grid": "points_outside_atlas_grid",
    "b0 atlas indices outside the b0 volume": "b0_outside",
    "inputs archived, output kept": "archived",
    "4-D reference_volume: its grid (first three axes) is used": "reference_4d",
}


def job_notes(target) -> list[Note]:
    """What the job that made ``target`` found, from its sidecar (none if it has none).

    Parameters
    ----------
    target : ltpa.study.targets.Target
        One output of the study.

    Returns
    -------
    list of ltpa.study.study.Note
        The notes :func:`output_notes` finds for the target's output, scan and atlas.
    """
    return output_notes(target.output, target.scan.scan_id, target.atlas_key)


def output_notes(output, scan, atlas=None) -> list[Note]:
    """What the job that made ``output`` found, from its sidecar (none if it has none).

    Read from the sidecar's stats: for connection ids, labels outside the region list, the
    atlas's own labels as the region list, regions not in the atlas, a reoriented atlas
    and points outside the atlas grid; for a track dataset, points outside the key grid; for
    a QSDR atlas, b0 indices outside the b0 volume. Points outside a grid are noted only
    above ``OUTSIDE_SHARE`` of the points.

    Parameters
    ----------
    output : str or os.PathLike
        The output file, whose sidecar is read.
    scan : str
        The scan_id the notes name.
    atlas : str, optional
        The atlas key the notes name (track datasets' notes name none).

    Returns
    -------
    list of ltpa.study.study.Note
        The notes; empty when the output has no sidecar that can be read, or of another
        kind.
    """
    body, _ = sidecar.read(output)
    if body is None:
        return []
    stats = body.get("stats") or {}
    out = []
    kind = body.get("kind")
    if kind == "connection_ids":
        unknown = stats.get("labels_not_in_region_list") or []
        if unknown:
            out.append(Note(scan, atlas, "atlas labels not in the region list (background)",
                            len(unknown), ", ".join(map(str, unknown[:10]))))
        if stats.get("region_source") == "atlas":
            out.append(Note(scan, atlas, "no region list: the atlas's own labels",
                            stats.get("n_regions")))
        if stats.get("regions_not_in_atlas"):
            out.append(Note(scan, atlas, "regions of the list not in the atlas",
                            stats["regions_not_in_atlas"]))
        if stats.get("atlas_reoriented"):
            out.append(Note(scan, atlas, "atlas reoriented", detail=stats["atlas_reoriented"]))
        _outside(out, scan, atlas, "points outside the atlas grid",
                 stats.get("n_points_outside_grid"), stats.get("n_points"))
    elif kind == "track_dataset":
        _outside(out, scan, None, "points outside the key grid",
                 stats.get("n_points_outside_grid"), stats.get("n_points"))
    elif kind == "qsdr_atlas":
        outside = stats.get("outside_b0") or {}
        n = sum(v for v in outside.values() if isinstance(v, int))
        if n:
            out.append(Note(scan, atlas, "b0 atlas indices outside the b0 volume", n,
                            ", ".join(f"{k} {v}" for k, v in outside.items() if v)))
    return out


def _outside(out, scan, atlas, what, n_out, n_points):
    if isinstance(n_out, int) and isinstance(n_points, int) and n_points and \
            n_out > OUTSIDE_SHARE * n_points:
        out.append(Note(scan, atlas, what, n_out, f"{100 * n_out / n_points:.1f}% of the points"))


def collect(study) -> list[Note]:
    """Every note of the study: the jobs' (from sidecars) and the study check's.

    A note of the study check is left out when a job's note has the same scan, atlas and
    kind (the job ran since, so it has the fresher word).

    Parameters
    ----------
    study : ltpa.study.study.Study
        The study; its ``targets`` and ``notes`` are read.

    Returns
    -------
    list of ltpa.study.study.Note
        The jobs' notes in target order, then the study check's.
    """
    notes = []
    seen = set()
    for t in study.targets:
        for n in job_notes(t):
            seen.add((n.scan, n.atlas, n.what))
            notes.append(n)
    for n in study.notes:  # before any job; a job that ran since has the fresher word
        if (n.scan, n.atlas, n.what) not in seen:
            notes.append(n)
    return notes


def flags_by_scan_atlas(notes) -> dict:
    """{(scan, atlas or None): sorted flag names} for the QC tables.

    Parameters
    ----------
    notes : iterable of ltpa.study.study.Note
        The notes (e.g. :func:`collect`'s).

    Returns
    -------
    dict
        (scan, atlas or None) -> sorted list of flag names (``FLAGS``; a kind of note
        without one is its own flag).
    """
    out = defaultdict(set)
    for n in notes:
        out[(n.scan, n.atlas)].add(FLAGS.get(n.what, n.what))
    return {k: sorted(v) for k, v in out.items()}


def format_summary(notes, limit: int = 40) -> str:
    """A short table: per kind of note, how many scans; then up to ``limit`` detail lines.

    Parameters
    ----------
    notes : list of ltpa.study.study.Note
        The notes to summarize.
    limit : int, optional
        The most detail lines (one per note; default 40); a last line counts the rest.

    Returns
    -------
    str
        The summary, several lines without a final newline: per kind of note (most
        frequent first) its outputs and scans, then the details; one line saying there is
        nothing to report when ``notes`` is empty.
    """
    if not notes:
        return "ltpa summary: nothing that affects the results to report"
    by_what = defaultdict(list)
    for n in notes:
        by_what[n.what].append(n)
    lines = ["ltpa summary: what affects the results (scan, atlas, what, count):"]
    for what, items in sorted(by_what.items(), key=lambda kv: -len(kv[1])):
        scans = len({n.scan for n in items})
        lines.append(f"  {what}: {len(items)} output{'s' if len(items) > 1 else ''} of "
                     f"{scans} scan{'s' if scans > 1 else ''}")
    lines.append("  details:")
    for n in notes[:limit]:
        lines.append(f"    {n.line()}")
    if len(notes) > limit:
        lines.append(f"    ... and {len(notes) - limit} more (`ltpa status --notes` lists all, "
                     f"the QC summary table has them as flags)")
    return "\n".join(lines)


def format_failures(left_out: dict, failed, limit: int = 40) -> str:
    """What did not get built: the scans left out before any job (``--keep-going``:
    scan -> its problems) and the jobs that failed ((rule, output, log) triples); '' if none.

    Parameters
    ----------
    left_out : dict
        scan_id -> list of its problems (str), for the scans left out before any job.
    failed : iterable of tuple
        (rule, output, log) per failed job; ``log`` may be empty or None.
    limit : int, optional
        The most problem lines, and the most failed jobs, listed (default 40); a last line
        counts the rest.

    Returns
    -------
    str
        The report, several lines without a final newline; '' when nothing was left out
        and no job failed.
    """
    lines = []
    if left_out:
        lines.append(f"ltpa: {len(left_out)} scan{'s' if len(left_out) > 1 else ''} left out "
                     f"(their inputs failed the checks before any job; nothing of them was "
                     f"built):")
        shown = 0
        for scan, problems in left_out.items():
            lines.append(f"  scan {scan}:")
            for p in problems:
                if shown < limit:
                    lines.append(f"    - {p}")
                shown += 1
        if shown > limit:
            lines.append(f"    ... and {shown - limit} more problems (`ltpa validate` lists all)")
    failed = list(failed)
    if failed:
        lines.append(f"ltpa: {len(failed)} job{'s' if len(failed) > 1 else ''} failed (their "
                     f"outputs were not written; each log says why):")
        for rule, output, log in failed[:limit]:
            lines.append(f"  {rule}: {output}" + (f" (log: {log})" if log else ""))
        if len(failed) > limit:
            lines.append(f"  ... and {len(failed) - limit} more")
    return "\n".join(lines)
