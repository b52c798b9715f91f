"""Run every notebook as Colab runs it, in Colab's environment (``requirements-colab.txt``).

    python .ci/colab/check.py                 # every notebook; exit 1 if one fails or changes a Colab package
    python .ci/colab/check.py --only 02 07    # some of them
    python .ci/colab/check.py --python python3.11 --jobs 2

1. **Colab's runtime, once**: a virtualenv on Colab's Python (or the nearest one here), holding at
   Colab's versions every package Colab preinstalls that the course, its installs or the kernel
   touch (found by asking pip what the course would install under Colab's pins), with Colab's
   ``cv2`` (``opencv-contrib-python`` written last, as in Colab) and a stand-in ``google.colab``.
2. **Each notebook in a fresh copy of it** (hard links), with an empty home (no pip cache, no ONNX
   export, no dataset cache, no model left by another lesson) and none of this machine's
   ``FER_*`` variables: the kernel imports ``google.colab`` when it starts, the first cell clones
   the course from a ``file://`` URL of this checkout's committed ``HEAD`` and ``setup()`` pip-installs
   that notebook's extras, then the notebook runs in FAST mode. The first notebook of each set of
   extras (``course``; ``course,export``; ...) installs into Colab's runtime as it is; the others of
   the set start from a copy of the runtime in which ``setup()`` already installed the same extras
   (built once, beside the runtime), so their first cell reinstalls only the course itself: the
   install is the same for every notebook of a set, and is checked once per set.
3. **Nothing of Colab's changes**: after each notebook, every package of the runtime must still
   have the version it had, and any package it added that Colab ships must have Colab's version.
4. **Widgets under Colab's ipywidgets**: ``tests/test_widgets.py`` runs in notebook 07's runtime.

What it cannot cover: Colab's own front end (its widget manager, file upload dialog, camera),
GPUs and Google Drive.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pins import PINS_FILE, ColabList, normalized, read_pins

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
KERNEL_STACK = [
    # what Colab's kernel and front end bring, at Colab's versions whatever the course asks for
    "pip", "setuptools", "ipykernel", "ipython", "ipywidgets", "traitlets", "jupyter_client", "jupyter_core",
    "notebook", "nbformat", "matplotlib-inline", "pyzmq", "tornado", "pytest",
    "opencv-python", "opencv-python-headless",
]  # fmt: skip
CV2_LAST = "opencv-contrib-python"
"""Colab has opencv-python and -headless 5.0 beside opencv-contrib-python 4.14, and ``cv2`` is
4.14's: the contrib wheel was written last. The runtime is built in the same order."""
ANSI = re.compile(r"\x1b\[[0-9;]*m")
STAND_INS = ("torch", "torchvision")
"""Colab installs these from PyTorch's CPU index; the runtime takes the same releases from PyPI."""
CUDA_RUNTIME = re.compile(r"^(nvidia-|cuda-|triton$)")
"""What PyPI's torch adds to Colab's CPU wheel (its CUDA libraries, at the versions that torch pins):
these keep torch's versions, not those of Colab's own CUDA packages."""
LONGEST_FIRST = ("08", "09", "06", "05", "04", "02", "10")
"""The notebooks that take longest in FAST mode start first, so the run does not end on one long
notebook with the other cores idle (only the order; any order gives the same results)."""
GOOGLE_COLAB_STUB = '"""Stands in for Colab\'s google.colab (the course only checks that it is imported)."""\n'


def find_python(colab: ColabList, wanted: str | None) -> tuple[str, str]:
    """The interpreter to build the runtime on: ``wanted``, else Colab's minor version if this
    machine has it (on PATH or under pyenv), else this one. Returns (path, note)."""
    if wanted:
        return wanted, ""
    minor = ".".join(colab.python.split(".")[:2])
    candidates = [shutil.which(f"python{minor}") or ""]
    candidates += sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{minor}*/bin/python{minor}")))
    for candidate in candidates:
        if candidate and subprocess.run([candidate, "-c", "pass"], capture_output=True).returncode == 0:
            return candidate, ""
    return sys.executable, f"Colab runs Python {colab.python}, which this machine lacks: using {sys.version.split()[0]}"


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a command, raising with its last lines of output when it fails."""
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
        raise RuntimeError(f"{' '.join(command[:6])} ... failed ({done.returncode}):\n{tail}")
    return done


def installed(python: Path) -> dict[str, str]:
    """Every distribution in an environment: normalized name -> version."""
    code = "import importlib.metadata as m, json; print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
    found = json.loads(run([str(python), "-c", code]).stdout)
    return {normalized(name): version for name, version in found.items()}


def site_packages(python: Path) -> Path:
    return Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())


def build_runtime(base: Path, colab: ColabList, python: str) -> dict[str, str]:
    """Colab's runtime at ``base`` (reused while the pins, the requirements and the Python match)."""
    # what the runtime is made from: the pins, and the requirements the course's installs read
    requirements = [REPO / "requirements.txt", *sorted(REPO.glob("requirements-[!dl]*.txt"))]
    stamp_text = hashlib.sha256(
        b"".join(p.read_bytes() for p in [PINS_FILE, *requirements]) + python.encode()
    ).hexdigest()
    stamp = base / ".colab-runtime"
    py = base / "bin" / "python"
    if stamp.is_file() and stamp.read_text() == stamp_text and py.exists():
        return installed(py)
    shutil.rmtree(base, ignore_errors=True)
    run([python, "-m", "venv", str(base)])
    pin = lambda name: f"{colab.names[normalized(name)]}=={colab.pins[normalized(name)]}"  # noqa: E731
    constraints = base / "colab-constraints.txt"
    constraints.write_text("".join(f"{pin(n)}\n" for n in sorted(colab.pins) if not CUDA_RUNTIME.match(n)))
    # PyPI's torch pulls its CUDA libraries; Colab's CPU wheel has them built in. Both run on the CPU.
    run([str(py), "-m", "pip", "install", "--quiet", "-c", str(constraints), *[pin(n) for n in STAND_INS]])
    report = base / "course-closure.json"
    # What the course and the kernel would install under Colab's pins: those Colab has are preinstalled.
    run([
        str(py), "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
        "-c", str(constraints), *KERNEL_STACK, "-r", str(REPO / "requirements.txt"),
    ])  # fmt: skip
    closure = {normalized(item["metadata"]["name"]) for item in json.loads(report.read_text())["install"]}
    present = installed(py)
    wanted = (closure | {normalized(n) for n in KERNEL_STACK}) & colab.pins.keys()
    wanted = sorted(n for n in wanted if not CUDA_RUNTIME.match(n) and present.get(n) != colab.pins[n])
    run([str(py), "-m", "pip", "install", "--quiet", "--no-deps", *[pin(n) for n in wanted]])
    run([str(py), "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall", pin(CV2_LAST)])
    stub = site_packages(py) / "google" / "colab"  # no google/__init__.py: google.protobuf & co. share the namespace
    stub.mkdir(parents=True, exist_ok=True)
    (stub / "__init__.py").write_text(GOOGLE_COLAB_STUB)
    versions = installed(py)
    differs = {
        n: v for n, v in versions.items() if n in colab.pins and colab.pins[n] != v and not CUDA_RUNTIME.match(n)
    }
    if differs:
        raise RuntimeError(f"the runtime does not match Colab's pins: {differs}")
    stamp.write_text(stamp_text)
    return versions


def colab_cell(source: str, repository: str, content: Path) -> str:
    """The first cell as this check runs it: the course cloned from ``repository`` into ``content``
    (Colab's /content) instead of from GitHub into /content."""
    return source.replace('"https://github.com/fer-course/fer-course"', repr(repository)).replace(
        "/content/fer-course", str(content / "fer-course")
    )


def kernel_env(home: Path, threads: int = 0) -> dict[str, str]:
    """A Colab kernel's environment: this machine's, without the course's variables, with an empty
    home (so an empty pip cache and course cache) and FAST mode. ``threads``: the cores each of the
    notebooks run side by side may use (OpenMP threads fighting over cores slow a run several times)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FER_", "VIRTUAL_ENV", "PYTHON", "JUPYTER"))}
    env.update(HOME=str(home), FER_FAST="1", MPLBACKEND="module://matplotlib_inline.backend_inline")
    env.pop("XDG_CACHE_HOME", None)
    env.pop("OMP_NUM_THREADS", None)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def extras_of(name: str) -> str:
    """The extras a notebook's first cell installs (``setup("course,export")``)."""
    nb = json.loads(run(["git", "-C", str(REPO), "show", f"HEAD:notebooks/{name}"]).stdout)
    first = next(c for c in nb["cells"] if c["cell_type"] == "code")
    source = first["source"] if isinstance(first["source"], str) else "".join(first["source"])
    found = re.search(r"setup\(\s*[\"']([^\"']*)[\"']\s*\)", source)
    return found[1] if found else "course"


def build_installed(work: Path, base: Path, extras: str, repository: str) -> Path:
    """A copy of Colab's runtime in which the course's ``setup(extras)`` has run, as a notebook's first
    cell runs it (a clone of the committed HEAD, an empty home); rebuilt when HEAD or the runtime changes."""
    target = work / f"installed-{extras.replace(',', '-')}"
    head = run(["git", "-C", str(REPO), "rev-parse", "HEAD"]).stdout.strip()
    stamp_text = head + (base / ".colab-runtime").read_text()
    stamp = target / ".installed"
    if stamp.is_file() and stamp.read_text() == stamp_text:
        return target
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    run(["cp", "-al", str(base), str(target / "env")])
    run(["git", "clone", "-q", "--depth", "1", repository, str(target / "fer-course")])
    (target / "home").mkdir()
    code = f"import google.colab, sys; sys.path.insert(0, {str(target / 'fer-course')!r}); "
    code += f"from fer_utils.course import setup; setup({extras!r})"
    run([str(target / "env" / "bin" / "python"), "-c", code], env=kernel_env(target / "home"))
    stamp.write_text(stamp_text)
    return target


def run_notebook(
    name: str, work: Path, base: Path, repository: str, timeout: int, threads: int = 0, start: Path | None = None
) -> dict:
    """One notebook in a fresh copy of the runtime (or of ``start``, the runtime with its extras
    installed); returns what happened (see :func:`main`)."""
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    runtime = work / "runtimes" / Path(name).stem
    shutil.rmtree(runtime, ignore_errors=True)
    (runtime / "home").mkdir(parents=True)
    (runtime / "content").mkdir()
    env_dir = runtime / "env"
    run(["cp", "-al", str(start or base), str(env_dir)])
    python = env_dir / "bin" / "python"
    before = installed(base / "bin" / "python")  # Colab's runtime as a learner's Colab has it
    spec = runtime / "kernels" / "colab"
    spec.mkdir(parents=True)
    argv = [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    argv.append("--IPKernelApp.exec_lines=import google.colab")  # Colab's kernel has it imported
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "Colab", "language": "python"}))

    # the notebook as committed, like the course the first cell clones (Colab never sees uncommitted work)
    committed = run(["git", "-C", str(REPO), "show", f"HEAD:notebooks/{name}"]).stdout
    nb = nbformat.reads(committed, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    first.source = colab_cell(first.source, repository, runtime / "content")
    os.environ.clear()
    os.environ.update(kernel_env(runtime / "home", threads))
    km = KernelManager(kernel_name="colab", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec.parent)]))
    client = NotebookClient(nb, km=km, timeout=timeout, resources={"metadata": {"path": str(runtime / "content")}})
    started, error = time.monotonic(), ""
    try:
        client.execute()
    except CellExecutionError as err:
        error = "\n".join(ANSI.sub("", str(err)).strip().splitlines()[-12:])
    except Exception as err:  # noqa: BLE001 - a dead kernel or a timeout is this notebook's failure, reported
        error = f"{type(err).__name__}: {err}"
    seconds = time.monotonic() - started
    timing = first.metadata.get("execution", {})
    install = None
    if "shell.execute_reply" in timing and "iopub.execute_input" in timing:
        from datetime import datetime

        t0, t1 = (
            datetime.fromisoformat(timing[k].replace("Z", "+00:00"))
            for k in ("iopub.execute_input", "shell.execute_reply")
        )
        install = (t1 - t0).total_seconds()
    after = installed(python)
    changed = {n: f"{v} -> {after.get(n, 'removed')}" for n, v in before.items() if after.get(n) != v}
    return {
        "notebook": name,
        "fresh_install": start is None,
        "ok": not error,
        "error": error,
        "seconds": round(seconds, 1),
        "setup_cell_seconds": None if install is None else round(install, 1),
        "changed": changed,
        "added": {n: v for n, v in after.items() if n not in before},
    }


def colab_changes(result: dict, colab: ColabList) -> dict[str, str]:
    """What a notebook's installs did to Colab's packages: changed or removed ones, and added ones
    that Colab ships at another version (a learner's Colab would have had to change them)."""
    changes = dict(result.get("changed", {}))
    for name, version in result.get("added", {}).items():
        if name in colab.pins and colab.pins[name] != version:
            changes[name] = f"Colab has {colab.pins[name]}, the install brought {version}"
    return changes


def run_widget_tests(work: Path, name: str) -> dict:
    """tests/test_widgets.py under the runtime's ipywidgets (Colab's 7.7.1), in a notebook's runtime."""
    runtime = work / "runtimes" / Path(name).stem
    clone = runtime / "content" / "fer-course"
    env = kernel_env(runtime / "home")
    command = [str(runtime / "env" / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    command += ["-o", "addopts=", "tests/test_widgets.py"]
    done = subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True)
    output = (done.stdout + done.stderr).strip().splitlines()
    return {"ok": done.returncode == 0, "summary": output[-1] if output else "", "output": "\n".join(output[-30:])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", default=[], help="notebook numbers (e.g. 02 07); default every notebook")
    parser.add_argument("--python", help="the interpreter for Colab's runtime (default: Colab's version if here)")
    parser.add_argument("--work", type=Path, default=REPO / ".colab-check", help="where runtimes are built")
    parser.add_argument("--jobs", type=int, default=2, help="notebooks run side by side")
    parser.add_argument("--timeout", type=int, default=900, help="seconds a cell may run")
    parser.add_argument("--build-only", action="store_true", help="build Colab's runtime, run nothing (CI)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one notebook in this process
    parser.add_argument("--start", help=argparse.SUPPRESS)  # internal: from the runtime with these extras installed
    args = parser.parse_args(argv)
    colab = read_pins()
    base = args.work / "base"
    repository = REPO.as_uri()
    if args.one:
        threads = max(1, (os.cpu_count() or 1) // max(1, args.jobs))
        start = args.work / f"installed-{args.start}" / "env" if args.start else None
        print(json.dumps(run_notebook(args.one, args.work, base, repository, args.timeout, threads, start)))
        return 0
    python, note = find_python(colab, args.python)
    print(
        f"Colab's environment: {PINS_FILE.name} from backend-info {colab.commit[:12]} ({colab.date}), Python {colab.python}"
    )
    for name, why in sorted(colab.replaced.items()):
        if normalized(name) in STAND_INS:  # torchaudio & co.: the course never installs or imports them
            print(f"  replaced {name}: {why}")
    print("  torch's CUDA libraries (nvidia-*, triton) keep the versions PyPI's torch asks for")
    for name, why in sorted(colab.dropped.items()):
        print(f"  left out {name}: {why}" + (" (a stand-in module is imported)" if name == "google-colab" else ""))
    if note:
        print(f"  {note}")
    started = time.monotonic()
    build_runtime(base, colab, python)
    version = run(
        [str(base / "bin" / "python"), "-c", "import sys, cv2; print(sys.version.split()[0], cv2.__version__)"]
    )
    python_version, cv2_version = version.stdout.split()
    names = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb") if not args.only or p.name[:2] in args.only)
    names.sort(key=lambda n: LONGEST_FIRST.index(n[:2]) if n[:2] in LONGEST_FIRST else len(LONGEST_FIRST))
    extras = {name: extras_of(name) for name in names}
    fresh = {}  # each set of extras: its last notebook in the run order installs into the runtime as it is
    for name in names:
        fresh[extras[name]] = name
    for wanted in sorted({extras[n] for n in names if fresh[extras[n]] != n}):
        build_installed(args.work, base, wanted, repository)
    print(
        f"runtime ready in {time.monotonic() - started:.0f} s: Python {python_version}, cv2 {cv2_version}; "
        f"installs checked from scratch by {', '.join(n[:2] for n in sorted(fresh.values()))}"
    )
    if args.build_only:
        return 0

    head = run(["git", "-C", str(REPO), "log", "-1", "--format=%h %s"]).stdout.strip()
    print(f"the course as committed: {head[:100]}")
    results: list[dict] = []

    def one(name: str) -> dict:
        start = [] if fresh[extras[name]] == name else ["--start", extras[name].replace(",", "-")]
        done = subprocess.run(
            [sys.executable, __file__, "--one", name, "--work", str(args.work), "--timeout", str(args.timeout),
             "--jobs", str(args.jobs), *start],
            capture_output=True, text=True,
        )  # fmt: skip
        try:
            return json.loads(done.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            return {"notebook": name, "ok": False, "error": (done.stdout + done.stderr)[-3000:], "changed": {}}

    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        for future in concurrent.futures.as_completed([pool.submit(one, name) for name in names]):
            result = future.result()  # printed as each notebook ends
            results.append(result)
            changes = colab_changes(result, colab)
            status = "passed" if result["ok"] and not changes else "FAILED"
            print(
                f"{result['notebook']}: {status} in {result.get('seconds', 0):.0f} s "
                f"(first cell, clone + install: {result.get('setup_cell_seconds')} s"
                + ("" if result.get("fresh_install", True) else ", its extras already installed")
                + ")"
                + (f"; Colab packages changed: {changes}" if changes else ""),
                flush=True,
            )
            if result["error"]:
                print("   " + result["error"].replace("\n", "\n   "))
    results.sort(key=lambda r: r["notebook"])
    failed = [r["notebook"] for r in results if not r["ok"] or colab_changes(r, colab)]
    widgets = None
    if not args.only or "07" in args.only:
        widgets = run_widget_tests(args.work, "07_inference.ipynb")
        print(f"widgets under Colab's ipywidgets: {'passed' if widgets['ok'] else 'FAILED'} ({widgets['summary']})")
        if not widgets["ok"]:
            print(widgets["output"])
    (args.work / "results.json").write_text(json.dumps({"notebooks": results, "widgets": widgets}, indent=1))
    print(f"Colab check: {len(results) - len(failed)} notebooks passed, {len(failed)} failed")
    return 1 if failed or (widgets is not None and not widgets["ok"]) else 0


if __name__ == "__main__":
    sys.exit(main())
