import torch
import pytest

from sftbook import training


def test_length_grouped_batches_cover_every_index_once_and_group_lengths():
    lengths = [int(x) for x in torch.randint(1, 60, (1000,), generator=torch.Generator().manual_seed(0))]
    batches = training.length_grouped_batches(lengths, 16, torch.Generator().manual_seed(1))
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(1000))
    assert all(1 <= len(b) <= 16 for b in batches)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    random_batches = [list(range(s, min(s + 16, 1000))) for s in range(0, 1000, 16)]
    padded_random = sum(len(b) * max(lengths[i] for i in b) for b in random_batches)
    assert padded < 0.75 * padded_random  # grouping saves most of the padding


def test_length_grouped_batches_depend_only_on_the_generator():
    lengths = list(range(100))
    first = training.length_grouped_batches(lengths, 8, torch.Generator().manual_seed(3))
    second = training.length_grouped_batches(lengths, 8, torch.Generator().manual_seed(3))
    other = training.length_grouped_batches(lengths, 8, torch.Generator().manual_seed(4))
    assert first == second and first != other
    with pytest.raises(ValueError):
        training.length_grouped_batches(lengths, 0, torch.Generator())


def test_pad_batch():
    batch = training.pad_batch([[5, 6, 7], [8]], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    with pytest.raises(ValueError, match="empty batch"):
        training.pad_batch([], 0)


def test_linear_warmup_decay():
    values = [training.linear_warmup_decay(s, total_steps=10, warmup_steps=2) for s in range(10)]
    assert values[0] == 0.5 and values[1] == 1.0 and values[2] == 1.0
    assert values == sorted(values[:2]) + sorted(values[2:], reverse=True)
    assert training.linear_warmup_decay(10, 10, 2) == 0.0


def test_optimizer_state_round_trips_without_pickle(tmp_path):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(input_ids=torch.tensor([[1, 2, 3]])).last_hidden_state.sum().backward()
    optimizer.step()
    path = training.save_checkpoint(tmp_path, model, optimizer, {"step": 1})
    assert {p.name for p in path.iterdir()} >= {"model.safetensors", "optimizer.safetensors", "optimizer.json", "state.json"}
    assert not list(path.glob("*.bin")) and not list(path.glob("*.pt"))
    fresh = torch.optim.AdamW(model.parameters(), lr=1e-2)
    assert training.load_checkpoint_state(path, fresh) == {"step": 1}
    trained = [p for p in model.parameters() if p in optimizer.state]  # parameters that had gradients
    assert len(trained) > 10 and all(p in fresh.state for p in trained)
    for parameter in trained:
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(optimizer.state[parameter][key], fresh.state[parameter][key])


def test_checkpoint_survives_a_crash_between_renames(tmp_path):
    (tmp_path / "checkpoint.old").mkdir()
    (tmp_path / "checkpoint.old" / "state.json").write_text("{}")
    assert training.find_checkpoint(tmp_path) == tmp_path / "checkpoint.old"
    assert training.find_checkpoint(tmp_path / "nothing") is None
