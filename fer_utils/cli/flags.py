"""Command-line flags shared by the ``fer`` commands that find faces (predict, video, webcam,
serve): which model, which device, which face detector and runtime, and the one Predictor they
describe. The choices come from the library's own tables.
"""

from __future__ import annotations

import argparse

from fer_utils.core.errors import FERConfigError
from fer_utils.faces.detection import DETECTORS
from fer_utils.predict.predictor import RUNTIMES, SHIPPED_MODEL, SHIPPED_PHOTO_MODEL, Predictor, PredictorOptions
from fer_utils.predict.video import DEFAULT_SMOOTHING


def check_device(name: str) -> str:
    """Check a --device value before any work; the library's message, in flag words. ``auto`` and
    ``cpu`` need no check (and no torch)."""
    if name in ("auto", "cpu"):
        return name
    from fer_utils.model.devices import resolve_device

    try:
        resolve_device(name)
    except FERConfigError as err:
        raise FERConfigError(
            str(err).replace("use device 'cpu'", "use --device cpu").replace("device '", "--device '")
        ) from None
    return name


def device_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA, then Apple MPS, then CPU; default), cpu, cuda, cuda:N, mps"
    )


def photo_flags(parser: argparse.ArgumentParser) -> None:
    """Flags of every command that finds faces in photos: device, detector, alignment, runtime."""
    device_flag(parser)
    parser.add_argument(
        "--detector",
        default="yunet",
        choices=DETECTORS,
        help="face detector (default yunet; haar needs OpenCV 4.x)",
    )
    parser.add_argument("--no-align", action="store_true", help="do not rotate faces to level the eyes before cropping")
    parser.add_argument(
        "--runtime",
        default="auto",
        choices=RUNTIMES,
        help="classifier runtime: auto (ONNX Runtime on the CPU, exported once and cached; PyTorch when --device "
        "names a GPU), onnx, torch",
    )


def predictor_options(args: argparse.Namespace, tta: str = "none", threads: int = 0) -> PredictorOptions:
    """The Predictor that ``--checkpoint/--device/--detector/--no-align/--runtime`` describe, as
    one value (the local engine builds it, each Ray worker too); ``threads``: the classifier's
    ONNX Runtime threads (0: all cores)."""
    checkpoint = tuple(str(c) for c in args.checkpoint) if args.checkpoint else None
    return PredictorOptions(
        checkpoint, tta, check_device(args.device), args.detector, args.runtime, not args.no_align, threads
    )


def photo_predictor(args: argparse.Namespace, tta: str = "none", threads: int = 0) -> Predictor:
    """The Predictor the flags describe (:func:`predictor_options`), built here."""
    return predictor_options(args, tta, threads).build()


def overwrite_flag(parser: argparse.ArgumentParser, outputs: str) -> None:
    parser.add_argument(
        "--overwrite", action="store_true", help=f"replace an existing {outputs} (inputs are never replaced)"
    )


def checkpoint_flag(parser: argparse.ArgumentParser, photos: bool = False) -> None:
    """``--checkpoint``; commands on photos default to the model shipped for photos (FER+ labels),
    the others to the FER2013 model."""
    shipped = SHIPPED_PHOTO_MODEL if photos else SHIPPED_MODEL
    parser.add_argument(
        "--checkpoint",
        nargs="+",
        default=None,
        metavar="FILE",
        help=f"default: models/{shipped}; several files are averaged as an ensemble"
        + ("; an exported .onnx file runs without torch" if photos else ""),
    )


def add_serve_flags(parser: argparse.ArgumentParser) -> None:
    """The app's flags (``fer serve``)."""
    checkpoint_flag(parser, photos=True)
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve your network")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="public gradio.live link (e.g. from Colab)")
    photo_flags(parser)


def smooth_flag(parser: argparse.ArgumentParser) -> None:
    """``--smooth``: the time constant of each tracked face's probability smoothing (video, webcam)."""
    parser.add_argument(
        "--smooth",
        type=float,
        default=DEFAULT_SMOOTHING,
        metavar="SECONDS",
        help=f"time constant of each face's probability smoothing over time (default {DEFAULT_SMOOTHING}; "
        "0 = raw; `fer video` also writes the raw values, in its raw_* columns)",
    )
