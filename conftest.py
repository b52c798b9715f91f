"""Repository-wide pytest setup: the notebooks run in FAST mode (synthetic faces, seconds-long runs)
unless FER_FAST is set explicitly, so `pytest` executes the whole course quickly.

The suite runs on two pytest-xdist workers (``-n 2 --dist loadgroup`` in pyproject.toml): each
test module stays on one worker (its module fixtures are built once), and the notebooks form one
group that runs in order on one worker, because later lessons reuse what earlier ones trained.
"""

import os

import pytest

os.environ.setdefault("FER_FAST", "1")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers on two cores: one thread each, here and in every process a worker starts
    # (notebook kernels, CLI subprocesses). With two threads each, OpenMP's spinning threads
    # fought over the cores and a 20 s notebook cell took 250 s (measured in CI).
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups into the node ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        group = "notebooks" if item.nodeid.split("::", 1)[0].endswith(".ipynb") else item.nodeid.split("::", 1)[0]
        item.add_marker(pytest.mark.xdist_group(group))
