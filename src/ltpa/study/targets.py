"""Scan records -> the files the workflow must make, with their inputs and atlas keys.

The outputs are wherever local_data.json says: each rule has one wildcard, ``{path}``, the
output's absolute path, constrained by a short regex of its outputs' templates
(``path_templates``; ``exact_paths_regex`` where a template would also match another file of
the study). ``by_output`` finds a job's target from its rule and path. An output keyed by a
second name (a labeling's atlas, a scalar) carries that name as ``Target.atlas_key``, taken
from its file name (``atlas_key_of``): the QC and report group outputs by it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..prepared.patterns import patterns_path
from .localdata import LabelRecord, ScanRecord
from .spec import JobSpec

RULE_INDEX = "index_streamlines"
RULE_EXPORT = "export_key_trk"
RULE_LABEL = "label_streamlines"
RULE_MAP_B0 = "map_b0_atlas"
RULE_SCALARS = "average_track_scalars"
RULE_PATTERNS = "termination_patterns"
# rules whose outputs are keyed by scan and a second name (the atlas or scalar's key)
KEYED_RULES = (RULE_LABEL, RULE_MAP_B0, RULE_SCALARS, RULE_PATTERNS)
SEPARATORS = "_-. "
# fields of the scan itself (not of one of its track_labels / track_scalars entries)
SCAN_FIELDS = ("trk_file", "fib_file", "reference_volume", "pkl_path", "pkl_trk_path")
STEP_OF_RULE = {RULE_INDEX: "index", RULE_EXPORT: "export", RULE_LABEL: "label",
                RULE_MAP_B0: "map_b0", RULE_SCALARS: "scalars", RULE_PATTERNS: "patterns"}


@dataclass
class Target:
    """One output the workflow must make: its rule, scan, path and inputs.

    Attributes
    ----------
    rule : str
        The rule that makes it (``RULE_INDEX``, ``RULE_EXPORT``, ``RULE_LABEL``,
        ``RULE_MAP_B0``, ``RULE_SCALARS`` or ``RULE_PATTERNS``).
    scan : ltpa.study.localdata.ScanRecord
        The scan it belongs to.
    output : pathlib.Path
        The output's absolute path.
    inputs : dict
        Input field name -> pathlib.Path, or None for an optional input that is not given.
    label : ltpa.study.localdata.LabelRecord or None
        The ``track_labels`` entry it comes from (label, map_b0 and patterns targets).
    scalar : ltpa.study.localdata.ScalarRecord or None
        The ``track_scalars`` entry it comes from (scalars targets).
    atlas_key : str or None
        For keyed rules, the atlas's or scalar's name (``atlas_key_of``).
    radius : int
        For termination patterns, the sphere's radius (voxels).
    """

    rule: str
    scan: ScanRecord
    output: Path
    inputs: dict  # field name -> Path or None
    label: LabelRecord | None = None
    scalar: object = None
    atlas_key: str | None = None  # keyed rules: the atlas or scalar's name (atlas_key_of)
    radius: int = 0  # termination patterns: the sphere's radius

    @property
    def output_field(self) -> str:
        """The JSON field that names this output."""
        if self.rule == RULE_INDEX:
            return "pkl_path"
        if self.rule == RULE_EXPORT:
            return "pkl_trk_path"
        if self.rule == RULE_MAP_B0:
            return "volume_path"
        if self.rule == RULE_PATTERNS:
            return "patterns"
        return "numpy_path"

    def spec(self, config: dict):
        """The job that makes this target (``ltpa.study.spec.JobSpec``), under ``config`` (with the
        schema's defaults: ``ltpa.study.config``).

        Parameters
        ----------
        config : dict
            The study's config with defaults; ``legacy_dsi2_mni_offset`` and
            ``connection_ids_start_at`` are read.

        Returns
        -------
        ltpa.study.spec.JobSpec
            The job: the rule's step, the output and the given inputs as str, the scan's id
            and space, the atlas key (label and patterns jobs), the scan's metadata (index
            jobs) and the radius (patterns jobs); it writes a sidecar.
        """
        return JobSpec(
            STEP_OF_RULE[self.rule], str(self.output),
            {k: str(p) for k, p in self.inputs.items() if p is not None},
            scan_id=self.scan.scan_id,
            atlas=self.atlas_key if self.rule in (RULE_LABEL, RULE_PATTERNS) else None,
            space=self.scan.space,
            legacy_dsi2_mni_offset=config["legacy_dsi2_mni_offset"],
            start=config["connection_ids_start_at"],
            properties=self.scan.metadata if self.rule == RULE_INDEX else None,
            radius=self.radius,
        )

    def where(self, fld=None):
        """Where a problem of this target is, for its message: the scan, and the field.

        Parameters
        ----------
        fld : str, optional
            A field of the scan (``trk_file``, ...), of the target's ``track_labels`` or
            ``track_scalars`` entry (``numpy_path``, ...; named with the entry's position),
            or "patterns".

        Returns
        -------
        str
            E.g. ``scan #0 ('s1'), field 'track_labels[1].volume_path'``.
        """
        if fld in SCAN_FIELDS or not fld:
            return self.scan.where(fld)
        if fld == "patterns":  # not a JSON field: the patterns beside the entry's npy
            return (self.scan.where(f"track_labels[{self.label.position}].numpy_path")
                    + f" (its termination patterns at radius {self.radius})")
        if self.label is not None:
            fld = f"track_labels[{self.label.position}].{fld}"
        elif self.scalar is not None:
            fld = f"track_scalars[{self.scalar.position}].{fld}"
        return self.scan.where(fld)


def atlas_key_of(path: str, scan_id: str, known: str | None = None) -> str:
    """The name an output keyed by atlas (or scalar) is known by, from its file name.

    ``known`` where it occurs in the file name (a b0-mapped atlas takes its labeling's key);
    else the part of the stem (without .npy) after the scan id, else the part before it
    (separators ``_-. `` around the scan id dropped), else the whole stem.

    Parameters
    ----------
    path : str
        The output's path ("/"-separated).
    scan_id : str
        The scan's id, looked for (last occurrence) in the file's stem.
    known : str, optional
        A key to take when it occurs in the file name.

    Returns
    -------
    str
        The key, e.g. "scale33" for ``s1/s1_scale33.npy``; the stem itself when the scan id
        is not in it or is all of it.
    """
    base = path.rfind("/") + 1
    if known and path.rfind(known, base) >= 0:
        return known
    end = len(path) - 4 if path.endswith(".npy") else len(path)
    stem = path[base:end]
    i = stem.rfind(scan_id)
    if i < 0:
        return stem
    after = stem[i + len(scan_id):].lstrip(SEPARATORS)
    if after:
        return after
    before = stem[:i].rstrip(SEPARATORS)
    return before or stem


def pattern_selection(config: dict | None) -> tuple[list, list]:
    """(radii, atlases) of config ``patterns``; no config: none.

    Parameters
    ----------
    config : dict or None
        The study's config with defaults (its ``patterns`` entry has ``radii`` and,
        optionally, ``atlases``).

    Returns
    -------
    radii : list
        The radii (voxels) to make patterns at; empty: no patterns.
    atlases : list of dict
        The selected atlases ({"name", optionally "parameters"}); empty: every atlas.
    """
    if config is None:
        return [], []
    chosen = config["patterns"]
    return list(chosen["radii"]), list(chosen["atlases"]) if "atlases" in chosen else []


def _atlas_matches(lab: LabelRecord, atlases: list) -> bool:
    """An entry matches a selection when the names are equal and each selected parameter
    has the selected value (``TrackDataSource.change_atlas``); no selection: every entry."""
    if not atlases:
        return True
    params = lab.parameters if isinstance(lab.parameters, dict) else {}
    for sel in atlases:
        wanted = sel["parameters"] if "parameters" in sel else {}
        if sel["name"] == lab.name and all(k in params and params[k] == v
                                           for k, v in wanted.items()):
            return True
    return False


def build_targets(scans: list[ScanRecord], config: dict | None = None) -> list[Target]:
    """Every output the JSON names, as a Target; with ``config``, also the termination
    patterns its ``patterns`` option asks for (beside each selected npy, per radius).

    Patterns are made only for scans with a ``pkl_path``. A b0-space atlas is mapped once
    per scan and volume path. Every target but the map_b0 ones gets the scan's
    ``reference_volume`` among its inputs when the scan has one.

    Parameters
    ----------
    scans : list of ltpa.study.localdata.ScanRecord
        The study's scans.
    config : dict, optional
        The study's config with defaults; None: no termination patterns.

    Returns
    -------
    list of Target
        Per scan in order: its index and export targets, then per track_labels entry its
        label target, its patterns targets and (once per volume) its map_b0 target, then
        its scalars targets.
    """
    radii, atlases = pattern_selection(config)
    out = []
    for rec in scans:
        if rec.pkl_path is not None:
            out.append(Target(RULE_INDEX, rec, rec.pkl_path, {"trk_file": rec.trk_file}))
        if rec.pkl_trk_path is not None:
            out.append(Target(RULE_EXPORT, rec, rec.pkl_trk_path, {"trk_file": rec.trk_file}))
        mapped = set()
        for lab in rec.labels:
            label = Target(RULE_LABEL, rec, lab.numpy_path,
                           {"trk_file": rec.trk_file, "volume_path": lab.volume_path,
                            "graphml_path": lab.graphml_path, "labels_path": lab.labels_path},
                           label=lab)
            label.atlas_key = atlas_key_of(str(lab.numpy_path), rec.scan_id)
            out.append(label)
            if rec.pkl_path is not None and radii and _atlas_matches(lab, atlases):
                for r in radii:
                    out.append(Target(
                        RULE_PATTERNS, rec, patterns_path(lab.numpy_path, r),
                        {"pkl_path": rec.pkl_path, "numpy_path": lab.numpy_path}, label=lab,
                        atlas_key=label.atlas_key, radius=int(r)))
            if lab.b0_volume_path is not None and lab.volume_path not in mapped:
                mapped.add(lab.volume_path)
                t = Target(RULE_MAP_B0, rec, lab.volume_path,
                           {"b0_volume_path": lab.b0_volume_path, "fib_file": rec.fib_file},
                           label=lab)
                t.atlas_key = atlas_key_of(str(lab.volume_path), rec.scan_id,
                                           label.atlas_key)
                out.append(t)
        for sc in rec.scalars:
            t = Target(RULE_SCALARS, rec, sc.numpy_path,
                       {"txt_path": sc.txt_path, "trk_file": rec.trk_file}, scalar=sc)
            t.atlas_key = atlas_key_of(str(sc.numpy_path), rec.scan_id)
            out.append(t)
    for t in out:
        if t.rule != RULE_MAP_B0 and t.scan.reference_volume is not None:
            t.inputs["reference_volume"] = t.scan.reference_volume
    return out


def path_templates(targets: list[Target], rule: str) -> str:
    """A short regex for the ``{path}`` wildcard of ``rule``: the templates of its outputs.

    Each output's path with its scan id (every occurrence) made ``[^/]+`` and, for keyed
    rules, its atlas key made an alternation of the rule's keys. A study laid out by scan
    (``<study>/<scan>/<scan>.pkl``, ``<study>/<scan>/scale33.npy``) has a handful of
    templates, so the regex has a constant size and each match costs O(path length), not
    O(outputs): Snakemake embeds constraints in every job's pattern, so an alternation of
    every output path made the dry run O(N^2). ``exact_paths_regex`` is the fallback when
    templates would also match another file of the study (``check_templates``).

    Parameters
    ----------
    targets : list of Target
        The study's targets (those of other rules are ignored).
    rule : str
        The rule whose outputs the regex describes.

    Returns
    -------
    str
        The templates' regexes joined with ``|`` (sorted, not anchored); ``(?!)``, which
        matches nothing, when the rule has no targets.
    """
    mine = [t for t in targets if t.rule == rule]
    if not mine:
        return "(?!)"  # a rule with no targets matches nothing
    keys = sorted({t.atlas_key for t in mine if t.atlas_key}, key=len, reverse=True)
    key_re = "(?:" + "|".join(re.escape(k) for k in keys) + ")" if keys else None
    templates = set()
    for t in mine:
        path = str(t.output)
        folder, name = path.rsplit("/", 1) if "/" in path else ("", path)
        key = t.atlas_key if rule in KEYED_RULES else None
        if key and key in name:
            i = name.rfind(key)
            name_parts = [(name[:i], True), (None, False), (name[i + len(key):], True)]
        else:
            name_parts = [(name, True)]
        out = []
        for text, literal in [(folder + "/" if "/" in path else "", True)] + name_parts:
            if not literal:
                out.append(key_re)
                continue
            pieces = text.split(t.scan.scan_id)
            out.append("[^/]+".join(re.escape(p) for p in pieces))
        templates.add("".join(out))
    return "|".join(sorted(templates))


def exact_paths_regex(paths) -> str:
    """A regex matching exactly ``paths``, as a trie (each match costs O(path length)).

    Parameters
    ----------
    paths : collection of str
        The paths to match.

    Returns
    -------
    str
        The regex (not anchored: match it whole, e.g. with ``fullmatch`` or a ``$``);
        ``(?!)``, which matches nothing, when ``paths`` is empty.
    """
    trie: dict = {}
    for p in paths:
        node = trie
        for ch in p:
            node = node.setdefault(ch, {})
        node[""] = True

    def emit(node) -> str:
        alts = []
        end = node.get("") is True
        for ch in sorted(k for k in node if k != ""):
            alts.append(re.escape(ch) + emit(node[ch]))
        if end:
            alts.append("")
        if not alts:
            return ""
        if len(alts) == 1:
            return alts[0]
        return "(?:" + "|".join(alts) + ")"

    return emit(trie) if paths else "(?!)"


def check_templates(constraints: dict, produced: dict, other_paths) -> list[str]:
    """Rules whose template regex also matches a path it does not make.

    ``produced``: output path -> rule; ``other_paths``: every other path the workflow asks
    Snakemake about (inputs, QC files). Returns the rules that must use exact paths.

    Parameters
    ----------
    constraints : dict
        Rule -> its ``{path}`` regex (e.g. from :func:`path_templates`).
    produced : dict
        Output path -> the rule that makes it.
    other_paths : iterable of str
        Every other path the workflow asks Snakemake about.

    Returns
    -------
    list of str
        The rules, sorted, whose regex matches (from the start to the end) a path that
        another rule makes or that no rule makes.
    """
    compiled = {r: re.compile(f"(?:{c})$") for r, c in constraints.items()}
    loose = set()
    for path in list(produced) + list(other_paths):
        owner = produced.get(path)
        for rule, rx in compiled.items():
            if rule != owner and rx.match(path):
                loose.add(rule)
    return sorted(loose)


def ids_alternation(values) -> str:
    """A regex matching exactly ``values`` (longest first; '' allowed if present; none: nothing).

    Parameters
    ----------
    values : iterable of str
        The values, e.g. scan ids.

    Returns
    -------
    str
        The escaped values joined with ``|`` (``(?:)`` for the empty value); ``(?!)``,
        which matches nothing, when there are none.
    """
    vals = set(values)
    if not vals:
        return "(?!)"
    alts = [re.escape(v) for v in sorted(vals - {""}, key=len, reverse=True)]
    if "" in vals:
        alts.append("(?:)")  # the empty value, spelled out (an empty constraint means none)
    return "|".join(alts)


def by_output(targets: list[Target]) -> dict:
    """(rule, output path) -> Target.

    Parameters
    ----------
    targets : list of Target
        The study's targets.

    Returns
    -------
    dict
        (rule, str(output)) -> its Target (the last one, should two share a key).
    """
    table = {}
    for t in targets:
        table[(t.rule, str(t.output))] = t
    return table
