"""The ``ltpa`` command line: the same package functions the workflow scripts call."""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .errors import LtpaError


def _index(args):
    from .jobs import job
    from .pipeline import index_only, index_scan

    with job(args.log, f"index {args.trk}"):
        if args.no_write:
            index_only(args.trk, space=args.space,
                       legacy_dsi2_mni_offset=args.legacy_dsi2_mni_offset,
                       reference_volume=args.reference_volume)
            return
        index_scan(args.trk, args.out, space=args.space,
                   legacy_dsi2_mni_offset=args.legacy_dsi2_mni_offset, scan_id=args.scan_id,
                   trk_out=args.trk_out, reference_volume=args.reference_volume)


def _label(args):
    from .jobs import job
    from .pipeline import label_scan

    with job(args.log, f"label {args.trk} {args.atlas}"):
        label_scan(args.trk, args.atlas, args.out, graphml_path=args.graphml,
                   labels_path=args.labels, start=args.start_at, scan_id=args.scan_id,
                   space=args.space, reference_volume=args.reference_volume)


def _demo(args):
    from .demo import make_demo, make_study_demo

    if args.small:
        path = make_demo(args.folder, n_scans=args.scans or 3, seed=args.seed)
    else:
        if args.scans is not None and args.scans < 4:
            raise LtpaError(f"--scans {args.scans}: the demo study needs at least 4 scans "
                            f"(2 per group); --small makes the 3-scan cube demo")
        path = make_study_demo(args.folder, seed=args.seed, n_scans=args.scans or 20,
                               n_streamlines=args.streamlines)
    print(path)


def _config(args) -> dict:
    """The workflow's config (``--configfile``, else this checkout's config/config.yaml) with
    the schema's defaults (``ltpa.config``), and the options given on the command line."""
    from .config import default_config, read_config

    config = read_config(args.configfile) if getattr(args, "configfile", None) else default_config()
    if args.data_root is not None:
        config["data_root"] = args.data_root
    if getattr(args, "legacy_dsi2_mni_offset", None) is not None:
        config["legacy_dsi2_mni_offset"] = args.legacy_dsi2_mni_offset
    if getattr(args, "start_at", None) is not None:
        config["connection_ids_start_at"] = args.start_at
    return config


def _validate(args):
    from .study import load_study

    study = load_study(args.local_data, _config(args))
    for text in study.warnings:
        print(f"warning: {text}", file=sys.stderr)
    for note in study.notes:
        print(f"note: {note.line()}", file=sys.stderr)
    n_labels = sum(len(s.labels) for s in study.scans)
    print(f"{args.local_data}: {len(study.scans)} scans, {n_labels} atlas labelings: valid")


def _status(args):
    from .status import NEEDS_WORK, format_status, study_status
    from .study import load_study

    config = _config(args)
    study = load_study(args.local_data, config, strict=False)
    for text in study.warnings:
        print(f"warning: {text}", file=sys.stderr)
    entries = study_status(study)
    print(format_status(entries, tsv=args.tsv))
    from .summary import collect, format_summary

    print(format_summary(collect(study), limit=10**9 if args.notes else 40), file=sys.stderr)
    for text in study.problems:
        print(f"problem: {text}", file=sys.stderr)
    if study.problems or any(e.status in NEEDS_WORK for e in entries):
        raise SystemExit(1)


def _query(args):
    import warnings
    from pathlib import Path

    from .reader import TrackDataSource, parse_ijk, parse_param, query_table

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # printed below, one line each
        source = TrackDataSource(args.local_data, config=_config(args))
    for text in source.warnings:
        print(f"warning: {text}", file=sys.stderr)
    if args.atlas is not None or args.param:
        source.change_atlas(args.atlas, **dict(parse_param(p) for p in args.param))
    roi = args.mask if args.mask is not None else [parse_ijk(t) for t in args.ijk]
    results = source.query_ijk(roi, every=args.every)
    print(query_table(source, results, top=args.top))
    if args.save_trk is not None:
        for q in results:
            q.save(Path(args.save_trk) / f"{q.scan_id}.trk")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="ltpa", description=__doc__)
    parser.add_argument("--version", action="version", version=f"ltpa {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("index", help="hash a .trk into a pickled TrackDataset (voxel -> streamlines)")
    p.add_argument("trk")
    p.add_argument("out", help="output .pkl")
    p.add_argument("--space", choices=["qsdr", "mni", "native"], default="qsdr")
    p.add_argument("--trk-out", help="also write the streamlines in the key grid to this .trk")
    p.add_argument("--legacy-dsi2-mni-offset", action="store_true",
                   help="qsdr keys with dsi2's 102 - j instead of 101 - j")
    p.add_argument("--scan-id")
    p.add_argument("--no-write", action="store_true", help="read and index only (for timing)")
    p.add_argument("--reference-volume", help="NIfTI grid of a .tck/.trx in native space")
    p.add_argument("--log", help="log file (default: stderr)")
    p.set_defaults(func=_index)

    p = sub.add_parser("label", help="connection id per streamline from an atlas in the trk's grid")
    p.add_argument("trk")
    p.add_argument("atlas", help="label NIfTI sharing the trk's grid")
    p.add_argument("out", help="output .npy")
    p.add_argument("--graphml", help="region list: the graphml's node ids")
    p.add_argument("--labels", help="region list: a label table (TSV/CSV index,name or a LUT)")
    p.add_argument("--start-at", type=int, choices=[0, 1], default=1)
    p.add_argument("--space", choices=["qsdr", "mni", "native"], default="qsdr",
                   help="grid of a .tck/.trx (the atlas must share it)")
    p.add_argument("--reference-volume", help="NIfTI grid of a .tck/.trx in native space")
    p.add_argument("--scan-id")
    p.add_argument("--log", help="log file (default: stderr)")
    p.set_defaults(func=_label)

    p = sub.add_parser("demo", help="write the built-in synthetic demo study: 20 scans in two "
                                    "groups with a planted effect (see its TRUTH.md)",
                       description="Write the synthetic demo study (no download): a brain-"
                                   "shaped QSDR mask, two Lausanne-like parcellations (83 and "
                                   "129 regions), scans of controls and patients whose "
                                   "streamlines between lh.superiorfrontal and lh.precuneus "
                                   "are 30% fewer in patients. FOLDER/TRUTH.md says what was "
                                   "planted; FOLDER/local_data.json is the study.")
    p.add_argument("folder", help="where to write the study (created if missing)")
    p.add_argument("--scans", type=int, default=None,
                   help="number of scans, half controls, half patients (default: 20; with "
                        "--small: 3)")
    p.add_argument("--streamlines", type=int, default=20_000,
                   help="streamlines per scan, about (+-10%% per scan) (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed: the same seed writes the same study (default: "
                        "%(default)s)")
    p.add_argument("--small", action="store_true",
                   help="write the tiny cube-region demo instead (3 scans of ~100 "
                        "streamlines; what many tests use) (default: off)")
    p.set_defaults(func=_demo)

    p = sub.add_parser("validate", help="check a local_data.json and report every problem")
    p.add_argument("local_data")
    p.add_argument("--data-root")
    p.set_defaults(func=_validate)

    p = sub.add_parser("status", help="per scan, which outputs are ok, missing or out of date "
                                      "(exit 1 when any is missing or out of date)")
    p.add_argument("local_data")
    p.add_argument("--data-root")
    p.add_argument("--configfile", help="the workflow config to compare with (default: "
                                        "config/config.yaml of this checkout)")
    p.add_argument("--legacy-dsi2-mni-offset", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--start-at", type=int, choices=[0, 1], default=None,
                   help="connection_ids_start_at")
    p.add_argument("--tsv", action="store_true", help="one tab-separated line per output")
    p.add_argument("--notes", action="store_true",
                   help="list every note of the summary (default: the first 40)")
    p.set_defaults(func=_status)

    p = sub.add_parser("query", help="per scan, the streamlines through a region of interest "
                                     "(one tab-separated row per scan)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("local_data", help="the study's local_data.json (its pkls made)")
    roi = p.add_mutually_exclusive_group(required=True)
    roi.add_argument("--ijk", action="append", metavar="I,J,K", default=[],
                     help="a voxel of the key grid (repeat for more)")
    roi.add_argument("--mask", metavar="ROI.nii.gz", default=None,
                     help="a 3-D NIfTI in the key grid; its nonzero voxels are the region")
    p.add_argument("--atlas", metavar="NAME", default=None,
                   help="track_labels name whose connection ids give the top connections")
    p.add_argument("--param", action="append", metavar="NAME=VALUE", default=[],
                   help="a track_labels parameter to match (repeat for more), e.g. scale=33")
    p.add_argument("--top", type=int, metavar="N", default=5, help="connections listed per scan")
    p.add_argument("--every", type=int, metavar="N", default=0,
                   help="keep every n-th selected streamline (0: all)")
    p.add_argument("--save-trk", metavar="FOLDER", default=None,
                   help="also write each scan's selected streamlines to FOLDER/<scan_id>.trk")
    p.add_argument("--data-root", metavar="FOLDER", default=None,
                   help="where relative paths of the JSON resolve (None: the JSON's folder)")
    p.add_argument("--configfile", metavar="CONFIG.yaml", default=None,
                   help="workflow config (None: config/config.yaml of this checkout)")
    p.set_defaults(func=_query)

    args = parser.parse_args(argv)
    try:
        args.func(args)
        sys.stdout.flush()
    except LtpaError as exc:
        print(f"ltpa error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `ltpa status | head`: the reader has what it wanted
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
