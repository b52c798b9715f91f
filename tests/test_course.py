import pytest

import fer_utils.course as course_module


@pytest.fixture
def course(monkeypatch):
    """The course module with FER_FAST set (or unset) now: it is read when used, no reload needed."""

    def load(fast: str | None):
        if fast is None:
            monkeypatch.delenv("FER_FAST", raising=False)
        else:
            monkeypatch.setenv("FER_FAST", fast)
        return course_module

    return load


def test_params_come_from_env_then_fast_then_default(course, monkeypatch):
    fast = course("1")
    assert fast.FAST and fast.param("FER_EPOCHS", 15, fast=2) == 2
    monkeypatch.setenv("FER_EPOCHS", "7")
    assert fast.param("FER_EPOCHS", 15, fast=2) == 7
    monkeypatch.setenv("FER_TTA_ON", "yes")
    assert fast.param("FER_TTA_ON", False) is True
    slow = course(None)
    assert not slow.FAST and slow.param("FER_LR", 1e-3, fast=5e-3) == 1e-3


def test_fast_mode_follows_the_environment_after_import(monkeypatch):
    from fer_utils.course import fast_mode

    monkeypatch.setenv("FER_FAST", "1")
    assert fast_mode() and course_module.FAST
    monkeypatch.setenv("FER_FAST", "0")
    assert not fast_mode() and not course_module.FAST
    with pytest.raises(AttributeError):
        course_module.SLOW  # noqa: B018 - other names still fail as usual


def test_dataset_choice(course, monkeypatch, capsys):
    assert course("1").dataset_path() == "synthetic:0.3"
    monkeypatch.setenv("FER_DATA_DIR", "/data/fer2013")
    assert course(None).dataset_path() == "/data/fer2013"
    monkeypatch.delenv("FER_DATA_DIR")
    assert course(None).dataset_path() == "synthetic"
    assert "uses the built-in synthetic faces" in capsys.readouterr().out
