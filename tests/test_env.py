import os

import pytest
import torch

from sftbook import env
from sftbook.errors import SftbookError


@pytest.mark.parametrize(
    "cuda, mps, expected", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")], ids=["cuda first", "then mps", "else cpu"]
)
def test_get_device_prefers_cuda_then_mps_then_cpu(monkeypatch, capsys, cuda, mps, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: "Test GPU")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert env.get_device().type == expected
    assert capsys.readouterr().out.startswith(f"Using device: {expected} (")
    assert env.get_device(verbose=False).type == expected and capsys.readouterr().out == ""


def test_set_seed_makes_runs_repeat():
    env.set_seed(123)
    first = (torch.rand(3), __import__("numpy").random.rand(2), __import__("random").random())
    env.set_seed(123)
    second = (torch.rand(3), __import__("numpy").random.rand(2), __import__("random").random())
    assert torch.equal(first[0], second[0])
    assert (first[1] == second[1]).all() and first[2] == second[2]


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True])
def test_set_seed_rejects_bad_seeds(seed):
    with pytest.raises(SftbookError, match="non-negative int"):
        env.set_seed(seed)


def test_set_threads():
    before = torch.get_num_threads()
    try:
        assert env.set_threads(1) == 1 and torch.get_num_threads() == 1
        assert env.set_threads() == (os.cpu_count() or 1)
        with pytest.raises(SftbookError, match="at least 1"):
            env.set_threads(0)
    finally:
        torch.set_num_threads(before)


def test_configure_environment_quietens_libraries(monkeypatch):
    for key in env.QUIET_ENVIRONMENT:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "debug")  # a reader's own setting wins
    env.configure_environment()
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1" and os.environ["TOKENIZERS_PARALLELISM"] == "false"
    assert os.environ["TRANSFORMERS_VERBOSITY"] == "debug"
    assert "HF_HUB_OFFLINE" not in env.QUIET_ENVIRONMENT  # the hub stays usable where it is reachable


def test_hub_reachable_respects_offline_flag(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert env.hub_reachable() is False
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert env.hub_reachable("name.invalid") is False  # RFC 6761: never resolves


def test_machine_info_fields():
    info = env.machine_info()
    assert info["torch"] == torch.__version__ and info["cores"] >= 1 and info["cpu"]


def test_progress_bars_are_silent_where_outputs_are_stored(monkeypatch, capsys):
    monkeypatch.setenv(env.QUIET_PROGRESS_VARIABLE, "1")
    bar = env.progress(10, "training")
    bar.set_postfix(loss="0.5")
    bar.update(10)
    bar.close()
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    monkeypatch.delenv(env.QUIET_PROGRESS_VARIABLE)
    bar = env.progress(10, "training")
    bar.update(10)
    bar.close()
    assert "training" in capsys.readouterr().err  # a reader running the chapter sees the bar


def test_derived_seeds_are_stable_distinct_and_fit_torch():
    seeds = {env.derived_seed(0, purpose, index) for purpose in ("masking", "dropout") for index in range(50)}
    assert len(seeds) == 100 and env.derived_seed(0, "masking", 3) == env.derived_seed(0, "masking", 3)
    assert env.derived_seed(1, "masking", 3) != env.derived_seed(0, "masking", 3)
    assert all(0 <= s < 2**63 for s in seeds)
    torch.Generator().manual_seed(max(seeds))


def test_scale_switch(monkeypatch):
    monkeypatch.delenv(env.SCALE_VARIABLE, raising=False)
    assert env.scale() == "full" and env.at_scale(6000, 200) == 6000
    monkeypatch.setenv(env.SCALE_VARIABLE, "reduced")
    assert env.scale() == "reduced" and env.at_scale(6000, 200) == 200
    monkeypatch.setenv(env.SCALE_VARIABLE, "Reduced")
    with pytest.raises(SftbookError, match="is not a scale"):
        env.scale()


def test_bf16_is_used_only_where_it_is_faster(monkeypatch):
    cpu = torch.device("cpu")
    assert env.bf16_speedup_cpu() > 0 and env.bf16_speedup_cpu() == env.bf16_speedup_cpu()  # measured once
    monkeypatch.setattr(env, "has_bf16_instructions", lambda device: True)
    monkeypatch.setattr(env, "bf16_speedup_cpu", lambda: 0.7)  # instructions, yet slower: this book's Intel CPU
    assert env.bf16_pays_off(cpu) is False
    monkeypatch.setattr(env, "bf16_speedup_cpu", lambda: 1.6)  # the AMD CPU of earlier runs
    assert env.bf16_pays_off(cpu) is True
    monkeypatch.setattr(env, "has_bf16_instructions", lambda device: False)
    assert env.bf16_pays_off(cpu) is False and env.bf16_pays_off(torch.device("meta")) is False
