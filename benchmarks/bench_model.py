"""Model benchmark: training speed of the default recipe vs the tutorial recipe, time to reach
60 % / 65 % PublicTest accuracy, and inference latency per face. Prints figures; asserts nothing.

    python benchmarks/bench_model.py [--checkpoint FILE] [--train --data FER2013_DIR]

Without --train, the time-to-accuracy rows come from the shipped model's training history
(models/*.history.csv, written by the same recipe on this kind of machine). With --train, the
default recipe trains on --data (FER2013 with its PublicTest split) until it reaches 65 % or
runs out of epochs, and the times are measured in this run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench_core import bench_default_training, bench_tutorial_training, mean_ms
from fer_utils.predict.predictor import Predictor

THRESHOLDS = (0.60, 0.65)


def time_to_accuracy(history: pd.DataFrame, source: str) -> None:
    elapsed = history["seconds"].cumsum()
    for threshold in THRESHOLDS:
        reached = history.index[history["val_accuracy"] >= threshold]
        if len(reached):
            i = reached[0]
            print(
                f"time to {threshold:.0%} PublicTest ({source}): {elapsed[i] / 60:.1f} min "
                f"(epoch {int(history['epoch'][i])})"
            )
        else:
            print(
                f"time to {threshold:.0%} PublicTest ({source}): not reached "
                f"(best {history['val_accuracy'].max():.3f} in {elapsed.iloc[-1] / 60:.1f} min)"
            )


def train_and_time(data: str) -> None:
    from fer_utils.data import load_dataset, training_splits
    from fer_utils.train.loop import TrainConfig, train

    train_set, val_set = training_splits(load_dataset(data, progress=False))
    with tempfile.TemporaryDirectory() as out:
        result = train(
            TrainConfig(),
            train_set,
            val_set,
            out,
            progress=False,
            on_epoch_end=lambda row: row["val_accuracy"] >= THRESHOLDS[-1],
        )
    time_to_accuracy(result.history, "measured now")


def inference_latency(predictor: Predictor, repeats: int = 30) -> None:
    faces = np.random.default_rng(0).integers(0, 256, (64, 48, 48), dtype=np.uint8)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        single_ms = mean_ms(lambda: predictor.predict_arrays(faces[:1]), repeats)
        batch_rate = 64 / (mean_ms(lambda: predictor.predict_arrays(faces), max(3, repeats // 10)) / 1000)
        print(
            f"inference, {threads} thread(s): {single_ms:.1f} ms per face at batch 1, "
            f"{batch_rate:.0f} faces/s at batch 64 (preprocessing included, no TTA)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None, help="default: the shipped model")
    parser.add_argument("--train", action="store_true", help="measure time-to-accuracy by training now")
    parser.add_argument("--data", default=os.environ.get("FER_DATA_DIR"))
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--tutorial-batches", type=int, default=3)
    args = parser.parse_args()
    predictor = Predictor.from_checkpoint(args.checkpoint)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs; model {predictor.checkpoint.path}")
    with tempfile.TemporaryDirectory() as work:
        ours = bench_default_training(args.batches)
        theirs = bench_tutorial_training(Path(work), args.tutorial_batches)
    print(f"training speed ratio, default / tutorial: {ours / theirs:.0f}x")
    if args.train:
        if not args.data:
            parser.error("--train needs --data (or FER_DATA_DIR)")
        train_and_time(args.data)
    else:
        history = Path(str(predictor.checkpoint.path).replace(".safetensors", ".history.csv"))
        if history.is_file():
            time_to_accuracy(pd.read_csv(history), f"shipped run, {history.name}")
        else:
            print(f"no {history.name}: run with --train --data FER2013_DIR to measure time-to-accuracy")
    inference_latency(predictor)


if __name__ == "__main__":
    main()
