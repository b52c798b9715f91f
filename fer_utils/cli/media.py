"""``fer predict``, ``fer video``, ``fer webcam`` and ``fer serve``: the commands that read photos,
videos or a camera, each next to its flags."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

from fer_utils.cli.flags import (
    add_serve_flags,
    checkpoint_flag,
    overwrite_flag,
    photo_flags,
    photo_predictor,
    predictor_options,
    smooth_flag,
)
from fer_utils.cli.shared import (
    EXIT_INTERRUPTED,
    EXIT_USER_ERROR,
    command_inputs,
    engine_flags,
    parquet_flag,
    parquet_run,
)
from fer_utils.core.errors import FERConfigError, FERDataError, FERError, FEROutputError
from fer_utils.core.outputs import check_outputs, unused_path
from fer_utils.data.images import NOT_REACHED
from fer_utils.predict.parquet import PHOTOS_PER_FILE
from fer_utils.runtime.preprocess import TTA_MODES


def cmd_predict(args: argparse.Namespace) -> int:
    from fer_utils.predict.predictor import expand_image_paths

    files, skipped = expand_image_paths(args.paths)
    if not files:  # one line, before any model is loaded: nothing here is a photo
        raise FERDataError("no photo to read: " + "; ".join(f"{s.source}: {s.reason}" for s in skipped[:3]))
    check_outputs(
        {"JSON results": args.json, "CSV results": args.csv},
        inputs=command_inputs(args, files),
        folders={"annotated photos": args.annotate},
        own_folders={"Parquet outputs": args.parquet},
        overwrite=args.overwrite,
    )
    with parquet_run(args, "predict") or contextlib.nullcontext() as parquet:
        if args.engine == "ray":
            return _on_ray(args, "photos", [str(f) for f in files], skipped, parquet)
        return _predict_here(args, files, skipped, parquet)


def _predict_here(args: argparse.Namespace, files: list[Path], skipped: list, parquet) -> int:
    """``fer predict`` on the local engine: results printed, then written."""
    from fer_utils.faces.results import summary_line
    from fer_utils.predict.batch import predict_photos

    predictor = photo_predictor(args, tta=args.tta)
    progress = len(files) > 20 and not args.quiet
    report = predict_photos(predictor, files, parquet, False if args.no_detect else None, progress)
    results = report.results
    not_reached = [s for s in report.skipped if s.reason == NOT_REACHED]
    skipped += [s for s in report.skipped if s.reason != NOT_REACHED]
    if not results and not report.resumed and not not_reached:  # one line, not the same reason three times
        raise FERError("no image could be read: " + "; ".join(f"{s.source}: {s.reason}" for s in skipped[:3]))
    for result in results:
        print("\n".join(result.lines()))
    annotated, failed_writes = _annotated_copies(args.annotate, results, files)
    for s in skipped:
        print(f"skipped: {s.source}: {s.reason}", file=sys.stderr)
    where = f"; annotated copies in {args.annotate}" if annotated else ""
    where += f"; wrote {parquet.written} Parquet files to {args.parquet}" if parquet else ""
    print(summary_line(results, skipped) + where, file=sys.stderr)
    written, failed = _write_results(args, predictor, results, [*skipped, *not_reached], annotated)
    if failed_writes + failed:
        raise FEROutputError(
            "the results are printed above, but writing failed for " + "; ".join((failed_writes + failed)[:3])
        )
    if not_reached:
        kept = f"; the results so far are in {', '.join(written)}" if written else ""
        print(
            f"fer: interrupted after {len(files) - len(not_reached)} of {len(files)} photos{kept} "
            f"(rerun for the {len(not_reached)} not reached)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return 0


def _annotated_copies(folder: str | None, results: list, inputs: list[Path]) -> tuple[dict[str, str], list[str]]:
    """``--annotate``: each photo with its boxes and labels, under a name that replaces nothing
    (never an input photo); which copy belongs to which photo, and the copies that failed."""
    annotated: dict[str, str] = {}
    failed: list[str] = []
    if not folder:
        return annotated, failed
    from fer_utils.faces.drawing import annotate_image, save_pil

    taken = {Path(f).resolve() for f in inputs}
    for result in results:
        target = unused_path(Path(folder).resolve(), Path(result.source).stem, ".jpg", taken)
        try:
            save_pil(annotate_image(result.source, result), target)
            annotated[result.source] = str(target)
        except (OSError, FERError) as err:
            failed.append(f"{target}: {err}")
    return annotated, failed


def _write_results(args: argparse.Namespace, predictor, results: list, skipped: list, annotated: dict[str, str]):
    """``--json`` / ``--csv``, each written whole: the paths written and the writes that failed."""
    from fer_utils.core.atomic import write_text_atomic
    from fer_utils.faces.results import finite_json, predictions_csv, predictions_json

    outputs = {}
    if args.json:
        payload = predictions_json(results, skipped, predictor.classes, predictor.name, annotated)
        outputs[args.json] = finite_json(payload) + "\n"
    if args.csv:
        outputs[args.csv] = predictions_csv(results, skipped, predictor.classes)
    written, failed = [], []
    for path, text in outputs.items():
        try:
            write_text_atomic(path, text)
            written.append(str(path))
        except OSError as err:
            failed.append(f"{path}: {err.strerror or err}")
    return written, failed


def add_predict_parser(sub: Any) -> None:
    """``fer predict``: its flags, next to ``cmd_predict``."""
    p = sub.add_parser("predict", help="find faces in photos (or take face crops) and predict their expressions")
    p.add_argument("paths", nargs="+", metavar="PHOTO_OR_DIR", help="image files or folders (searched recursively)")
    checkpoint_flag(p, photos=True)
    p.add_argument(
        "--tta",
        nargs="?",
        const="flip",
        default="none",
        choices=TTA_MODES,
        help="test-time augmentation (--tta alone = flip)",
    )
    p.add_argument("--no-detect", action="store_true", help="inputs are face crops: skip face detection")
    photo_flags(p)
    p.add_argument("--annotate", default=None, metavar="OUT_DIR", help="save each photo with boxes and labels")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", default=None, metavar="OUT", help="write every face's result as JSON")
    out.add_argument("--csv", default=None, metavar="OUT", help="write one row per face as CSV")
    parquet_flag(p, f"{PHOTOS_PER_FILE} photos")
    engine_flags(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    overwrite_flag(p, "--json/--csv")
    p.set_defaults(func=cmd_predict)


def cmd_serve(args: argparse.Namespace) -> int:
    from fer_utils.deploy.app import require_gradio, serve

    require_gradio()  # before the model loads
    predictor = photo_predictor(args)
    serve(predictor, host=args.host, port=args.port, share=args.share)
    return 0


def add_serve_parser(sub: Any) -> None:
    """``fer serve``: its flags, next to ``cmd_serve``."""
    p = sub.add_parser("serve", help="web app (Gradio): upload or webcam -> faces, probabilities, Grad-CAM")
    add_serve_flags(p)
    p.set_defaults(func=cmd_serve)


def cmd_webcam(args: argparse.Namespace) -> int:
    from fer_utils.deploy.webcam import run_webcam
    from fer_utils.predict.video import CLASSIFIER_THREADS

    results = run_webcam(photo_predictor(args, threads=CLASSIFIER_THREADS), camera=args.camera, smooth=args.smooth)
    tracks = {f.track for r in results for f in r.faces}
    print(f"{len(results)} frames, {sum(len(r.faces) for r in results)} faces in {len(tracks)} tracks")
    return 0


def add_webcam_parser(sub: Any) -> None:
    """``fer webcam``: its flags, next to ``cmd_webcam``."""
    p = sub.add_parser("webcam", help="live camera: boxes, labels and FPS (needs desktop opencv-python)")
    p.add_argument("--camera", type=int, default=0, help="camera index (default 0)")
    smooth_flag(p)
    photo_flags(p)
    checkpoint_flag(p, photos=True)
    p.set_defaults(func=cmd_webcam)


def cmd_video(args: argparse.Namespace) -> int:
    from fer_utils.predict.frames import FrameSelection, check_video_options, expand_video_paths
    from fer_utils.predict.ray_engine import check_chunk_minutes, check_ray_address

    # every option checked against what it means before any work (and before Ray starts)
    selection = FrameSelection(args.every, args.fps, args.start, args.end)
    check_video_options(args.smooth, args.detect_size, args.detect_interval)
    if args.chunk_minutes is not None and args.engine != "ray":
        raise FERConfigError("--chunk-minutes splits long videos among Ray workers: use it with --engine ray")
    check_chunk_minutes(args.chunk_minutes)
    if args.engine == "ray":
        check_ray_address(args.ray_address, args.ray_timeout)
    sources, skipped = expand_video_paths(args.inputs)
    check_outputs(
        {
            "CSV results": args.csv,
            "JSON results": args.json,
            "annotated video": args.annotate,
            "timeline plot": args.plot,
        },
        inputs=command_inputs(args, [s for s in sources if not isinstance(s, int)]),
        own_folders={"Parquet outputs": args.parquet},
        overwrite=args.overwrite,
    )
    if not sources:
        raise FERDataError("; ".join(f"{s.source}: {s.reason}" for s in skipped[:3]))
    with parquet_run(args, "video") or contextlib.nullcontext() as parquet:
        if args.engine == "ray":
            return _on_ray(args, "video", sources, skipped, parquet)
        return _video_here(args, sources, skipped, selection, parquet)


def _video_here(args: argparse.Namespace, sources: list, skipped: list, selection, parquet) -> int:
    """``fer video`` on the local engine: each video analysed, its outputs written, a summary."""
    from fer_utils.predict.video import CLASSIFIER_THREADS, analyze_videos

    predictor = photo_predictor(args, threads=CLASSIFIER_THREADS)
    report = analyze_videos(
        lambda: predictor.video_analyzer(args.smooth, args.detect_size, args.detect_interval),
        sources,
        selection,
        model=predictor.name,
        csv_path=args.csv,
        json_path=args.json,
        annotate_path=args.annotate,
        plot_path=args.plot,
        progress=not args.quiet,
        parquet=parquet,
    )
    for summary in report.summaries:
        print(summary.line())
    for s in [*skipped, *report.skipped]:
        print(f"skipped: {s.source}: {s.reason}", file=sys.stderr)
    _print_notes(report)
    written = report.written + ([f"{parquet.written} Parquet files to {args.parquet}"] if parquet else [])
    analysed = sum(r.analysed for r in report.runs)
    print(
        f"{len(report.runs)} videos, {analysed} frames analysed, {report.rows} faces in "
        f"{len(report.summaries)} tracks" + (f"; wrote {', '.join(written)}" if written else ""),
        file=sys.stderr,
    )
    if report.interrupted:
        kept = f"; the {report.rows} rows so far are in {', '.join(written)}" if written else ""
        print(f"fer: interrupted at {report.interrupted}{kept}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def add_video_parser(sub: Any) -> None:
    """``fer video``: its flags, next to ``cmd_video``."""
    from fer_utils.faces.detection import VIDEO_MAX_SIDE
    from fer_utils.predict.video import DETECT_INTERVAL

    p = sub.add_parser(
        "video",
        help="expressions over time in videos (or a camera): faces tracked, smoothed, one row per face per frame",
    )
    p.add_argument("inputs", nargs="+", metavar="VIDEO", help="video files, folders of videos, or a camera number")
    checkpoint_flag(p, photos=True)
    photo_flags(p)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--every", type=int, default=1, metavar="N", help="analyse every Nth frame (default 1: all)")
    which.add_argument("--fps", type=float, default=None, metavar="F", help="analyse about F frames per second")
    p.add_argument("--start", type=float, default=0.0, metavar="SECONDS", help="start here (default 0)")
    p.add_argument("--end", type=float, default=None, metavar="SECONDS", help="stop here (default: the end)")
    smooth_flag(p)
    p.add_argument(
        "--detect-size",
        type=int,
        default=VIDEO_MAX_SIDE,
        metavar="PX",
        help=f"search frames for faces at up to PX pixels (default {VIDEO_MAX_SIDE}); larger finds smaller faces, "
        "more slowly (the smallest face found at each size: docs/pipeline.md)",
    )
    p.add_argument(
        "--detect-interval",
        type=float,
        default=DETECT_INTERVAL,
        metavar="SECONDS",
        help=f"search whole frames for faces every SECONDS (default {DETECT_INTERVAL:g}) and follow each face "
        "near where it was in the frames between, at a fraction of the cost; 0 searches every analysed frame",
    )
    p.add_argument("--csv", default=None, metavar="OUT", help="one row per face per analysed frame")
    parquet_flag(p, "video")
    engine_flags(p)
    p.add_argument(
        "--chunk-minutes",
        type=float,
        default=None,
        metavar="M",
        help="with --engine ray: analyse videos longer than M minutes in parts of M minutes on several workers "
        "(track ids restart at each part's border, offset by a million per part: docs/scale.md)",
    )
    p.add_argument("--json", default=None, metavar="OUT", help="the same rows plus per-track summaries")
    p.add_argument("--annotate", default=None, metavar="OUT.mp4", help="a copy with boxes, track ids and labels")
    p.add_argument("--plot", default=None, metavar="OUT.png", help="each track's probabilities over time")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    overwrite_flag(p, "output")
    p.set_defaults(func=cmd_video)


def _on_ray(args: argparse.Namespace, kind: str, sources: list, skipped: list, parquet) -> int:
    """``--engine ray``: the inputs not done in ``--parquet`` go to Ray workers; one summary line,
    then each input that failed, with why."""
    from fer_utils.predict.ray_engine import WorkerSpec, check_ray_address, run_on_ray

    if parquet is None or any(getattr(args, name, None) for name in ("csv", "json", "annotate", "plot")):
        raise FERConfigError(
            "--engine ray writes Parquet only: give --parquet DIR (and no --csv/--json/--annotate/--plot)"
        )
    if any(isinstance(s, int) for s in sources):
        raise FERConfigError("--engine ray analyses video files; a camera runs with --engine local")
    check_ray_address(args.ray_address, args.ray_timeout)  # before any work, however the folder stands
    options = (  # what the kind of input needs beyond the model
        {
            "selection": (args.every, args.fps, args.start, args.end),
            "smooth": args.smooth,
            "detect_size": args.detect_size,
            "detect_interval": args.detect_interval,
        }
        if kind == "video"
        else {"detect": False if args.no_detect else None}
    )
    spec = WorkerSpec(predictor_options(args, tta=getattr(args, "tta", "none"), threads=1), **options)
    report = run_on_ray(
        kind, sources, spec, parquet, args.ray_address, args.workers, progress=not args.quiet, timeout=args.ray_timeout
    )
    todo = len(sources) - len(report.resumed)
    if todo and not report.done and report.failed and not skipped:  # nothing came of it: as the local engine says
        raise FERDataError("; ".join(f"{source}: {reason}" for source, reason in report.failed[:3]))
    for s in skipped:
        print(f"skipped: {s.source}: {s.reason}", file=sys.stderr)
    for source, reason in report.failed:
        print(f"failed: {source}: {reason}", file=sys.stderr)
    print(
        f"Ray, {report.workers} workers: {report.done} inputs done, {len(report.failed)} failed, {report.rows} rows; "
        f"wrote {parquet.written} Parquet files to {args.parquet}"
        + (f"; {report.lost} workers lost on the way, their tasks done by the others" if report.lost else ""),
        file=sys.stderr,
    )
    return 0 if report.done or not todo or not report.failed else EXIT_USER_ERROR


def _print_notes(report) -> None:
    """What a reader of the results should know: videos that ended early, a plot not written."""
    truncated = [
        f"{run.info.source}: ended after {run.decoded} of the {run.info.frames} frames its container announces "
        "(a truncated or damaged file); the frames before are analysed"
        for run in report.runs
        if run.truncated
    ]
    for note in [*truncated, *report.notes]:
        print(f"note: {note}", file=sys.stderr)
