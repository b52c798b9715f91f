"""``fer export``, ``fer ensemble`` and ``fer data info``: making model files from checkpoints, and
looking at a dataset, each next to its flags."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any

from fer_utils.cli.flags import (
    checkpoint_flag,
    overwrite_flag,
)
from fer_utils.cli.shared import command_inputs, load_data
from fer_utils.core.labels import FERPLUS_MODE_ALIASES
from fer_utils.core.outputs import check_outputs, ensure_writable_dir
from fer_utils.predict.predictor import SHIPPED_WEB_MODEL


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


def cmd_ensemble(args: argparse.Namespace) -> int:
    from fer_utils.model.assembly import save_ensemble
    from fer_utils.model.checkpoints import read_checkpoint_meta

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


def cmd_data_info(args: argparse.Namespace) -> int:
    dataset = load_data(args)
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
