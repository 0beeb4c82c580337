import os

import pytest
import torch

from sftbook import env


def test_get_device_prefers_accelerators(capsys):
    device = env.get_device()
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert device.type == expected
    assert f"Using device: {expected}" in capsys.readouterr().out
    assert env.get_device(verbose=False).type == expected


def test_set_seed_makes_runs_repeat():
    env.set_seed(123)
    first = (torch.rand(3), __import__("numpy").random.rand(2), __import__("random").random())
    env.set_seed(123)
    second = (torch.rand(3), __import__("numpy").random.rand(2), __import__("random").random())
    assert torch.equal(first[0], second[0])
    assert (first[1] == second[1]).all() and first[2] == second[2]


@pytest.mark.parametrize("seed", [-1, 1.5, "0"])
def test_set_seed_rejects_bad_seeds(seed):
    with pytest.raises(ValueError, match="non-negative int"):
        env.set_seed(seed)


def test_set_threads():
    before = torch.get_num_threads()
    try:
        assert env.set_threads(1) == 1 and torch.get_num_threads() == 1
        assert env.set_threads() == (os.cpu_count() or 1)
        with pytest.raises(ValueError, match="at least 1"):
            env.set_threads(0)
    finally:
        torch.set_num_threads(before)


def test_configure_environment_quietens_libraries(monkeypatch):
    for key in env.QUIET_ENVIRONMENT:
        monkeypatch.delenv(key, raising=False)
    env.configure_environment()
    for key, value in env.QUIET_ENVIRONMENT.items():
        assert os.environ[key] == value
    assert "HF_HUB_OFFLINE" not in env.QUIET_ENVIRONMENT  # the hub stays usable where it is reachable


def test_hub_reachable_respects_offline_flag(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert env.hub_reachable() is False
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert env.hub_reachable("name.invalid") is False  # RFC 6761: never resolves


def test_machine_info_fields():
    info = env.machine_info()
    assert info["torch"] == torch.__version__ and info["cores"] >= 1 and info["cpu"]


def test_progress_logs_lines_when_outputs_are_stored(monkeypatch, capsys):
    monkeypatch.setenv(env.LOG_PROGRESS_VARIABLE, "1")
    bar = env.progress(10, "training")
    bar.set_postfix(loss="0.5")
    for _ in range(10):
        bar.update()
    bar.close()
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5 and lines[-1].startswith("training: 10/10") and lines[-1].endswith("loss 0.5")
    monkeypatch.delenv(env.LOG_PROGRESS_VARIABLE)
    assert not isinstance(env.progress(10, "x", disable=True), env.LogProgress)
