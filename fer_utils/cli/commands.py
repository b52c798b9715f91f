"""The ``fer`` command: train, evaluate, predict, data info.

User errors (bad paths, files, values) print one line ``fer: error: ...`` and exit 1;
Ctrl-C exits 130 after saying how to resume.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from fer_utils.cli.flags import (
    add_serve_flags,
    check_device,
    checkpoint_flag,
    device_flag,
    overwrite_flag,
    photo_flags,
    photo_predictor,
    smooth_flag,
)
from fer_utils.core.atomic import check_outputs, ensure_writable_dir, unused_path
from fer_utils.core.config import RECIPES
from fer_utils.core.errors import FERDataError, FERError, FEROutputError, TerminalSafeStream
from fer_utils.core.interrupts import exit_status, stop_signals_as_interrupt
from fer_utils.core.labels import FERPLUS_MODE_ALIASES
from fer_utils.core.locations import PACKAGE_DIR, REPO_MODELS_DIR
from fer_utils.data.images import NOT_REACHED
from fer_utils.predict.frames import camera_index
from fer_utils.predict.predictor import SHIPPED_MODEL, SHIPPED_WEB_MODEL
from fer_utils.runtime.preprocess import TTA_MODES

EXIT_USER_ERROR = 1
EXIT_INTERRUPTED = 130


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the bad value and where to look (exit 2)."""

    def error(self, message: str):
        self.exit(2, f"fer: error: {message} (see `{self.prog} --help`)\n")


def _config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, so the CLI can set every hyperparameter."""
    from fer_utils.core.config import TrainConfig

    group = parser.add_argument_group("hyperparameters (defaults: TrainConfig)")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "pretrained":
            group.add_argument(
                flag,
                nargs="?",
                const=True,
                default=None,
                metavar="FILE",
                help="start from ImageNet weights (default), or from a local weights FILE",
            )
            group.add_argument("--no-pretrained", dest="pretrained", action="store_false", help="random init")
        elif f.name == "pretrained_member":
            group.add_argument(
                flag,
                type=int,
                default=None,
                metavar="N",
                help="with an ensemble file as --pretrained: start from its member N (0, 1, ...)",
            )
        elif isinstance(f.default, bool):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=f"default {f.default}")
        else:
            group.add_argument(
                flag,
                type=type(f.default),
                default=None,
                metavar=type(f.default).__name__.upper(),
                help=f"default {f.default}",
            )


def _config_from_args(args: argparse.Namespace) -> Any:
    from fer_utils.core.config import TrainConfig

    return TrainConfig.from_recipe(args.recipe, **_explicit_config_values(args))


def _data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        default=None,
        help="FER2013 CSV, Kaggle train/test folder, FER+ image folders, class-folder dataset, or 'synthetic' "
        "(default: $FER_DATA_DIR, else synthetic)",
    )
    parser.add_argument("--ferplus", default=None, metavar="CSV", help="FER+ fer2013new.csv: use its labels")
    parser.add_argument(
        "--ferplus-mode",
        default="majority",
        choices=list(FERPLUS_MODE_ALIASES),
        help="FER+ training targets: majority label, or soft (FER+'s 'probability': the vote distribution)",
    )
    parser.add_argument("--include-contempt", action="store_true", help="8-class mode: keep contempt")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the dataset cache")


def _load(args: argparse.Namespace, seed: int = 0):
    from fer_utils.data import load_dataset

    return load_dataset(
        args.data,
        include_contempt=args.include_contempt,
        ferplus=args.ferplus,
        ferplus_mode=args.ferplus_mode,
        cache=not args.no_cache,
        seed=seed,
        progress=not getattr(args, "quiet", False),
    )


def _report_skips(dataset) -> None:
    for note in dataset.notes:
        print(f"note: {note}", file=sys.stderr)
    for s in dataset.skipped[:20]:
        print(f"skipped: {s.source}: {s.reason}", file=sys.stderr)
    if len(dataset.skipped) > 20:
        print(f"skipped: ... and {len(dataset.skipped) - 20} more", file=sys.stderr)


def _explicit_config_values(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields the user actually typed on the command line."""
    from fer_utils.core.config import TrainConfig

    return {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if getattr(args, f.name, None) is not None
    }


def _resumed_config(args: argparse.Namespace) -> Any:
    """The saved run's config; explicit flags may change only what is safe to change, and we say so."""
    from fer_utils.model.checkpoints import read_checkpoint_meta
    from fer_utils.train.loop import resume_config

    saved = read_checkpoint_meta(args.resume).get("config", {})
    changes = _explicit_config_values(args)
    config = resume_config(args.resume, **changes)
    for name, value in changes.items():
        if saved.get(name) != value:
            print(
                f"note: resuming with {name} {value!r} (the run was started with {saved.get(name)!r})", file=sys.stderr
            )
    return config


def cmd_train(args: argparse.Namespace) -> int:
    from fer_utils.course.reports import write_run_report
    from fer_utils.data import training_splits
    from fer_utils.model.checkpoints import git_commit
    from fer_utils.train.distributed import launched_world
    from fer_utils.train.loop import train

    out = Path(args.out)
    if args.resume is not None:
        config = _resumed_config(args)
    else:
        config = _config_from_args(args)
        if (out / "best.safetensors").exists() and not args.overwrite:
            raise FERError(
                f"{out} already holds a trained model; continue it with --resume {out / 'last.safetensors'}, "
                "choose another --out, or pass --overwrite"
            )
    from fer_utils.train.loop import RUN_FILES

    check_device(config.device)
    dataset = _load(args, config.seed)
    ensure_writable_dir(out, "training run")  # after loading: --out may sit inside the data folder
    run_files = {f"training run's {name}": out / name for name in [*RUN_FILES.values(), "metrics.json"]}
    check_outputs(run_files, inputs=command_inputs(args), overwrite=True)  # a run replaces its own files
    _report_skips(dataset)
    train_set, val_set = training_splits(dataset, config.val_fraction, config.seed)
    print(
        f"data: {dataset.source} ({dataset.format}); training on {len(train_set)} faces, "
        f"validating on {len(val_set)}; {config.arch} at {config.image_size}px for {config.epochs} epochs"
    )
    data_info = {
        "source": dataset.source,
        "format": dataset.format,
        "train": len(train_set),
        "val": len(val_set),
        "git_commit": git_commit(PACKAGE_DIR),
    }
    result = train(config, train_set, val_set, out, resume=args.resume, progress=not args.quiet, data_info=data_info)
    if not launched_world().is_main:
        return 0  # under torchrun, rank 0 alone evaluates and writes the report
    if result.interrupted:
        print(
            f"interrupted: resume with  fer train --data {args.data or dataset.source} --out {out} "
            f"--resume {result.last_checkpoint}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    run = write_run_report(result, dataset, train_set, val_set, args.tta)
    print(run.report.summary())
    print(run.saved_line(result))
    return 0


def add_train_parser(sub: Any) -> None:
    """``fer train``: its flags, next to ``cmd_train``."""
    p = sub.add_parser("train", help="train a model, evaluate it, save checkpoint, metrics and figures")
    _data_args(p)
    p.add_argument("--out", default="runs/train", help="output folder (default runs/train)")
    p.add_argument("--resume", default=None, metavar="FILE", help="continue from a last.safetensors")
    p.add_argument("--overwrite", action="store_true", help="replace a model already in --out")
    p.add_argument("--tta", default="flip", choices=TTA_MODES, help="TTA for the final report")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--recipe",
        default="cpu",
        choices=list(RECIPES),
        help="starting values: cpu (default; Lite0 64 px) or gpu (Lite1 224 px, 7 epochs, cuda); flags override",
    )
    _config_flags(p)
    p.set_defaults(func=cmd_train)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from fer_utils.course.figures import confusion_matrix_figure, reliability_figure, save_figure
    from fer_utils.data.duplicates import duplicates_of
    from fer_utils.model.checkpoints import read_checkpoint_meta
    from fer_utils.predict.predictor import default_checkpoint
    from fer_utils.train.evaluation import EvaluationReport, evaluate_checkpoint, optimism_note

    checkpoint = args.checkpoint or [default_checkpoint()]
    check_outputs(
        {"metrics JSON": args.json, "confusion matrix figure": args.figure, "reliability diagram": args.reliability},
        inputs=command_inputs(args),
        overwrite=args.overwrite,
    )
    check_device(args.device)
    for path in checkpoint:
        meta = read_checkpoint_meta(path)  # fail fast, before loading data
        members = f", {len(meta['members'])} members" if "members" in meta else ""
        print(f"checkpoint: {path} ({meta['arch']}{members}, {meta['image_size']}px)")
    args.include_contempt = args.include_contempt or "contempt" in meta["classes"]
    dataset = _load(args)
    _report_skips(dataset)
    split = args.split or dataset.default_eval_split()
    faces = dataset.split(split)
    modes = list(dict.fromkeys(args.tta))
    if len(modes) > 1:  # the other modes first, one line each; the first one is reported in full below
        from fer_utils.model.checkpoints import load_model

        loaded = load_model(checkpoint if len(checkpoint) > 1 else checkpoint[0])
        for mode in modes[1:]:
            other = evaluate_checkpoint(loaded, faces, tta=mode, split=split, device=args.device)
            print(f"tta {mode}: accuracy {other.accuracy:.4f}, macro-F1 {other.macro_f1:.4f}, ECE {other.ece:.4f}")
        checkpoint = loaded
    report = evaluate_checkpoint(checkpoint, faces, tta=modes[0], split=split, device=args.device)
    report.info["data"] = dataset.source
    print(report.summary())
    if note := optimism_note(split):
        print(f"note: {note}")
    if "train" in dataset.splits and split not in ("train", "training"):
        duplicate = duplicates_of(faces, dataset.splits["train"])
        if duplicate.any():
            clean = EvaluationReport(report.classes, report.labels[~duplicate], report.probabilities[~duplicate])
            report.info["without_train_duplicates"] = {
                "n": int((~duplicate).sum()),
                "duplicates": int(duplicate.sum()),
                "accuracy": clean.accuracy,
                "macro_f1": clean.macro_f1,
            }
            print(
                f"without the {int(duplicate.sum())} faces that duplicate training images: "
                f"accuracy {clean.accuracy:.4f}, macro-F1 {clean.macro_f1:.4f}"
            )
    if args.json:
        report.save_json(args.json)
        print(f"wrote {args.json}")
    if args.figure:
        save_figure(confusion_matrix_figure(report), args.figure)
        print(f"wrote {args.figure}")
    if args.reliability:
        save_figure(reliability_figure(report), args.reliability)
        print(f"wrote {args.reliability}")
    return 0


def add_evaluate_parser(sub: Any) -> None:
    """``fer evaluate``: its flags, next to ``cmd_evaluate``."""
    p = sub.add_parser("evaluate", help="score a checkpoint on a labelled dataset")
    _data_args(p)
    checkpoint_flag(p)
    p.add_argument(
        "--split",
        default=None,
        help="train, val (PublicTest), test (PrivateTest), all, or a,b (default: test, else val, else all)",
    )
    p.add_argument(
        "--tta",
        nargs="+",
        default=["none"],
        choices=TTA_MODES,
        help="test-time augmentation; several (e.g. --tta none flip crops) compare them, the first is reported in full",
    )
    device_flag(p)
    p.add_argument("--json", default=None, metavar="OUT", help="write metrics as JSON")
    p.add_argument("--figure", default=None, metavar="PNG", help="save the confusion matrix")
    p.add_argument("--reliability", default=None, metavar="PNG", help="save the reliability diagram (calibration)")
    overwrite_flag(p, "--json/--figure/--reliability")
    p.set_defaults(func=cmd_evaluate)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from fer_utils.model.checkpoints import read_checkpoint_meta
    from fer_utils.predict.predictor import default_checkpoint
    from fer_utils.train.evaluation import calibrate_checkpoint

    checkpoint = args.checkpoint or default_checkpoint()
    check_outputs({"calibrated checkpoint": args.out}, inputs=command_inputs(args), overwrite=args.overwrite)
    check_device(args.device)
    meta = read_checkpoint_meta(checkpoint)  # fail fast, before loading data
    args.include_contempt = args.include_contempt or "contempt" in meta["classes"]
    dataset = _load(args)
    _report_skips(dataset)
    split = args.split or ("val" if "val" in dataset.splits else dataset.default_eval_split())
    if split in ("test", "all"):
        print(f"note: fitting on '{split}' makes every later score on it optimistic; fit on the selection split (val)")
    result = calibrate_checkpoint(
        checkpoint, dataset.split(split), args.out, split=split, overwrite=args.overwrite, device=args.device
    )
    print(f"{split}: {len(result.before.labels)} faces; temperature {result.temperature:.4f}")
    print(result.summary())
    print(f"wrote {result.out} (the same weights, with the temperature in its metadata)")
    return 0


def add_calibrate_parser(sub: Any) -> None:
    """``fer calibrate``: its flags, next to ``cmd_calibrate``."""
    p = sub.add_parser(
        "calibrate", help="fit a temperature that makes a checkpoint's confidences honest, and store it in a copy"
    )
    _data_args(p)
    p.add_argument("--checkpoint", default=None, metavar="FILE", help=f"default: models/{SHIPPED_MODEL}")
    p.add_argument("--split", default=None, help="the faces to fit on (default: val, the selection split)")
    device_flag(p)
    p.add_argument("--out", required=True, metavar="FILE", help="the calibrated .safetensors to write")
    overwrite_flag(p, "--out")
    p.set_defaults(func=cmd_calibrate)


def command_inputs(args: argparse.Namespace, files: Iterable[str | os.PathLike] = ()) -> Iterator[Path]:
    """Everything a command reads, declared in one place for the one output guard
    (``check_outputs``): ``files`` (the photos or videos found in its arguments' folders), its
    arguments themselves, its checkpoints (and the shipped models, the defaults), the dataset's
    files (``--data``, else ``$FER_DATA_DIR``, for commands that load one), FER+ labels, int8
    calibration data, teacher probabilities and starting weights. A generator: the guard expands
    it only when an output already exists."""
    yield from map(Path, files)
    for name in ("paths", "inputs", "checkpoint", "members", "ferplus", "teacher"):
        value = getattr(args, name, None)
        values = [value] if isinstance(value, str) else value or []
        yield from (Path(p) for p in values if name != "inputs" or camera_index(p) is None)
    if isinstance(getattr(args, "pretrained", None), str):
        yield Path(args.pretrained)
    yield from (p for p in REPO_MODELS_DIR.glob("*") if p.is_file())
    if env := os.environ.get("FER_CHECKPOINT"):
        yield Path(env)
    data = []
    if hasattr(args, "ferplus"):  # commands that load a dataset
        data.append(args.data)
    if getattr(args, "int8", False):
        data.append(args.calibration_data or os.environ.get("FER_DATA_DIR"))
    for source in data:
        if source is not None or os.environ.get("FER_DATA_DIR"):
            from fer_utils.data.loading import dataset_files

            yield from dataset_files(source)


def cmd_predict(args: argparse.Namespace) -> int:
    from fer_utils.core.atomic import write_text_atomic
    from fer_utils.faces.results import finite_json, predictions_csv, predictions_json, summary_line
    from fer_utils.predict.predictor import expand_image_paths

    files, skipped = expand_image_paths(args.paths)
    check_outputs(
        {"JSON results": args.json, "CSV results": args.csv},
        inputs=command_inputs(args, files),
        folders={"annotated photos": args.annotate},
        overwrite=args.overwrite,
    )
    predictor = photo_predictor(args, tta=args.tta)
    results, bad = predictor.predict_images(
        files,
        detect=False if args.no_detect else None,
        progress=len(files) > 20 and not args.quiet,
        keep_on_interrupt=True,
    )
    not_reached = [s for s in bad if s.reason == NOT_REACHED]
    skipped += [s for s in bad if s.reason != NOT_REACHED]
    failed_writes: list[str] = []
    annotated: dict[str, str] = {}
    taken = {Path(f).resolve() for f in files}  # never write over an input photo
    for result in results:
        print("\n".join(result.lines()))
        if args.annotate:
            from fer_utils.faces.drawing import annotate_image, save_pil

            target = unused_path(Path(args.annotate).resolve(), Path(result.source).stem, ".jpg", taken)
            try:
                save_pil(annotate_image(result.source, result), target)
                annotated[result.source] = str(target)
            except (OSError, FERError) as err:
                failed_writes.append(f"{target}: {err}")
    for s in skipped:
        print(f"skipped: {s.source}: {s.reason}", file=sys.stderr)
    where = f"; annotated copies in {args.annotate}" if annotated else ""
    print(summary_line(results, skipped) + where, file=sys.stderr)
    outputs = {}
    if args.json:
        payload = predictions_json(results, [*skipped, *not_reached], predictor.classes, predictor.name, annotated)
        outputs[args.json] = finite_json(payload) + "\n"
    if args.csv:
        outputs[args.csv] = predictions_csv(results, [*skipped, *not_reached])
    for path, text in outputs.items():
        try:
            write_text_atomic(path, text)
        except OSError as err:
            failed_writes.append(f"{path}: {err.strerror or err}")
    if failed_writes:
        raise FEROutputError("the results are printed above, but writing failed for " + "; ".join(failed_writes[:3]))
    if not_reached:
        kept = f"; the results so far are in {', '.join(map(str, outputs))}" if outputs else ""
        print(
            f"fer: interrupted after {len(files) - len(not_reached)} of {len(files)} photos{kept} "
            f"(rerun for the {len(not_reached)} not reached)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    if not results:
        raise FERError("no image could be read: " + "; ".join(f"{s.source}: {s.reason}" for s in skipped[:3]))
    return 0


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
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    overwrite_flag(p, "--json/--csv")
    p.set_defaults(func=cmd_predict)


def cmd_export(args: argparse.Namespace) -> int:
    from fer_utils.model.export import export_onnx
    from fer_utils.predict.predictor import default_checkpoint

    if args.format == "web":
        from fer_utils.model.export import build_web_demo

        checkpoint = args.checkpoint or [default_checkpoint(SHIPPED_WEB_MODEL)]

        ensure_writable_dir(args.out, "web demo")
        result = build_web_demo(args.out, checkpoint, overwrite=args.overwrite)
        print(
            f"static demo ready in {args.out} (model {result.size_bytes / 1e6:.1f} MB); "
            f"try it: python -m http.server -d {args.out} 8000"
        )
        return 0
    checkpoint = args.checkpoint or [default_checkpoint()]
    check_outputs({"ONNX model": args.out}, inputs=command_inputs(args), overwrite=args.overwrite)
    calibration = None
    if args.int8:
        import numpy as np

        from fer_utils.data import load_dataset, training_splits

        source = args.calibration_data or os.environ.get("FER_DATA_DIR")
        if source:
            train_set, _ = training_splits(load_dataset(source, progress=False))
            pick = np.random.default_rng(0).choice(len(train_set), min(256, len(train_set)), replace=False)
            calibration = train_set.images[pick]
        else:
            print(
                "note: no --calibration-data or FER_DATA_DIR: calibrating int8 on synthetic faces "
                "(real training faces give better int8 accuracy)",
                file=sys.stderr,
            )
    result = export_onnx(
        checkpoint,
        args.out,
        check=not args.no_check,
        int8=args.int8,
        calibration_faces=calibration,
        overwrite=args.overwrite,
    )
    parity = (
        ""
        if result.max_probability_difference is None
        else f"; parity with PyTorch: max probability difference {result.max_probability_difference:.1e}"
    )
    print(f"wrote {result.path} ({result.size_bytes / 1e6:.1f} MB){parity}")
    return 0


def add_export_parser(sub: Any) -> None:
    """``fer export``: its flags, next to ``cmd_export``."""
    p = sub.add_parser("export", help="export a checkpoint to ONNX and check it against PyTorch")
    checkpoint_flag(p)
    p.add_argument(
        "--format",
        default="onnx",
        choices=["onnx", "web"],
        help="onnx: one model file; web: fill the static demo folder (web/) with model and runtime "
        f"(default model: the photo model, models/{SHIPPED_WEB_MODEL})",
    )
    p.add_argument("--out", required=True, metavar="PATH", help="the .onnx file, or the web/ folder")
    p.add_argument("--int8", action="store_true", help="static int8 quantization, calibrated on training faces")
    p.add_argument(
        "--calibration-data",
        default=None,
        metavar="PATH",
        help="dataset whose training faces calibrate --int8 (default: $FER_DATA_DIR, else synthetic)",
    )
    p.add_argument("--no-check", action="store_true", help="skip the PyTorch/ONNX Runtime parity check")
    overwrite_flag(p, "--out (for web: its model.onnx and model.json)")
    p.set_defaults(func=cmd_export)


def cmd_teacher(args: argparse.Namespace) -> int:
    from fer_utils.data import training_splits
    from fer_utils.predict.predictor import default_checkpoint
    from fer_utils.train.distill import face_keys, save_teacher
    from fer_utils.train.evaluation import evaluate_checkpoint

    checkpoint = args.checkpoint or [default_checkpoint()]
    check_outputs({"teacher probabilities": args.out}, inputs=command_inputs(args), overwrite=args.overwrite)
    dataset = _load(args)
    _report_skips(dataset)
    train_set, _ = training_splits(dataset)
    face_keys(train_set)  # fail before the long pass if faces cannot be told apart
    report = evaluate_checkpoint(checkpoint, train_set, tta=args.tta, split="train", device=check_device(args.device))
    info = {"checkpoint": report.info["checkpoint"], "tta": args.tta, "data": dataset.source}
    out = save_teacher(args.out, train_set, report.probabilities, info, overwrite=args.overwrite)
    print(
        f"wrote {out} ({out.stat().st_size / 1e3:.0f} KB): teacher probabilities for {len(train_set)} training faces; "
        f"teacher accuracy on them {report.accuracy:.4f}. Train a student with: fer train --teacher {out}"
    )
    return 0


def add_teacher_parser(sub: Any) -> None:
    """``fer teacher``: its flags, next to ``cmd_teacher``."""
    p = sub.add_parser("teacher", help="store a model's (or ensemble's) probabilities on the training faces")
    _data_args(p)
    checkpoint_flag(p)
    p.add_argument("--out", required=True, metavar="FILE", help="the .npz to write (a few hundred KB)")
    p.add_argument("--tta", default="flip", choices=TTA_MODES, help="TTA for the teacher (default flip)")
    device_flag(p)
    overwrite_flag(p, "--out")
    p.set_defaults(func=cmd_teacher)


def cmd_ensemble(args: argparse.Namespace) -> int:
    from fer_utils.model.checkpoints import read_checkpoint_meta, save_ensemble

    check_outputs({"ensemble checkpoint": args.out}, inputs=command_inputs(args), overwrite=args.overwrite)
    out = save_ensemble(args.members, args.out, half=args.half, overwrite=args.overwrite, select=args.select)
    meta = read_checkpoint_meta(out)
    print(f"wrote {out} ({len(meta['members'])} members, {out.stat().st_size / 1e6:.1f} MB)")
    for i, m in enumerate(meta["members"]):
        print(f"  member {i}: {m.get('source')} at {m['image_size']} px")
    return 0


def add_ensemble_parser(sub: Any) -> None:
    """``fer ensemble``: its flags, next to ``cmd_ensemble``."""
    p = sub.add_parser(
        "ensemble", help="pack several checkpoints into one ensemble checkpoint (probabilities averaged)"
    )
    p.add_argument("members", nargs="+", metavar="CHECKPOINT", help="checkpoints with the same classes and input size")
    p.add_argument("--out", required=True, metavar="FILE", help="the ensemble .safetensors to write")
    p.add_argument("--half", action="store_true", help="store float16 weights: half the size, loaded as float32")
    p.add_argument(
        "--select",
        nargs="+",
        type=int,
        metavar="I",
        help="keep only these members, in this order: positions from 0 over every checkpoint's members "
        "(an ensemble file counts as its members), e.g. three of a shipped six, or one swapped for a new run",
    )
    overwrite_flag(p, "--out")
    p.set_defaults(func=cmd_ensemble)


def cmd_serve(args: argparse.Namespace) -> int:
    from fer_utils.deploy.app import serve

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
    from fer_utils.predict.frames import FrameSelection, expand_video_paths
    from fer_utils.predict.video import CLASSIFIER_THREADS, analyze_videos

    selection = FrameSelection(args.every, args.fps, args.start, args.end)
    sources, skipped = expand_video_paths(args.inputs)
    check_outputs(
        {
            "CSV results": args.csv,
            "JSON results": args.json,
            "annotated video": args.annotate,
            "timeline plot": args.plot,
        },
        inputs=command_inputs(args, [s for s in sources if not isinstance(s, int)]),
        overwrite=args.overwrite,
    )
    if not sources:
        raise FERDataError("; ".join(f"{s.source}: {s.reason}" for s in skipped[:3]))
    predictor = photo_predictor(args, threads=CLASSIFIER_THREADS)
    report = analyze_videos(
        lambda: predictor.video_analyzer(args.smooth, args.detect_size),
        sources,
        selection,
        model=predictor.name,
        csv_path=args.csv,
        json_path=args.json,
        annotate_path=args.annotate,
        plot_path=args.plot,
        progress=not args.quiet,
    )
    for summary in report.summaries:
        print(summary.line())
    for s in [*skipped, *report.skipped]:
        print(f"skipped: {s.source}: {s.reason}", file=sys.stderr)
    for run in report.runs:
        if run.truncated:
            print(
                f"note: {run.info.source}: ended after {run.decoded} of the {run.info.frames} frames its container "
                "announces (a truncated or damaged file); the frames before are analysed",
                file=sys.stderr,
            )
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    written = report.written
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
        help=f"search frames for faces at up to PX pixels (default {VIDEO_MAX_SIDE}: faces from about 44 px wide in "
        "720p; 1280 finds them from about 24 px, at about 3 times the detection time)",
    )
    p.add_argument("--csv", default=None, metavar="OUT", help="one row per face per analysed frame")
    p.add_argument("--json", default=None, metavar="OUT", help="the same rows plus per-track summaries")
    p.add_argument("--annotate", default=None, metavar="OUT.mp4", help="a copy with boxes, track ids and labels")
    p.add_argument("--plot", default=None, metavar="OUT.png", help="each track's probabilities over time")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    overwrite_flag(p, "output")
    p.set_defaults(func=cmd_video)


def cmd_data_info(args: argparse.Namespace) -> int:
    dataset = _load(args)
    table = dataset.class_count_table()
    if args.json:
        print(
            json.dumps(
                {
                    "source": dataset.source,
                    "format": dataset.format,
                    "classes": list(dataset.classes),
                    "splits": {k: v.class_counts().to_dict() for k, v in dataset.splits.items()},
                    "skipped": [dataclasses.asdict(s) for s in dataset.skipped],
                    "notes": dataset.notes,
                },
                indent=2,
            )
        )
        return 0
    print(
        f"source: {dataset.source}\nformat: {dataset.format}\nsplits: "
        + ", ".join(f"{k} ({len(v)})" for k, v in dataset.splits.items())
    )
    print(table.to_string())
    for note in dataset.notes:
        print(f"note: {note}")
    print(f"skipped files/rows: {len(dataset.skipped)}")
    for s in dataset.skipped[:20]:
        print(f"  {s.source}: {s.reason}")
    return 0


def add_data_parser(sub: Any) -> None:
    """``fer data``: its flags, next to ``cmd_data_info``."""
    p = sub.add_parser("data", help="inspect datasets")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    info = data_sub.add_parser("info", help="format, splits, class counts and skipped files of a dataset")
    info.add_argument("data", metavar="PATH")
    info.add_argument("--ferplus", default=None, metavar="CSV")
    info.add_argument("--ferplus-mode", default="majority", choices=list(FERPLUS_MODE_ALIASES))
    info.add_argument("--include-contempt", action="store_true")
    info.add_argument("--no-cache", action="store_true")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=cmd_data_info, quiet=True)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``fer`` (exposed for docs and tests): one sub-parser per command,
    each built next to its handler."""
    parser = OneLineParser(prog="fer", description="Facial expression recognition: train, evaluate, predict.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        add_train_parser,
        add_teacher_parser,
        add_evaluate_parser,
        add_calibrate_parser,
        add_predict_parser,
        add_export_parser,
        add_ensemble_parser,
        add_serve_parser,
        add_webcam_parser,
        add_video_parser,
        add_data_parser,
    ):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fer`` console script."""
    args = build_parser().parse_args(argv)
    # one sink for the terminal: names from files (classes, photos, videos) print as text
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = TerminalSafeStream(sys.stdout), TerminalSafeStream(sys.stderr, progress_bars=True)
    # one handler for stop requests: SIGTERM and SIGHUP stop every command as Ctrl-C does
    with stop_signals_as_interrupt() as received:
        try:
            status = args.func(args)
        except FERError as err:
            print(f"fer: error: {err}", file=sys.stderr)
            status = EXIT_USER_ERROR
        except KeyboardInterrupt:
            print(f"fer: interrupted{_stopped_by(received)}; no output was left half-written", file=sys.stderr)
            status = EXIT_INTERRUPTED
        except OSError as err:  # the system's reason (a full disk, a folder gone): one line, as a user error
            where = f"{err.filename}: " if err.filename else ""
            print(
                f"fer: error: {where}{err.strerror or err}; no output was left half-written at its name",
                file=sys.stderr,
            )
            status = EXIT_USER_ERROR
        finally:
            sys.stdout, sys.stderr = streams
    if received and status in (0, EXIT_INTERRUPTED):  # stopped (a server ends only so): say by which signal
        return exit_status(received[0])
    return status


def _stopped_by(received: list[int]) -> str:
    return f" (by {signal.Signals(received[0]).name})" if received else ""
