import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import BertConfig, BertModel

from sftbook import artifacts, batching, data, zoo
from sftbook.errors import SftbookError


def test_optimizer_state_round_trips_without_pickle(tmp_path):
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(input_ids=torch.tensor([[1, 2, 3]])).last_hidden_state.sum().backward()
    optimizer.step()
    path = artifacts.save_checkpoint(tmp_path, model, optimizer, {"step": 1})
    assert {p.name for p in path.iterdir()} >= {"model.safetensors", "optimizer.safetensors", "optimizer.json", "state.json"}
    assert not list(path.glob("*.bin")) and not list(path.glob("*.pt"))
    fresh = torch.optim.AdamW(model.parameters(), lr=1e-2)
    assert artifacts.load_checkpoint_state(path, fresh) == {"step": 1}
    trained = [p for p in model.parameters() if p in optimizer.state]  # parameters that had gradients
    assert len(trained) > 10 and all(p in fresh.state for p in trained)
    for parameter in trained:
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(optimizer.state[parameter][key], fresh.state[parameter][key])


def test_checkpoint_survives_a_crash_between_renames(tmp_path):
    (tmp_path / "checkpoint.old").mkdir()
    (tmp_path / "checkpoint.old" / "state.json").write_text("{}")
    assert artifacts.find_checkpoint(tmp_path) == tmp_path / "checkpoint.old"
    assert artifacts.find_checkpoint(tmp_path / "nothing") is None


def test_atomic_directory_replaces_the_target_only_when_the_block_succeeds(tmp_path):
    target = tmp_path / "model"
    with artifacts.atomic_directory(target) as tmp:
        (tmp / "weights").write_text("v1")
    assert (target / "weights").read_text() == "v1"
    with pytest.raises(RuntimeError), artifacts.atomic_directory(target) as tmp:
        (tmp / "weights").write_text("half of v2")
        raise RuntimeError("crash while writing")
    assert (target / "weights").read_text() == "v1"  # the old version survives a failed write
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # and nothing is left behind
    with artifacts.atomic_directory(target) as tmp:
        (tmp / "weights").write_text("v2")
    assert (target / "weights").read_text() == "v2" and not (tmp_path / "model.old").exists()


def test_atomic_write_text_leaves_the_old_file_on_error(tmp_path):
    path = artifacts.atomic_write_text(tmp_path / "a" / "results.json", json.dumps({"x": 1}))
    assert json.loads(path.read_text()) == {"x": 1}

    with pytest.raises(TypeError):
        artifacts.atomic_write_text(path, None)
    assert json.loads(path.read_text()) == {"x": 1} and [p.name for p in path.parent.iterdir()] == ["results.json"]


def test_cache_key_follows_settings_and_code():
    key = artifacts.cache_key({"lr": 1e-3}, (batching.pad_batch,))
    assert key == artifacts.cache_key({"lr": 1e-3}, (batching.pad_batch,)) and len(key) == 12
    assert key != artifacts.cache_key({"lr": 2e-3}, (batching.pad_batch,))
    assert key != artifacts.cache_key({"lr": 1e-3}, (batching.by_length,))


@pytest.mark.slow
def test_cache_key_is_the_same_in_another_process_folder_and_hash_seed(tmp_path):
    """Nothing but the settings, the code and the library versions enters a key: not the process, not the
    working folder, not Python's per-process string hashing (a key built on ``hash()`` would differ)."""
    script = "from sftbook import artifacts, batching; print(artifacts.cache_key({'lr': 1e-3, 'data': 'sst2'}, (batching.pad_batch,)))"
    here = artifacts.cache_key({"lr": 1e-3, "data": "sst2"}, (batching.pad_batch,))
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "SFTBOOK_CACHE": str(tmp_path / seed)}
        result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
        assert result.stdout.strip() == here


def test_sha256_file_matches_the_recorded_checksums():
    sums = data.expected_checksums()
    name = sorted(sums)[0]
    assert artifacts.sha256_file(data.data_dir() / name) == sums[name]


def test_corrupt_checkpoint_is_one_clear_error(tmp_path):
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16))
    optimizer = torch.optim.AdamW(model.parameters())
    path = artifacts.save_checkpoint(tmp_path, model, optimizer, {"step": 0})
    (path / "optimizer.json").write_text("{not json")
    with pytest.raises(SftbookError, match="is corrupt .*delete it or pass overwrite=True"):
        artifacts.load_checkpoint_state(path, optimizer)


def test_weights_fingerprint_follows_every_value_and_name():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    first, copy = artifacts.weights_fingerprint(model), torch.nn.Linear(3, 2)
    copy.load_state_dict(model.state_dict())
    assert artifacts.weights_fingerprint(copy) == first
    with torch.no_grad():
        model.bias[1] += 1e-7
    assert artifacts.weights_fingerprint(model) != first
    assert artifacts.texts_fingerprint(["a", "b"]) != artifacts.texts_fingerprint(["b", "a"])


def test_task_distilled_student_is_named_after_its_teacher_start_and_texts(tmp_path, monkeypatch):
    """A different teacher, student start or set of texts (the reduced scale has fewer) is a different student."""
    monkeypatch.setenv("SFTBOOK_CACHE", str(tmp_path))
    torch.manual_seed(0)
    teacher, student = torch.nn.Linear(4, 2), torch.nn.Linear(4, 4)
    config = zoo.TASK_DISTILL_CONFIG
    name = zoo.task_distilled_path(config, 3, teacher, student, ["a good film", "a"]).name
    assert name == zoo.task_distilled_path(config, 3, teacher, student, ["a good film", "a"]).name
    assert name != zoo.task_distilled_path(config, 3, teacher, student, ["a good film"]).name
    assert name != zoo.task_distilled_path(config, 2, teacher, student, ["a good film", "a"]).name
    assert name != zoo.task_distilled_path(config, 3, torch.nn.Linear(4, 2), student, ["a good film", "a"]).name
    assert name != zoo.task_distilled_path(config, 3, teacher, torch.nn.Linear(4, 4), ["a good film", "a"]).name
