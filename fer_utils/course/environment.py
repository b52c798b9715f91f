"""What a learner's environment holds, for bug reports: ``python -m fer_utils.course --check``.

Prints the platform (Colab, Jupyter, plain Python), Python, torch and its devices, the version of
every package the course asks for, which of the package's extras are installed, and which lessons
can run. The requirements are read from the installed package's own metadata (pyproject.toml's
extras), so the report cannot drift from what ``pip install`` installs.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from fer_utils.core.locations import REPO_DIR

EXTRAS = ("course", "export", "app", "scale", "lab")
"""The extras a learner may install (``all`` and ``dev`` are unions of these plus test tools)."""

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")
_SETUP_CALL = re.compile(r"""setup\(\s*["']([^"']*)["']\s*\)""")


@dataclass(frozen=True)
class Requirement:
    """One line of the package's requirements: a distribution, its version rule, and its extra."""

    name: str
    specifier: str
    extra: str  # "" for the base install

    @classmethod
    def parse(cls, line: str) -> Requirement:
        spec, _, marker = line.partition(";")
        name = _NAME.match(spec)[1]
        extra = _EXTRA.search(marker)
        rule = spec[len(name) :].strip()
        rule = re.sub(r"^\[[^\]]*\]", "", rule).strip()  # ray[data]>=2.40: the rule, not the extras
        return cls(name, rule, extra[1] if extra else "")


@dataclass
class EnvironmentReport:
    """Everything ``--check`` prints; also returned for tests and notebooks."""

    platform: str
    python: str
    system: str
    torch: str
    packages: dict[str, str] = field(default_factory=dict)  # name -> version, or "missing"
    too_old: dict[str, str] = field(default_factory=dict)  # name -> "version (needs rule)"
    extras: dict[str, bool] = field(default_factory=dict)
    notebooks: dict[str, str] = field(default_factory=dict)  # notebook -> "ready" or what it lacks

    def text(self) -> str:
        """The report as plain text to paste into an issue."""
        lines = [
            f"platform: {self.platform}",
            f"python:   {self.python}",
            f"system:   {self.system}",
            f"torch:    {self.torch}",
            "extras:   " + ", ".join(f"{name} {'yes' if ok else 'no'}" for name, ok in self.extras.items()),
            "packages:",
        ]
        lines += [
            f"  {name:<34} {version}" + (f"  TOO OLD: {self.too_old[name]}" if name in self.too_old else "")
            for name, version in sorted(self.packages.items(), key=lambda item: item[0].lower())
        ]
        if self.notebooks:
            lines.append("notebooks:")
            lines += [f"  {name:<40} {state}" for name, state in self.notebooks.items()]
        return "\n".join(lines)


def detect_platform() -> str:
    """Colab, a Jupyter kernel (JupyterLab, Notebook, VS Code) or plain Python."""
    if "google.colab" in sys.modules or os.environ.get("COLAB_RELEASE_TAG"):
        return "Google Colab"
    if _in_kernel() or os.environ.get("JPY_PARENT_PID") or os.environ.get("JPY_SESSION_NAME"):
        return "Jupyter kernel (JupyterLab, Notebook or an editor's notebook)"
    return "plain Python"


def _in_kernel() -> bool:
    """True inside a running Jupyter kernel (not merely with ipykernel imported)."""
    if "IPython" not in sys.modules:
        return False
    shell = sys.modules["IPython"].get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def course_requirements() -> list[Requirement]:
    """The installed package's requirements, each with the extra that brings it."""
    try:
        lines = importlib.metadata.requires("fer_utils") or []
    except importlib.metadata.PackageNotFoundError:
        lines = []
    return [Requirement.parse(line) for line in lines]


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _satisfies(version: str, rule: str) -> bool:
    """True when ``version`` meets ``rule`` (``>=2.2``, ``<9,>=8``); without ``packaging``, presence only."""
    try:
        from packaging.specifiers import SpecifierSet
    except ImportError:
        return True
    return SpecifierSet(rule).contains(version, prereleases=True)


def torch_line() -> str:
    """torch's version and the devices it can use (imports torch only when it is installed)."""
    if importlib.util.find_spec("torch") is None:
        return "not installed (this install predicts with exported ONNX models only)"
    import torch

    line = torch.__version__
    if torch.cuda.is_available():
        line += f", CUDA {torch.version.cuda}: {torch.cuda.get_device_name(0)}"
    else:
        line += ", no CUDA GPU"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        line += ", Apple MPS"
    return line + f", {torch.get_num_threads()} CPU threads"


def notebook_extras(notebooks_dir: Path) -> dict[str, list[str]]:
    """Each notebook's extras, as its first cell installs them (``setup("course,export")``)."""
    found = {}
    for path in sorted(notebooks_dir.glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
        code = next(("".join(c["source"]) for c in cells if c.get("cell_type") == "code"), "")
        match = _SETUP_CALL.search(code)
        found[path.name] = [e.strip() for e in match[1].split(",") if e.strip()] if match else []
    return found


def environment_report(notebooks_dir: Path | None = None) -> EnvironmentReport:
    """Read this environment: platform, versions, extras and which lessons it can run."""
    requirements = course_requirements()
    report = EnvironmentReport(
        platform=detect_platform(),
        python=f"{platform.python_version()} ({sys.executable})",
        system=platform.platform(),
        torch=torch_line(),
    )
    missing_by_extra: dict[str, list[str]] = {}
    for req in requirements:
        if req.extra not in ("", *EXTRAS):
            continue
        version = _version(req.name)
        if version is None:
            missing_by_extra.setdefault(req.extra, []).append(req.name)
        elif req.specifier and not _satisfies(version, req.specifier):
            report.too_old[req.name] = f"{version} (needs {req.specifier})"
            missing_by_extra.setdefault(req.extra, []).append(f"{req.name}{req.specifier}")
        report.packages.setdefault(req.name, version or "missing")
    report.extras = {extra: not missing_by_extra.get(extra) for extra in EXTRAS}
    notebooks_dir = notebooks_dir if notebooks_dir is not None else REPO_DIR / "notebooks"
    for name, extras in notebook_extras(notebooks_dir).items():
        lacking = sorted({m for extra in ["", *extras] for m in missing_by_extra.get(extra, [])})
        report.notebooks[name] = "ready" if not lacking else "needs " + ", ".join(lacking)
    return report
