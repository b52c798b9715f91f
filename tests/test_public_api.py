"""The names a user imports from ``fer_utils``: every one resolves, ``import *`` works, tab completion
lists them, and importing the package stays light (no torch until a name that needs it is used)."""

from __future__ import annotations

import subprocess
import sys

import fer_utils


def test_every_public_name_resolves_and_star_import_works():
    namespace: dict = {}
    exec("from fer_utils import *", namespace)  # what a user types first
    missing = [name for name in fer_utils.__all__ if name not in namespace]
    assert not missing, f"from fer_utils import * left out {missing}"
    for name in fer_utils.__all__:
        assert namespace[name] is getattr(fer_utils, name)


def test_public_names_are_listed_for_tab_completion():
    listed = dir(fer_utils)
    assert {"Predictor", "load_model", "train", "TrainConfig", "EMOTIONS", "FERError"} <= set(listed)


def test_the_public_load_model_loads_what_build_model_saved(tmp_path):
    from conftest import save_lite0

    path = save_lite0(tmp_path / "m.safetensors", fer_utils.build_model("efficientnet-lite0").eval())
    model, checkpoint = fer_utils.load_model(path)
    assert checkpoint.classes == fer_utils.EMOTIONS and sum(p.numel() for p in model.parameters()) > 0


def test_importing_the_package_imports_no_torch():
    code = "import sys, fer_utils; fer_utils.Predictor; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_results_and_the_predictor_print_short_and_readable(untrained_checkpoint):
    import re

    import numpy as np

    from conftest import face_photo

    predictor = fer_utils.Predictor.from_checkpoint(untrained_checkpoint)
    shown = repr(predictor)
    assert shown.startswith("Predictor(") and str(untrained_checkpoint) in shown and "0x" not in shown
    assert f"runtime={predictor.runtime!r}" in shown
    result = predictor.predict_image(np.repeat(face_photo([(40, 100), (400, 200)])[..., None], 3, axis=2))
    text = repr(result)
    assert text.startswith("ImageResult(") and "2 faces" in text and text.count("FaceResult(") == 2
    assert len(text) < 400 and not re.search(r"\d\.\d{4,}", text), text  # rounded, not 16-digit floats
    empty = predictor.predict_image(np.full((200, 200), 128, np.uint8))
    assert "0 faces" in repr(empty) and "FaceResult" not in repr(empty)


def test_the_course_imports_the_public_names_from_fer_utils():
    """Learners see the surface they keep: a name that ``fer_utils`` exports is imported from there,
    not from the module it lives in (deep paths stay for the machinery a lesson opens on purpose)."""
    import json
    import re
    from pathlib import Path

    deep = []
    for path in sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        for line in "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code").splitlines():
            if m := re.match(r"\s*from (fer_utils\.[\w.]+) import (.+)", line):
                names = {n.strip() for n in m[2].split("#")[0].split(",")}
                deep += [f"{path.name}: {name} from {m[1]}" for name in names & set(fer_utils.__all__)]
    assert not deep, deep


def test_train_is_callable_however_its_package_was_imported(monkeypatch):
    """``fer_utils.train`` is the sub-package and the public ``train``: calling it trains, and the
    usual imports of its modules keep working."""
    import fer_utils.train.loop as loop
    from fer_utils import train

    calls = []
    monkeypatch.setattr(loop, "train", lambda *args, **kwargs: calls.append((args, kwargs)) or "trained")
    assert train("config", "train_set", "val_set", "out", progress=False) == "trained"
    assert calls == [(("config", "train_set", "val_set", "out"), {"progress": False})]
    code = "import fer_utils.train.evaluation as e, fer_utils\nfrom fer_utils import train\nassert callable(train) and train is fer_utils.train\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
