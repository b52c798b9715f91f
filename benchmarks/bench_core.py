"""Core benchmark: data loading, training throughput (ours vs the common tutorial recipe), demo time.

Prints figures; asserts nothing. Run on an otherwise idle machine and compare numbers from one
run as ratios (repeated runs here vary by about 15 %).

    python benchmarks/bench_core.py [--data DIR_OR_CSV] [--skip-demo]

--data defaults to $FER_DATA_DIR; without real data the loading rows use generated files.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def bench_loading(data: str | None, work: Path) -> None:
    from fer_utils.core.labels import EMOTIONS
    from fer_utils.data import FaceSet, load_dataset, write_fer2013_csv
    from fer_utils.data.fer2013_csv import load_fer2013_csv

    if data and Path(data).is_dir():
        (_, cold) = timed(lambda: load_dataset(data, cache_dir=work / "cache", progress=False))
        (dataset, cached) = timed(lambda: load_dataset(data, cache_dir=work / "cache", progress=False))
        n = sum(len(s) for s in dataset.splits.values())
        print(f"folder load ({n} images): cold {cold:.1f} s, cached {cached:.2f} s")
        splits = dataset.splits
    else:
        rng = np.random.default_rng(0)
        n = 35_887
        faces = FaceSet(
            rng.integers(0, 256, (n, 48, 48), dtype=np.uint8),
            rng.integers(0, 7, n),
            EMOTIONS,
            np.array([f"r{i}" for i in range(n)]),
        )
        splits = {"train": faces}
        print("folder load: skipped (no --data folder)")
    csv_path = work / "fer2013.csv"
    write_fer2013_csv(splits, csv_path)
    (parsed, seconds) = timed(lambda: load_fer2013_csv(csv_path))
    rows = sum(len(s) for s in parsed.splits.values())
    print(f"FER2013 CSV parse ({rows} rows, {csv_path.stat().st_size / 1e6:.0f} MB): {seconds:.1f} s")
    (_, cold) = timed(lambda: load_dataset(csv_path, cache_dir=work / "cache"))
    (_, cached) = timed(lambda: load_dataset(csv_path, cache_dir=work / "cache"))
    print(f"FER2013 CSV via load_dataset: first {cold:.1f} s, cached {cached:.2f} s")


def mean_ms(fn, repeats: int) -> float:
    """Average wall time of ``fn()`` in milliseconds over ``repeats`` calls (after one warm-up call)."""
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1000


def endless(loader):
    """Batches from ``loader`` forever (a new shuffled pass when one ends)."""
    while True:
        yield from loader


def images_per_second(step, batches: int, batch_size: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(batches):
        step()
    return batches * batch_size / (time.perf_counter() - start)


def bench_default_training(batches: int) -> float:
    """img/s of the default TrainConfig through the library's ``train_one_epoch``, beside the same
    steps as a bare PyTorch loop (what ``train()`` did before the loop was split), in one run."""
    import itertools

    from torch.utils.data import DataLoader

    from fer_utils.data import TorchFaceDataset, synthetic_faces
    from fer_utils.model.devices import resolve_device, resolve_precision
    from fer_utils.model.factory import arch_spec, build_model
    from fer_utils.train.loop import TrainConfig
    from fer_utils.train.steps import make_optimizer, train_one_epoch
    from fer_utils.train.transforms import train_transform

    config = TrainConfig()
    device = resolve_device(config.device)
    spec = arch_spec(config.arch)
    faces = synthetic_faces(60, seed=0)
    loader = DataLoader(
        TorchFaceDataset(faces, train_transform(config.image_size, config.augment, spec.mean, spec.std)),
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=True,
    )
    model = build_model(config.arch, pretrained=False).to(device, memory_format=torch.channels_last).train()
    optimizer = make_optimizer(model, config)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    def step():
        x, y = next(batches_iter)
        loss = criterion(model(x.to(device).contiguous(memory_format=torch.channels_last)), y.to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def library_epoch(n: int) -> None:
        train_one_epoch(
            model,
            list(itertools.islice(batches_iter, n)),
            optimizer,
            criterion,
            lambda _: config.lr,
            0,
            device,
            resolve_precision(config.precision, device),
        )

    def timed_library() -> float:
        started = time.perf_counter()
        library_epoch(batches // 2)
        return (batches // 2) * config.batch_size / (time.perf_counter() - started)

    batches_iter = endless(loader)
    library_epoch(2)  # warm-up
    bare_rates, rates = [], []
    for _ in range(2):  # interleaved, so drift of a busy machine hits both alike; best of two each
        bare_rates.append(images_per_second(step, batches // 2, config.batch_size, warmup=1))
        rates.append(timed_library())
    rate, bare = max(rates), max(bare_rates)
    print(
        f"default recipe ({config.arch}, {config.image_size}px, batch {config.batch_size}, channels_last, "
        f"in-memory data, {device}): {rate:.0f} img/s through train_one_epoch, {bare:.0f} img/s as a bare "
        f"PyTorch loop (ratio {rate / bare:.2f})"
    )
    return rate


def bench_tutorial_training(work: Path, batches: int) -> float:
    """img/s of the usual tutorial: EfficientNet-B0 at 224 px, PIL ImageFolder, batch 32."""
    from PIL import Image
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from fer_utils.data import synthetic_faces
    from fer_utils.model.factory import build_model

    root = work / "imagefolder"
    faces = synthetic_faces(10, seed=0)
    for i, (image, label) in enumerate(zip(faces.images, faces.labels, strict=True)):
        (root / faces.classes[label]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / faces.classes[label] / f"{i}.jpg")
    tf = transforms.Compose(
        [
            transforms.Grayscale(3),
            transforms.Resize((224, 224)),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    loader = DataLoader(datasets.ImageFolder(root, tf), batch_size=32, shuffle=True, drop_last=True)
    model = build_model("efficientnet-b0", pretrained=False).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        x, y = next(batches_iter)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    batches_iter = endless(loader)
    rate = images_per_second(step, batches, 32, warmup=1)
    print(f"tutorial recipe (efficientnet-b0, 224px, batch 32, PIL ImageFolder): {rate:.1f} img/s training")
    return rate


def bench_demo(work: Path) -> None:
    """Wall time of the `make demo` training command (setup excluded)."""
    fer = Path(sys.executable).with_name("fer")
    command = [
        str(fer),
        "train",
        "--data",
        "synthetic",
        "--out",
        str(work / "demo"),
        "--epochs",
        "8",
        "--image-size",
        "48",
        "--quiet",
    ]
    (proc, seconds) = timed(lambda: subprocess.run(command, capture_output=True, text=True))
    last = [line for line in proc.stdout.splitlines() if "accuracy" in line][:1]
    print(
        f"synthetic demo (fer train, 8 epochs, 48px): {seconds:.0f} s wall; {last[0] if last else proc.stderr[-300:]}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=os.environ.get("FER_DATA_DIR"))
    parser.add_argument("--batches", type=int, default=12, help="timed batches for the default recipe")
    parser.add_argument("--tutorial-batches", type=int, default=3)
    parser.add_argument("--skip-demo", action="store_true")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    work = Path(tempfile.mkdtemp(prefix="fer-bench-"))
    try:
        bench_loading(args.data, work)
        ours = bench_default_training(args.batches)
        theirs = bench_tutorial_training(work, args.tutorial_batches)
        print(f"training speed ratio, default / tutorial: {ours / theirs:.0f}x")
        if not args.skip_demo:
            bench_demo(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
