"""Two Gloo processes on the CPU train one model through torchrun, exactly as several GPUs would."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from fer_utils.data import load_dataset
from fer_utils.model.checkpoints import load_checkpoint, read_checkpoint_meta
from fer_utils.train.evaluation import evaluate_checkpoint

pytestmark = pytest.mark.slow

DATA, EPOCHS = "synthetic:0.3", 3  # small: three torchrun runs, each pays ~45 s of start-up and evaluation
ARGS = ["--data", DATA, "--epochs", str(EPOCHS), "--image-size", "40", "--batch-size", "16", "--lr", "0.002"]
ARGS += ["--threads", "1", "--tta", "none", "--quiet", "--device", "cpu"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(out: Path, *extra: str, **popen) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    command += ["--master_addr=127.0.0.1", f"--master_port={free_port()}"]
    command += ["-m", "fer_utils.cli", "train", "--out", str(out), *ARGS, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    popen.setdefault("start_new_session", True)  # its own process group: finish() can end it with its workers
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def finish(process: subprocess.Popen) -> str:
    try:
        output, _ = process.communicate(timeout=600)
    finally:  # a run that outlives its test is killed with its workers, never left running
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, output[-3000:]
    return output


def kill_9_processes_naming(text: str) -> None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    os.kill(int(entry.name), signal.SIGKILL)
            except OSError:
                pass  # the process ended meanwhile


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "full"
    finish(torchrun(out))
    return out


def test_two_processes_train_one_model_that_loads_in_one_process(uninterrupted):
    history = pd.read_csv(uninterrupted / "history.csv")
    assert len(history) == EPOCHS and history["val_accuracy"].max() > 0.3  # chance is 1/7
    metrics = json.loads((uninterrupted / "metrics.json").read_text())
    assert metrics["tta_none"]["accuracy"] > 0.3
    faces = load_dataset(DATA, progress=False).split("test")
    report = evaluate_checkpoint(uninterrupted / "best.safetensors", faces, device="cpu")  # one process, no DDP
    assert report.accuracy == pytest.approx(metrics["tta_none"]["accuracy"], abs=1e-9)
    assert read_checkpoint_meta(uninterrupted / "best.safetensors")["config"]["device"] == "cpu"


def test_killed_two_process_run_resumes_to_the_same_weights(uninterrupted, tmp_path):
    out = tmp_path / "killed"
    run = torchrun(out)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and run.poll() is None:
        history = out / "history.csv"
        if history.exists() and len(pd.read_csv(history)) >= 1:
            kill_9_processes_naming(str(out))  # the launcher and both workers (each in its own session)
            break
        time.sleep(0.05)
    try:
        run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    done = load_checkpoint(out / "last.safetensors").meta["training_state"]["epoch"] + 1
    assert 1 <= done < EPOCHS, "the run was not killed mid-way"
    finish(torchrun(out, "--resume", str(out / "last.safetensors")))
    resumed = load_checkpoint(out / "last.safetensors").model_state
    reference = load_checkpoint(uninterrupted / "last.safetensors").model_state
    for name, tensor in reference.items():
        assert torch.equal(resumed[name], tensor), name  # bit for bit
    cols = ["train_loss", "train_accuracy", "val_loss", "val_accuracy"]
    pd.testing.assert_frame_equal(
        pd.read_csv(out / "history.csv")[cols], pd.read_csv(uninterrupted / "history.csv")[cols]
    )
