"""One description of a job: what to make, from which files, with which parameters.

A ``JobSpec`` is built once per output (from a workflow target, or from the command line)
and passed down whole: the runner (``ltpa.jobs.pipeline.run``), the steps, the sidecar and the
staleness check all read the same fields, so a parameter exists in one place.
``params()`` is what, besides the input files, decides an output's content: the job
records it in the sidecar and ``ltpa.study.staleness`` compares it with the study's now.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields

STEPS = ("index", "export", "label", "map_b0", "scalars", "patterns", "qc_scan")
# the sidecar kind each step writes
KIND = {"index": "track_dataset", "export": "key_trk", "label": "connection_ids",
        "map_b0": "qsdr_atlas", "scalars": "track_scalars",
        "patterns": "termination_patterns", "qc_scan": None}  # qc_scan: no sidecar
# input fields that are optional (absent: not an input)
OPTIONAL = ("graphml_path", "labels_path", "reference_volume")


@dataclass(frozen=True)
class JobSpec:
    """One job: the step that makes an output, its input files and its parameters (frozen).

    Attributes
    ----------
    step : str
        One of ``STEPS``: "index", "export", "label", "map_b0", "scalars", "patterns",
        "qc_scan" (a scan's QC table and length histogram, ``ltpa.qc.tables``).
    output : str
        The output's absolute path.
    inputs : dict
        Input field name (e.g. "trk_file") -> absolute path (str).
    scan_id : str or None
        The scan the output belongs to.
    atlas : str or None
        The atlas key of a label or patterns job.
    space : str
        The streamlines' declared space (default "qsdr").
    legacy_dsi2_mni_offset : bool
        Make qsdr keys with dsi2's j -> 102 - j instead of 101 - j (config
        ``legacy_dsi2_mni_offset``).
    start : int
        The number of the first connection id, 0 or 1 (config ``connection_ids_start_at``;
        default 1).
    properties : dict or None
        The scan's metadata, carried in the pkl (index jobs).
    radius : int
        The sphere's radius in voxels (patterns jobs).
    threads : int
        Kernel threads of a patterns job; not a parameter (it does not change the output).
    sidecar : bool
        Whether the job writes the output's sidecar.
    extra : dict or None
        What one step needs besides these fields: for "qc_scan", ``lengths`` (the length
        histogram's path), ``atlases`` ([atlas key, npy path] pairs), ``trk_file`` (read
        for the lengths when on disk, else None) and ``kept`` (outputs kept with their
        inputs archived).

    Raises
    ------
    ValueError
        If ``step`` is not one of ``STEPS``.
    """

    step: str
    output: str  # absolute path
    inputs: dict = field(default_factory=dict)  # field name -> absolute path (str)
    scan_id: str | None = None
    atlas: str | None = None  # the npy's atlas key (label) or the scalar's name
    space: str = "qsdr"
    legacy_dsi2_mni_offset: bool = False
    start: int = 1  # connection_ids_start_at
    properties: dict | None = None  # the scan's metadata, carried in the pkl
    radius: int = 0  # patterns: the sphere's radius (voxels)
    threads: int = 1  # patterns: kernel threads; decides nothing of the output (not a param)
    sidecar: bool = True
    extra: dict | None = None  # step-specific values (qc_scan)

    def __post_init__(self):
        if self.step not in STEPS:
            raise ValueError(f"unknown step {self.step!r}")

    @property
    def kind(self) -> str:
        """The sidecar kind this job's step writes (``KIND``), e.g. "track_dataset" (None
        for "qc_scan", which writes none)."""
        return KIND[self.step]

    def params(self) -> dict:
        """Everything besides the input files that decides the output's content.

        Returns
        -------
        dict
            "scan_id" always; "space" for index, export, label and scalars jobs;
            "legacy_dsi2_mni_offset" (bool) for index and export; "metadata_sha256"
            (``metadata_hash`` of the properties) for index; "connection_ids_start_at" and
            "atlas" for label; "radius" and "atlas" for patterns. ``threads`` never.
        """
        out = {"scan_id": self.scan_id}
        if self.step in ("index", "export", "label", "scalars"):
            out["space"] = self.space
        if self.step in ("index", "export"):
            out["legacy_dsi2_mni_offset"] = bool(self.legacy_dsi2_mni_offset)
        if self.step == "index":
            out["metadata_sha256"] = metadata_hash(self.properties or {})
        if self.step == "label":
            out["connection_ids_start_at"] = int(self.start)
            out["atlas"] = self.atlas
        if self.step == "patterns":
            out["radius"] = int(self.radius)
            out["atlas"] = self.atlas
        return out

    def field_of(self, text: str) -> str | None:
        """The input field whose file ``text`` (an error message) names, if any.

        Parameters
        ----------
        text : str
            An error message; a file counts as named when its path's ``repr`` (quoted)
            occurs in it.

        Returns
        -------
        str or None
            The field (e.g. "trk_file"); of several, the one with the longest path; None
            when no input's path occurs.
        """
        best = None
        for fld, path in self.inputs.items():
            if path and repr(str(path)) in text and (best is None
                                                     or len(path) > len(self.inputs[best])):
                best = fld
        return best

    def where(self, text: str = "") -> str:
        """'scan 's1', field 'trk_file'' for an error about this job (the field when known).

        Parameters
        ----------
        text : str, optional
            The error's message, to find the input field it concerns (``field_of``).

        Returns
        -------
        str
            The scan (when known), the atlas (label and patterns jobs) and the field (when
            ``text`` names an input's file), joined with ", "; '' when none is known.
        """
        parts = []
        if self.scan_id is not None:
            parts.append(f"scan {self.scan_id!r}")
        if self.atlas is not None and self.step in ("label", "patterns"):
            parts.append(f"atlas {self.atlas!r}")
        fld = self.field_of(text)
        if fld:
            parts.append(f"field {fld!r}")
        return ", ".join(parts)

    def to_json(self) -> str:
        """The spec as compact JSON text: one key per field, values as they are.

        Returns
        -------
        str
            A JSON object with every field of the spec (no spaces), which ``from_json``
            reads back.
        """
        # the fields as they are (asdict() deep-copies: slow for a study's thousands of jobs)
        return json.dumps({f: getattr(self, f) for f in _FIELDS}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "JobSpec":
        """The spec that ``to_json`` wrote.

        Parameters
        ----------
        text : str
            JSON text of an object whose keys are JobSpec fields.

        Returns
        -------
        JobSpec

        Raises
        ------
        ValueError
            If the text is not valid JSON or names an unknown step.
        TypeError
            If it is not an object of JobSpec fields (a key that is no field, or no step or
            output).
        """
        return cls(**json.loads(text))


_FIELDS = tuple(f.name for f in fields(JobSpec))


def metadata_hash(properties: dict) -> str:
    """The sha256 of a scan's metadata as canonical JSON (sorted keys, no spaces).

    Values JSON cannot hold are written with ``str``. A pkl's sidecar records it, so a
    change of the metadata a pkl carries makes the pkl out of date.

    Parameters
    ----------
    properties : dict
        The scan's metadata.

    Returns
    -------
    str
        The hex digest (64 characters).
    """
    text = json.dumps(properties, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()
