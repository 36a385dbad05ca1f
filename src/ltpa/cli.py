"""The ltpa command line: the same package functions the workflow jobs call."""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .clihelp import HelpFormatter
from .errors import LtpaError

# Each command imports what it runs, inside its function: importing every command's modules
# here would load numba, nibabel and networkx (~0.6 s measured) for `ltpa --help` and
# `ltpa status`, which need none of them.


def _index(args):
    from .jobs.job import job
    from .jobs.pipeline import index_only, index_scan

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
    from .jobs.job import job
    from .jobs.pipeline import label_scan

    with job(args.log, f"label {args.trk} {args.atlas}"):
        label_scan(args.trk, args.atlas, args.out, graphml_path=args.graphml,
                   labels_path=args.labels, start=args.start_at, scan_id=args.scan_id,
                   space=args.space, reference_volume=args.reference_volume)


def _demo(args):
    from .demo.small import make_demo
    from .demo.study import make_study_demo

    if args.small:
        path = make_demo(args.folder, n_scans=args.scans or 3, seed=args.seed)
    else:
        repeats = args.repeats
        if repeats < 1:
            raise LtpaError(f"--repeats {repeats}: expected a number of scans per subject >= 1")
        n_scans = args.scans or (20 if repeats == 1 else 10 * repeats)
        if n_scans % repeats or n_scans // repeats < 4:
            raise LtpaError(f"--scans {n_scans} --repeats {repeats}: the demo study needs at "
                            f"least 4 subjects (2 per group), each with {repeats} scans, so "
                            f"--scans must be a multiple of {repeats} and >= {4 * repeats}; "
                            f"--small makes the 3-scan cube demo")
        path = make_study_demo(args.folder, seed=args.seed, n_scans=n_scans,
                               n_streamlines=args.streamlines, repeats=repeats)
    print(path)


def _config(args) -> dict:
    """The workflow's config (``--configfile``, else this checkout's config/config.yaml) with
    the schema's defaults (``ltpa.study.config``), and the options given on the command line."""
    from .study.config import default_config, read_config

    config = read_config(args.configfile) if getattr(args, "configfile", None) else default_config()
    if args.data_root is not None:
        config["data_root"] = args.data_root
    if getattr(args, "legacy_dsi2_mni_offset", None) is not None:
        config["legacy_dsi2_mni_offset"] = args.legacy_dsi2_mni_offset
    if getattr(args, "start_at", None) is not None:
        config["connection_ids_start_at"] = args.start_at
    return config


def _validate(args):
    from .study.study import load_study

    study = load_study(args.local_data, _config(args))
    for text in study.warnings:
        print(f"warning: {text}", file=sys.stderr)
    for note in study.notes:
        print(f"note: {note.line()}", file=sys.stderr)
    n_labels = sum(len(s.labels) for s in study.scans)
    print(f"{args.local_data}: {len(study.scans)} scans, {n_labels} atlas labelings: valid")


def _init(args):
    from .study.config import read_config
    from .study.init import init_study, merged_spec

    spec = merged_spec(args.spec, tracks=args.tracks, participants=args.participants,
                       group_column=args.group_column, space=args.space,
                       outputs=args.outputs)
    config = read_config(args.configfile) if args.configfile else None
    result = init_study(args.root, spec, args.output, allow_missing=args.allow_missing,
                        config=config, check_headers=not args.no_header_checks)
    for text in result.warnings:
        print(f"warning: {text}", file=sys.stderr)
    print(result.report())


def _status(args):
    from .analysis.maps_workflow import map_status
    from .study.status import NEEDS_WORK, format_status, study_status
    from .study.study import load_study

    config = _config(args)
    study = load_study(args.local_data, config, strict=False)
    for text in study.warnings:
        print(f"warning: {text}", file=sys.stderr)
    entries = study_status(study)
    maps = map_status(study)
    print(format_status(entries, maps, tsv=args.tsv))
    from .qc.summary import collect, format_summary

    print(format_summary(collect(study), limit=10**9 if args.notes else 40), file=sys.stderr)
    for text in study.problems:
        print(f"problem: {text}", file=sys.stderr)
    if study.problems or any(e.status in NEEDS_WORK for e in [*entries, *maps]):
        raise SystemExit(1)


def _query(args):
    import warnings
    from pathlib import Path

    from .analysis.querytext import parse_ijk, parse_mm, parse_param, query_table
    from .analysis.reader import TrackDataSource

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # printed below, one line each
        source = TrackDataSource(args.local_data, config=_config(args))
    for text in source.warnings:
        print(f"warning: {text}", file=sys.stderr)
    if args.atlas is not None or args.param:
        source.change_atlas(args.atlas, **dict(parse_param(p) for p in args.param))
    if args.mm:
        results = source.query_mm([parse_mm(t) for t in args.mm], every=args.every)
    else:
        roi = args.mask if args.mask is not None else [parse_ijk(t) for t in args.ijk]
        results = source.query_ijk(roi, every=args.every)
    print(query_table(source, results, top=args.top))
    if args.save_trk is not None:
        for q in results:
            q.save(Path(args.save_trk) / f"{q.scan_id}.trk")


def _patterns(args):
    from .jobs.job import job
    from .jobs.pipeline import write_patterns

    with job(args.log, f"patterns {args.pkl} {args.npy}"):
        write_patterns(args.pkl, args.npy, args.out, args.radius, scan_id=args.scan_id,
                       threads=args.threads)


def _pair(text, what):
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 or not all(parts):
        raise LtpaError(f"--{what} {text!r}: expected two values separated by a comma, A,B")
    return tuple(parts)


def _map(args):
    import warnings

    from .analysis.maps import write_map
    from .analysis.querytext import parse_param

    atlas = {"name": args.atlas, **dict(parse_param(p) for p in args.param)}
    options = {}
    if args.connection is not None:
        text = args.connection.strip()
        options["connection"] = int(text) if text.isdigit() else _pair(text, "connection")
    if args.groups is not None:
        options["groups"] = _pair(args.groups, "groups")
    if args.min_scans is not None:
        options["min_scans"] = args.min_scans
    if args.permutations is not None:
        options["n_permutations"] = args.permutations
    if args.seed is not None:
        options["seed"] = args.seed
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        written = write_map(args.local_data, args.out, atlas=atlas, radius=args.radius,
                            stat=args.stat, config=_config(args), centers=args.centers,
                            min_tracks=args.min_tracks, n_jobs=args.jobs, progress=True,
                            **options)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    for name, path in written.items():
        print(f"{name}\t{path}")


SPACE_HELP = ("grid of the streamlines' keys (local_data.json's trk_space): qsdr, mni, or "
              "native (the trk's own grid)")
REFERENCE_HELP = ("NIfTI whose grid a .tck/.trx in native space is in (reference_volume) "
                  "(default: none; a .trk carries its own grid)")
CONFIG_HELP = ("the workflow config to use (default: config/config.yaml of this checkout, "
               "with the config schema's defaults)")


def _subparser(sub, name, help_text, description=None):
    return sub.add_parser(name, help=help_text, description=description or help_text,
                          formatter_class=HelpFormatter)


def _study_arguments(p, local_data_help="the study's local_data.json", config_help=CONFIG_HELP):
    """The study and the config it is read with: local_data, --data-root, --configfile."""
    p.add_argument("local_data", help=local_data_help)
    p.add_argument("--data-root", metavar="FOLDER",
                   help="where relative paths of the JSON resolve (default: the config's "
                        "data_root, else the JSON's folder)")
    p.add_argument("--configfile", metavar="CONFIG.yaml", help=config_help)


def build_parser() -> argparse.ArgumentParser:
    """The ``ltpa`` command line's parser.

    One subcommand each for index, label, demo, init, validate, status, query, patterns
    and map, with their options; each subcommand's ``func`` default is the function that
    runs it.

    Returns
    -------
    argparse.ArgumentParser
    """
    from .study.config import default

    parser = argparse.ArgumentParser(prog="ltpa", description=__doc__,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"ltpa {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="one of the commands below; ltpa COMMAND --help for its "
                                     "options")

    p = _subparser(sub, "index", "hash a .trk into a pickled TrackDataset (voxel -> streamlines)")
    p.add_argument("trk", help="the streamlines (.trk, .trk.gz, .tck or .trx)")
    p.add_argument("out", help="output .pkl")
    p.add_argument("--space", choices=["qsdr", "mni", "native"], default="qsdr",
                   help=SPACE_HELP)
    p.add_argument("--trk-out", metavar="TRK",
                   help="also write the streamlines in the key grid to this .trk (default: not "
                        "written)")
    p.add_argument("--legacy-dsi2-mni-offset", action="store_true",
                   default=default("legacy_dsi2_mni_offset"),
                   help="qsdr keys with dsi2's 102 - j instead of 101 - j")
    p.add_argument("--scan-id", help="scan_id recorded in the pkl (default: none)")
    p.add_argument("--no-write", action="store_true",
                   help="read and index only, write nothing (for timing)")
    p.add_argument("--reference-volume", metavar="NIFTI", help=REFERENCE_HELP)
    p.add_argument("--log", help="log file (default: stderr)")
    p.set_defaults(func=_index)

    p = _subparser(sub, "label", "connection id per streamline from an atlas in the trk's grid")
    p.add_argument("trk", help="the streamlines (.trk, .trk.gz, .tck or .trx)")
    p.add_argument("atlas", help="label NIfTI sharing the trk's grid")
    p.add_argument("out", help="output .npy")
    p.add_argument("--graphml", metavar="GRAPHML",
                   help="region list: the graphml's node ids (default: the atlas's own labels)")
    p.add_argument("--labels", metavar="TABLE",
                   help="region list: a label table (TSV/CSV index,name, a BIDS dseg.tsv, or a "
                        "LUT) (default: "
                        "the atlas's own labels)")
    p.add_argument("--start-at", type=int, choices=[0, 1],
                   default=default("connection_ids_start_at"),
                   help="number of the first connection id (connection_ids_start_at)")
    p.add_argument("--space", choices=["qsdr", "mni", "native"], default="qsdr",
                   help=SPACE_HELP + "; the atlas must share it")
    p.add_argument("--reference-volume", metavar="NIFTI", help=REFERENCE_HELP)
    p.add_argument("--scan-id", help="scan_id recorded in the npy's sidecar (default: none)")
    p.add_argument("--log", help="log file (default: stderr)")
    p.set_defaults(func=_label)

    p = _subparser(sub, "demo", "write the built-in synthetic demo study: 20 scans in two "
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
                        "--repeats N: 10 subjects x N; with --small: 3)")
    p.add_argument("--repeats", type=int, default=1, metavar="N",
                   help="scans per subject (shared subject_id), each subject with its own "
                        "connectome variation, so a subject's scans are more alike than two "
                        "subjects' (default: 1, no repeats)")
    p.add_argument("--streamlines", type=int, default=20_000,
                   help="streamlines per scan, about (+-10%% per scan)")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed: the same seed writes the same study")
    p.add_argument("--small", action="store_true",
                   help="write the tiny cube-region demo instead (3 scans of ~100 "
                        "streamlines; what many tests use)")
    p.set_defaults(func=_demo)

    p = _subparser(sub, "init", "write (or extend) a local_data.json from a lab's folders "
                                "(BIDS derivatives, DSI Studio), as a spec says",
                   description="Write a local_data.json for the streamline files under ROOT "
                               "that match the spec's tracks templates (Snakemake wildcards: "
                               "sub-{subject}/ses-{session}/...), one scan per file, with "
                               "groups and attributes from participants.tsv and outputs "
                               "outside ROOT. Run again on the same JSON to add new scans: "
                               "existing entries are kept as they are (previous file: "
                               "OUT.<UTC time>.bak). The spec's keys: docs/start.md.")
    p.add_argument("root", help="the folder the spec's paths are relative to (e.g. BIDS "
                                "derivatives)")
    p.add_argument("--spec", metavar="INIT.yaml", default=None,
                   help="the spec (default: none, the options below say it all)")
    p.add_argument("-o", "--output", metavar="LOCAL_DATA.json", required=True,
                   help="the JSON to write or extend (required)")
    p.add_argument("--tracks", metavar="TEMPLATE", action="append", default=None,
                   help="a template of the streamline files, relative to ROOT (repeat for "
                        "more) (default: the spec's tracks)")
    p.add_argument("--participants", metavar="TSV", default=None,
                   help="BIDS participants.tsv, relative to ROOT (default: the spec's, else "
                        "none)")
    p.add_argument("--group-column", metavar="COLUMN", default=None,
                   help="participants column that gives scan_group (default: the spec's, "
                        "else group)")
    p.add_argument("--space", choices=["qsdr", "mni", "native"], default=None,
                   help="trk_space of every scan (default: the spec's, else qsdr)")
    p.add_argument("--outputs", metavar="FOLDER", default=None,
                   help="folder of the outputs, relative to the JSON's folder (default: the "
                        "spec's, else prepared)")
    p.add_argument("--allow-missing", action="store_true",
                   help="leave scans with a problem out (with a warning) instead of stopping")
    p.add_argument("--no-header-checks", action="store_true",
                   help="check the JSON and its paths only, not the inputs' headers (grids, "
                        "region lists); ltpa validate and the dry run check them later")
    p.add_argument("--configfile", metavar="CONFIG.yaml", default=None,
                   help=CONFIG_HELP.replace("to use", "to validate with"))
    p.set_defaults(func=_init)

    p = _subparser(sub, "validate", "check a local_data.json and report every problem")
    _study_arguments(p)
    p.set_defaults(func=_validate)

    p = _subparser(sub, "status", "per scan, which outputs are ok, missing or out of date "
                                  "(exit 1 when any is missing or out of date)")
    _study_arguments(p, config_help=CONFIG_HELP.replace("to use", "to compare with"))
    p.add_argument("--legacy-dsi2-mni-offset", action=argparse.BooleanOptionalAction,
                   default=None,
                   help="compare with qsdr keys made with (or without) dsi2's 102 - j (default: "
                        "the config's legacy_dsi2_mni_offset)")
    p.add_argument("--start-at", type=int, choices=[0, 1], default=None,
                   help="compare with connection ids numbered from this (default: the "
                        "config's connection_ids_start_at)")
    p.add_argument("--tsv", action="store_true", help="one tab-separated line per output")
    p.add_argument("--notes", action="store_true",
                   help="list every note of the summary (default: the first 40)")
    p.set_defaults(func=_status)

    p = _subparser(sub, "query", "per scan, the streamlines through a region of interest "
                                 "(one tab-separated row per scan)")
    _study_arguments(p, "the study's local_data.json (its pkls made)")
    roi = p.add_mutually_exclusive_group(required=True)
    roi.add_argument("--ijk", action="append", metavar="I,J,K", default=[],
                     help="a voxel of the key grid (repeat for more; refused when the scans' "
                          "key grids have different voxel orders)")
    roi.add_argument("--mask", metavar="ROI.nii.gz", default=None,
                     help="a 3-D NIfTI on the key grid, in any voxel order (reoriented to each "
                          "scan's as atlases are); its nonzero voxels are the region (this, "
                          "--ijk or --mm is required)")
    roi.add_argument("--mm", action="append", metavar="X,Y,Z", default=[],
                     help="a point in RAS mm: the voxel whose centre is nearest, on each "
                          "scan's key grid (repeat for more; the same place whatever the "
                          "scans' voxel orders; --mm=-10,20,5 for a negative X)")
    p.add_argument("--atlas", metavar="NAME", default=None,
                   help="track_labels name whose connection ids give the top connections "
                        "(default: none, no connections listed)")
    p.add_argument("--param", action="append", metavar="NAME=VALUE", default=[],
                   help="a track_labels parameter to match (repeat for more), e.g. scale=33 "
                        "(default: none)")
    p.add_argument("--top", type=int, metavar="N", default=5, help="connections listed per scan")
    p.add_argument("--every", type=int, metavar="N", default=0,
                   help="keep every n-th selected streamline (0: all)")
    p.add_argument("--save-trk", metavar="FOLDER", default=None,
                   help="also write each scan's selected streamlines to FOLDER/<scan_id>.trk "
                        "(default: not written)")
    p.set_defaults(func=_query)

    p = _subparser(sub, "patterns", "termination patterns of one scan at a radius (from its "
                                    "pkl and one atlas's npy)")
    p.add_argument("pkl", help="the scan's pkl (ltpa index)")
    p.add_argument("npy", help="the scan's connection ids under one atlas (ltpa label)")
    p.add_argument("out", help="output .npz (docs/ltpa.md: the format)")
    p.add_argument("--radius", type=int, required=True,
                   help="sphere radius in voxels, 0..10 (required)")
    p.add_argument("--scan-id", help="scan_id recorded in the file (default: the pkl's)")
    p.add_argument("--threads", type=int, default=1,
                   help="kernel threads; the file does not depend on it (default 1)")
    p.add_argument("--log", help="log file (default: stderr)")
    p.set_defaults(func=_patterns)

    p = _subparser(sub, "map", "a whole-brain LTPA map of a study: a statistic of the scans' "
                               "termination patterns at every center, as NIfTI")
    _study_arguments(p, "the study's local_data.json (its pkls and npys made)")
    p.add_argument("--atlas", metavar="NAME", required=True,
                   help="track_labels name (required)")
    p.add_argument("--param", action="append", metavar="NAME=VALUE", default=[],
                   help="a track_labels parameter to match (repeat for more), e.g. scale=33 "
                        "(default: none)")
    p.add_argument("--radius", type=int, default=0, help="sphere radius in voxels, 0..10")
    p.add_argument("--stat", required=True,
                   help="coverage, streamlines, connections, similarity, within_subject, "
                        "between_subject or group_difference (required)")
    p.add_argument("--connection", metavar="A,B",
                   help="group_difference: a connection id or two regions (names or numbers) "
                        "(default: none)")
    p.add_argument("--groups", metavar="A,B",
                   help="group_difference: two scan_group values; t = mean B - mean A "
                        "(default: none)")
    p.add_argument("--min-tracks", type=int, default=1,
                   help="counts below this are dropped")
    p.add_argument("--min-scans", type=int, default=None,
                   help="group_difference: test where this many scans of the two groups "
                        "have >= min-tracks (default: half of them)")
    p.add_argument("--centers", metavar="MASK",
                   help="a 3-D NIfTI mask in the key grid (default: every center of any scan)")
    p.add_argument("--permutations", type=int, default=None,
                   help="group_difference: permutations for the family-wise p map (default: "
                        "none)")
    p.add_argument("--seed", type=int, default=None,
                   help="group_difference: the permutations' random seed (default: 0)")
    p.add_argument("-j", "--jobs", type=int, default=1, help="worker processes")
    p.add_argument("-o", "--out", required=True, metavar="OUT.nii.gz",
                   help="the map (required); other maps beside it: OUT.<name>.nii.gz; "
                        "what was computed: OUT.nii.gz.json")
    p.set_defaults(func=_map)
    return parser


def main(argv=None) -> int:
    """Run the ``ltpa`` command line.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 when the command ran (also when stdout's reader closed the pipe early); 1 after
        an ``LtpaError``, printed on stderr as ``ltpa error: ...``.

    Raises
    ------
    SystemExit
        From argparse (``--help`` and ``--version``: 0; bad arguments: 2); ``ltpa
        status`` (1 when the study has problems or an output is missing or out of date);
        ``index``, ``label`` and ``patterns`` (1 after any error, which their log reports).
    """
    parser = build_parser()
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
