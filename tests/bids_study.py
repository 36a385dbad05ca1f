"""A BIDS-derivatives-shaped tree (QSIRecon-like) made from the demo study's own files.

sub-01 has two sessions (the demo's s01 and s04), sub-02 one, whose streamlines are the
demo's .tck (s03); each session has its two atlases as ``*_seg-scale33_dseg.nii.gz`` /
``*_seg-scale60_dseg.nii.gz``; the region lists are a BIDS ``atlas-scale33_dseg.tsv``
(``index``, ``name``, written from the demo's graphml) and the demo's scale60 graphml; a
``participants.tsv`` has group, age and sex (one ``n/a``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ltpa.demo.study import make_study_demo
from ltpa.formats.regions import region_names

# (subject, session) -> demo scan
SESSIONS = {("01", "1"): "s01", ("01", "2"): "s04", ("02", "1"): "s03"}
TRACKS = "sub-{subject}/ses-{session}/dwi/sub-{subject}_ses-{session}_desc-qsdr_streamlines"
ATLAS = "sub-{subject}/ses-{session}/dwi/sub-{subject}_ses-{session}_seg-{scale}_dseg.nii.gz"
PARTICIPANTS = [
    ("participant_id", "group", "age", "sex"),
    ("sub-01", "control", "34", "F"),
    ("sub-02", "patient", "51.5", "n/a"),
]

SPEC = """\
tracks:
  - sub-{subject}/ses-{session}/dwi/sub-{subject}_ses-{session}_desc-qsdr_streamlines.trk
  - sub-{subject}/ses-{session}/dwi/sub-{subject}_ses-{session}_desc-qsdr_streamlines.tck
space: qsdr
participants: participants.tsv
group_column: group
atlases:
  - name: Lausanne2008
    parameters: {scale: 33}
    volume: sub-{subject}/ses-{session}/dwi/sub-{subject}_ses-{session}_seg-scale33_dseg.nii.gz
    regions: atlas-scale33_dseg.tsv
  - name: Lausanne2008
    parameters: {scale: 60}
    volume: sub-{subject}/ses-{session}/dwi/sub-{subject}_ses-{session}_seg-scale60_dseg.nii.gz
    regions: atlas-scale60.graphml
outputs: prepared
metadata:
  study: bids-demo
  software: DSI Studio
  reconstruction: qsdr
"""


def make_demo_source(folder, n_streamlines=1500) -> Path:
    """The demo study (4 scans) the tree is made from; its local_data.json."""
    return make_study_demo(folder, n_scans=4, n_streamlines=n_streamlines)


def write_dseg_tsv(graphml, out) -> dict:
    """A BIDS dseg.tsv (index, name, abbreviation) with the graphml's regions and names."""
    names = region_names(graphml, "graphml")
    rows = ["index\tname\tabbreviation"] + [f"{i}\t{n}\t{n[:6]}" for i, n in
                                             sorted(names.items())]
    Path(out).write_text("\n".join(rows) + "\n")
    return names


def add_session(root, demo, subject, session, scan):
    """Copy demo scan ``scan``'s streamlines and atlases into sub-<subject>/ses-<session>."""
    demo = Path(demo)
    record = next(r for r in json.loads((demo / "local_data.json").read_text())
                  if r["scan_id"] == scan)
    wc = {"subject": subject, "session": session}
    trk = Path(record["trk_file"])
    suffix = ".tck" if trk.suffix == ".tck" else ".trk"
    dest = Path(root) / (TRACKS.format(**wc) + suffix)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(demo / trk, dest)
    for lab in record["track_labels"]:
        scale = f"scale{lab['parameters']['scale']}"
        shutil.copyfile(demo / lab["volume_path"], Path(root) / ATLAS.format(scale=scale, **wc))
    return dest


def make_bids_tree(root, demo) -> Path:
    """The tree under ``root`` (created) from the demo study folder ``demo``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    demo = Path(demo)
    for (subject, session), scan in SESSIONS.items():
        add_session(root, demo, subject, session, scan)
    write_dseg_tsv(demo / "atlases" / "scale33.graphml", root / "atlas-scale33_dseg.tsv")
    shutil.copyfile(demo / "atlases" / "scale60.graphml", root / "atlas-scale60.graphml")
    write_participants(root, PARTICIPANTS)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "ltpa demo as BIDS derivatives", "BIDSVersion": "1.9.0",
         "DatasetType": "derivative"}) + "\n")
    return root


def write_participants(root, rows):
    Path(root, "participants.tsv").write_text("\n".join("\t".join(r) for r in rows) + "\n")
