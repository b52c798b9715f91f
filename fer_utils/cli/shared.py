"""What several ``fer`` commands share: exit codes, the dataset flags and loading, and the one
declaration of everything a command reads (for the output guard)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from fer_utils.core.errors import FERError
from fer_utils.core.labels import FERPLUS_MODE_ALIASES
from fer_utils.predict.frames import camera_index

EXIT_USER_ERROR = 1


EXIT_INTERRUPTED = 130


def data_flags(parser: argparse.ArgumentParser) -> None:
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


def load_data(args: argparse.Namespace, seed: int = 0):
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


def report_skips(dataset) -> None:
    for note in dataset.notes:
        print(f"note: {note}", file=sys.stderr)
    for s in dataset.skipped[:20]:
        print(f"skipped: {s.source}: {s.reason}", file=sys.stderr)
    if len(dataset.skipped) > 20:
        print(f"skipped: ... and {len(dataset.skipped) - 20} more", file=sys.stderr)


PHOTO_COMMANDS = ("predict", "video", "webcam", "serve")
"""The commands whose default model is the one shipped for photos."""


def _default_checkpoint(args: argparse.Namespace) -> list[Path]:
    """The checkpoint a command reads when ``--checkpoint`` is not given (none if it is missing)."""
    from fer_utils.predict.predictor import SHIPPED_WEB_MODEL, default_checkpoint, default_photo_checkpoint

    try:
        if args.command in PHOTO_COMMANDS:
            return [default_photo_checkpoint()]
        if getattr(args, "format", None) == "web":
            return [default_checkpoint(SHIPPED_WEB_MODEL)]
        return [default_checkpoint()]
    except FERError:  # no shipped model here: nothing to protect, and the command says so itself
        return []


def command_inputs(args: argparse.Namespace, files: Iterable[str | os.PathLike] = ()) -> Iterator[Path]:
    """Everything a command reads, declared in one place for the one output guard
    (``check_outputs``): ``files`` (the photos or videos found in its arguments' folders), its
    arguments themselves, its checkpoints (the default one when none is given), the dataset's
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
    if hasattr(args, "checkpoint") and not args.checkpoint:
        yield from _default_checkpoint(args)
    data = []
    if hasattr(args, "ferplus"):  # commands that load a dataset
        data.append(args.data)
    if getattr(args, "int8", False):
        data.append(args.calibration_data or os.environ.get("FER_DATA_DIR"))
    for source in data:
        if source is not None or os.environ.get("FER_DATA_DIR"):
            from fer_utils.data.loading import dataset_files

            yield from dataset_files(source)


def parquet_flag(parser: argparse.ArgumentParser, unit: str) -> None:
    parser.add_argument(
        "--parquet",
        default=None,
        metavar="DIR",
        help=f"also write one Parquet file per {unit} (plus each input's path) into DIR, with a manifest of the "
        "model, options and inputs behind them: rerunning the same command skips what is done "
        "(pandas.read_parquet(DIR) reads them all)",
    )
    parser.add_argument(
        "--redo",
        action="store_true",
        help="with --parquet: the folder's results came from another model or other options; analyse every input "
        "again with these (only the files fer wrote and recorded there are replaced)",
    )


ROW_OPTIONS = {
    "predict": ("tta", "no_detect", "detector", "no_align"),
    "video": ("every", "fps", "start", "end", "smooth", "detect_size", "detect_interval", "detector", "no_align"),
}
"""The flags of each command that change its rows, which a ``--parquet`` folder records (the
runtime does not: ONNX Runtime and PyTorch give the same rows; nor does the engine)."""


def parquet_run(args: argparse.Namespace, command: str):
    """The ``--parquet`` folder of this command (None without the flag), locked for this run and
    checked against the model and options that made its rows."""
    from fer_utils.core.errors import FERConfigError

    if not args.parquet:
        if getattr(args, "redo", False):
            raise FERConfigError("--redo starts a --parquet folder over: give --parquet DIR with it")
        return None
    from fer_utils.predict.parquet import ParquetRun, model_identity

    settings = {"--checkpoint": model_identity(args.checkpoint or _default_checkpoint(args))}
    settings |= {"--" + name.replace("_", "-"): getattr(args, name) for name in ROW_OPTIONS[command]}
    minutes = getattr(args, "chunk_minutes", None)
    if command == "video":
        settings["--chunk-minutes"] = minutes
    unit = (
        {"predict": "photos", "video": "videos"}[command] if getattr(args, "engine", "local") == "local" else "inputs"
    )
    return ParquetRun(
        args.parquet,
        command,
        settings,
        part_seconds=60 * minutes if minutes else None,
        redo=args.redo,
        on_plan=lambda done, changed: say_plan(args.parquet, unit, done, changed),
    )


def say_plan(folder: str, unit: str, done: list[str], changed: list[str]) -> None:
    """What a rerun into a ``--parquet`` folder will do, in a line or two, before the work: the
    inputs an earlier run did (from this model and these options, and unchanged since), and
    those changed since."""
    if changed:
        print(
            f"note: {len(changed)} {unit} changed since the earlier run in {folder} (e.g. {changed[0]}): "
            "their earlier rows are removed and they are analysed again",
            file=sys.stderr,
        )
    if done:
        print(f"{len(done)} {unit} already done in {folder} (an earlier run, same model and options): skipped",
              file=sys.stderr)  # fmt: skip


def engine_flags(parser: argparse.ArgumentParser) -> None:
    """``--engine`` (local, or Ray with ``--parquet``), ``--ray-address`` and ``--workers``."""
    parser.add_argument(
        "--engine",
        default="local",
        choices=["local", "ray"],
        help="local (this process; default) or ray: inputs spread over Ray workers, written to --parquet",
    )
    parser.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="a running Ray cluster (e.g. HOST:6379 after `ray start --head`); default: start Ray on this machine",
    )
    parser.add_argument(
        "--workers", type=positive_int, default=None, metavar="N", help="Ray workers (default: one per CPU)"
    )
    parser.add_argument(
        "--ray-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="with --ray-address: give up (one error line) when the cluster does not answer within SECONDS (default 30)",
    )


def positive_int(text: str) -> int:
    """An argparse type: an integer of 1 or more (``--workers 0`` is refused, not taken as the default)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, got {value}")
    return value
