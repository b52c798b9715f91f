"""The package's structure, read from its code: data flows one way (no import cycles, no module
importing a layer above its own), and the prediction path never imports torch."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "fer_utils"

LAYERS = ("core", "runtime", "data", "faces", "model", "train", "predict", "deploy", "course", "cli")
"""The sub-packages, lower layers first: a module may import its own package or those before it,
never a later one. The folders are the table: a new sub-package must be placed here."""


def layer_of(module: str) -> int | None:
    """The layer of a module name like ``predict.video`` (None for the package itself)."""
    top = module.split(".")[0]
    return LAYERS.index(top) if top in LAYERS else None


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "fer_utils"


def imports_of(path: Path) -> set[str]:
    """Every fer_utils module ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fer_utils"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("fer_utils"))
    return {name.removeprefix("fer_utils").removeprefix(".") or "fer_utils" for name in found}


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: imports_of(path) - {name} for name, path in modules.items()}
    return {name: {t for t in targets if t in modules} for name, targets in graph.items()}


def test_every_module_lives_in_a_layer():
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert folders == set(LAYERS), "a sub-package is a layer: place it in LAYERS"
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert loose == [], "modules live in the layer folders; fer_utils/__init__.py is the public API"


def test_no_module_imports_a_layer_above_its_own():
    upward = [
        f"{source} ({LAYERS[layer_of(source)]}) imports {target} ({LAYERS[layer_of(target)]})"
        for source, targets in import_graph().items()
        if layer_of(source) is not None
        for target in targets
        if layer_of(target) is not None and layer_of(target) > layer_of(source)
    ]
    assert upward == []


def test_there_are_no_import_cycles():
    graph = import_graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert cycles == []


def run_isolated(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300, check=False
    )


def test_the_cli_parser_and_the_prediction_modules_import_no_torch():
    done = run_isolated(
        """
        import sys
        import fer_utils, fer_utils.deploy.app, fer_utils.predict.predictor, fer_utils.faces.results, fer_utils.faces.drawing
        from fer_utils.cli import build_parser
        build_parser().format_help()
        heavy = sorted(m for m in ("torch", "torchvision", "timm", "pandas", "matplotlib") if m in sys.modules)
        print(heavy)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_predicting_from_an_exported_or_cached_model_imports_no_torch(tmp_path, untrained_checkpoint, monkeypatch):
    pytest.importorskip("onnxruntime")
    from fer_utils.model.export import export_onnx

    onnx_file = export_onnx(untrained_checkpoint, tmp_path / "model.onnx").path
    monkeypatch.setenv("FER_CACHE_DIR", str(tmp_path / "cache"))
    warm = run_isolated(  # the first use of a checkpoint exports it into the cache (torch)
        f"""
        import numpy as np
        from fer_utils.predict.predictor import Predictor
        Predictor.from_checkpoint({str(untrained_checkpoint)!r}).predict_arrays([np.zeros((48, 48), np.uint8)])
        """
    )
    assert warm.returncode == 0, warm.stderr
    done = run_isolated(
        f"""
        import sys
        import numpy as np
        from fer_utils.predict.predictor import Predictor
        face = np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)
        cached = Predictor.from_checkpoint({str(untrained_checkpoint)!r})
        exported = Predictor.from_checkpoint({str(onnx_file)!r}, tta="crops")
        assert cached.runtime == exported.runtime == "onnx"
        a, b = cached.predict_arrays([face]), exported.predict_arrays([face])
        assert a.shape == (1, len(cached.classes)) and abs(a.sum() - 1) < 1e-4 and abs(b.sum() - 1) < 1e-4
        print("torch" in sys.modules)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
