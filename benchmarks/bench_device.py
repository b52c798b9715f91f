"""GPU check: training speed with and without mixed precision, and CPU/GPU agreement.

Prints figures; asserts nothing. On a machine without CUDA it says so and exits 0.

    python benchmarks/bench_device.py [--data FER2013_DIR] [--checkpoint FILE] [--limit N]
                                      [--only {rates,agreement}] [--json FILE [--overwrite]]

- One training epoch over FER2013's training faces (synthetic faces without --data) through
  ``train_one_epoch``, at 64 px (EfficientNet-Lite0, the CPU default) and with the GPU recipe's
  architecture, size and batch (``RECIPES["gpu"]``), each in fp32 and in the ``auto`` mixed
  precision: img/s, and what one FER2013 epoch takes.
- A model's probabilities (the shipped one, or ``--checkpoint``) on the same faces on the CPU and
  on the GPU: the largest difference (2.2e-3 measured for the fast model on an H200).
``--json`` also writes the figures to a file (a script can size a training run from them).
Designed to finish in under 5 minutes on one large GPU; ``--limit`` caps the faces per epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
from torch.utils.data import DataLoader

from fer_utils.core.atomic import write_text_atomic
from fer_utils.core.config import RECIPES
from fer_utils.core.errors import FERError
from fer_utils.core.outputs import check_outputs
from fer_utils.data import TorchFaceDataset, load_dataset, synthetic_faces
from fer_utils.model.devices import resolve_precision
from fer_utils.model.factory import arch_spec, build_model
from fer_utils.predict.predictor import Predictor
from fer_utils.train.loop import TrainConfig
from fer_utils.train.steps import make_optimizer, train_one_epoch
from fer_utils.train.transforms import train_transform


def epoch_rate(faces, arch: str, image_size: int, precision: str, device: torch.device, batch: int) -> float:
    config = TrainConfig(arch=arch, image_size=image_size, precision=precision, batch_size=batch, pretrained=False)
    spec = arch_spec(arch)
    dataset = TorchFaceDataset(faces, train_transform(image_size, config.augment, spec.mean, spec.std))
    loader = DataLoader(
        dataset,
        batch_size=batch,
        shuffle=True,
        drop_last=True,
        num_workers=RECIPES["gpu"]["num_workers"],
        pin_memory=True,
    )
    model = build_model(arch, len(faces.classes)).to(device, memory_format=torch.channels_last)
    optimizer = make_optimizer(model, config)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    dtype = resolve_precision(precision, device)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    warm = [next(iter(loader))]  # cuDNN autotuning and allocator warm-up, untimed
    train_one_epoch(model, warm, optimizer, criterion, lambda _: config.lr, 0, device, dtype, scaler)
    torch.cuda.synchronize(device)
    started = time.perf_counter()
    stats = train_one_epoch(model, loader, optimizer, criterion, lambda _: config.lr, 0, device, dtype, scaler)
    torch.cuda.synchronize(device)
    return stats.images / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=os.environ.get("FER_DATA_DIR"))
    parser.add_argument("--checkpoint", default=None, help="default: the shipped model")
    parser.add_argument("--limit", type=int, default=0, help="at most N training faces per epoch (0 = all)")
    parser.add_argument("--only", choices=("rates", "agreement"), default=None, help="run one of the two parts")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    args = parser.parse_args()
    try:
        check_outputs({"figures JSON": args.json}, inputs=[args.checkpoint, args.data], overwrite=args.overwrite)
    except FERError as err:
        parser.error(str(err))
    if not torch.cuda.is_available():
        print(f"no CUDA device on this machine (torch {torch.__version__}): nothing to measure")
        return 0
    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device)
    print(
        f"device: {name}, torch {torch.__version__}, CUDA {torch.version.cuda}, bf16 {torch.cuda.is_bf16_supported()}"
    )
    faces = load_dataset(args.data, progress=False).split("train") if args.data else synthetic_faces(1000, seed=0)
    if args.limit and len(faces) > args.limit:
        faces = faces.subset(np.random.default_rng(0).choice(len(faces), args.limit, replace=False))
    print(f"training faces per epoch: {len(faces)} ({'FER2013' if args.data else 'synthetic'})")
    figures: dict[str, object] = {"device": name, "torch": torch.__version__, "faces": len(faces)}
    torch.backends.cudnn.benchmark = True
    gpu = RECIPES["gpu"]
    for arch, size, batch in (("efficientnet-lite0", 64, 256), (gpu["arch"], gpu["image_size"], gpu["batch_size"])):
        if args.only == "agreement":
            break
        rates = {p: epoch_rate(faces, arch, size, p, device, batch) for p in ("fp32", "auto")}
        auto = resolve_precision("auto", device)
        print(
            f"{arch} {size}px batch {batch}: fp32 {rates['fp32']:.0f} img/s, mixed ({auto}) {rates['auto']:.0f} img/s "
            f"({rates['auto'] / rates['fp32']:.2f}x); one FER2013 epoch (28,709 faces) "
            f"{28709 / rates['auto']:.0f} s"
        )
        figures[f"{arch} {size}px"] = {"batch": batch, "fp32_img_s": rates["fp32"], "mixed_img_s": rates["auto"]}
    if args.only != "rates":
        cpu = Predictor.from_checkpoint(args.checkpoint, device="cpu")
        on_gpu = Predictor.from_checkpoint(args.checkpoint, device="cuda")
        sample = list(faces.images[:512])
        difference = float(np.abs(cpu.predict_arrays(sample) - on_gpu.predict_arrays(sample)).max())
        which = args.checkpoint or "shipped model"
        print(f"{which}, CPU vs {name}: max probability difference {difference:.1e} over {len(sample)} faces")
        figures["cpu_gpu_max_difference"] = difference
    if args.json:
        write_text_atomic(args.json, json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
