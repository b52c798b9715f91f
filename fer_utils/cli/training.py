"""``fer train``, ``fer teacher``, ``fer evaluate`` and ``fer calibrate``: the commands that read a
labelled dataset, each next to its flags."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from fer_utils.cli.flags import (
    check_device,
    checkpoint_flag,
    device_flag,
    overwrite_flag,
)
from fer_utils.cli.shared import EXIT_INTERRUPTED, command_inputs, data_flags, load_data, report_skips
from fer_utils.core.config import RECIPES
from fer_utils.core.errors import FERError
from fer_utils.core.locations import PACKAGE_DIR
from fer_utils.core.outputs import check_outputs, ensure_writable_dir
from fer_utils.predict.predictor import SHIPPED_MODEL
from fer_utils.runtime.preprocess import TTA_MODES


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
    from fer_utils.train.runs import resume_config

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
    dataset = load_data(args, config.seed)
    ensure_writable_dir(out, "training run")  # after loading: --out may sit inside the data folder
    run_files = {f"training run's {name}": out / name for name in [*RUN_FILES.values(), "metrics.json"]}
    check_outputs(run_files, inputs=command_inputs(args), overwrite=True)  # a run replaces its own files
    report_skips(dataset)
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
    data_flags(p)
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
    from fer_utils.model.checkpoints import read_checkpoint_meta
    from fer_utils.predict.predictor import default_checkpoint
    from fer_utils.train.evaluation import evaluate_checkpoint, optimism_note

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
    dataset = load_data(args)
    report_skips(dataset)
    split = args.split or dataset.default_eval_split()
    faces = dataset.split(split)
    modes = list(dict.fromkeys(args.tta))
    if len(modes) > 1:  # the other modes first, one line each; the first one is reported in full below
        from fer_utils.model.assembly import load_model

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
        _score_without_training_duplicates(report, faces, dataset.splits["train"])
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


def _score_without_training_duplicates(report: Any, faces: Any, train_faces: Any) -> None:
    """The score again without the evaluated faces that duplicate training images (FER2013's
    test folders repeat some), printed and kept in the report."""
    from fer_utils.data.duplicates import duplicates_of
    from fer_utils.train.evaluation import EvaluationReport

    duplicate = duplicates_of(faces, train_faces)
    if not duplicate.any():
        return
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


def add_evaluate_parser(sub: Any) -> None:
    """``fer evaluate``: its flags, next to ``cmd_evaluate``."""
    p = sub.add_parser("evaluate", help="score a checkpoint on a labelled dataset")
    data_flags(p)
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
    dataset = load_data(args)
    report_skips(dataset)
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
    data_flags(p)
    p.add_argument("--checkpoint", default=None, metavar="FILE", help=f"default: models/{SHIPPED_MODEL}")
    p.add_argument("--split", default=None, help="the faces to fit on (default: val, the selection split)")
    device_flag(p)
    p.add_argument("--out", required=True, metavar="FILE", help="the calibrated .safetensors to write")
    overwrite_flag(p, "--out")
    p.set_defaults(func=cmd_calibrate)


def cmd_teacher(args: argparse.Namespace) -> int:
    from fer_utils.data import training_splits
    from fer_utils.predict.predictor import default_checkpoint
    from fer_utils.train.distill import face_keys, save_teacher
    from fer_utils.train.evaluation import evaluate_checkpoint

    checkpoint = args.checkpoint or [default_checkpoint()]
    check_outputs({"teacher probabilities": args.out}, inputs=command_inputs(args), overwrite=args.overwrite)
    dataset = load_data(args)
    report_skips(dataset)
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
    data_flags(p)
    checkpoint_flag(p)
    p.add_argument("--out", required=True, metavar="FILE", help="the .npz to write (a few hundred KB)")
    p.add_argument("--tta", default="flip", choices=TTA_MODES, help="TTA for the teacher (default flip)")
    device_flag(p)
    overwrite_flag(p, "--out")
    p.set_defaults(func=cmd_teacher)
