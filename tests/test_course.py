import importlib

import pytest


@pytest.fixture
def course(monkeypatch):
    def load(fast: str | None):
        if fast is None:
            monkeypatch.delenv("FER_FAST", raising=False)
        else:
            monkeypatch.setenv("FER_FAST", fast)
        import fer_utils.course as module

        return importlib.reload(module)

    yield load
    monkeypatch.delenv("FER_FAST", raising=False)
    import fer_utils.course as module

    importlib.reload(module)


def test_params_come_from_env_then_fast_then_default(course, monkeypatch):
    fast = course("1")
    assert fast.FAST and fast.param("FER_EPOCHS", 15, fast=2) == 2
    monkeypatch.setenv("FER_EPOCHS", "7")
    assert fast.param("FER_EPOCHS", 15, fast=2) == 7
    monkeypatch.setenv("FER_TTA_ON", "yes")
    assert fast.param("FER_TTA_ON", False) is True
    slow = course(None)
    assert not slow.FAST and slow.param("FER_LR", 1e-3, fast=5e-3) == 1e-3


def test_dataset_choice(course, monkeypatch, capsys):
    assert course("1").dataset_path() == "synthetic:0.3"
    monkeypatch.setenv("FER_DATA_DIR", "/data/fer2013")
    assert course(None).dataset_path() == "/data/fer2013"
    monkeypatch.delenv("FER_DATA_DIR")
    assert course(None).dataset_path() == "synthetic"
    assert "uses the built-in synthetic faces" in capsys.readouterr().out
