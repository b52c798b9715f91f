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
