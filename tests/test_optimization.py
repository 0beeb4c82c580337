import pytest
import torch
from transformers import BertConfig, BertModel

from sftbook import optimization


def test_schedule_warms_up_then_decays_to_zero():
    curve = optimization.schedule_curve(1.0, total_steps=10, warmup_steps=2)
    assert curve[:3] == [0.0, 0.5, 1.0]
    assert curve[2:] == sorted(curve[2:], reverse=True) and curve[-1] == pytest.approx(0.125)


def test_a_resumed_schedule_continues_where_it_stopped():
    def optimizer():
        return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)

    whole = optimizer()
    schedule = optimization.warmup_schedule(whole, 20, 4)
    for _ in range(7):
        whole.step()
        schedule.step()
    resumed = optimizer()
    resumed.load_state_dict(whole.state_dict())  # the checkpoint restores each group's initial_lr
    later = optimization.warmup_schedule(resumed, 20, 4, done_steps=7)
    assert later.get_last_lr() == schedule.get_last_lr() == [optimization.schedule_curve(1.0, 20, 4)[7]]


def test_adamw_decays_matrices_only_and_skips_frozen_weights():
    model = BertModel(BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16))
    model.embeddings.requires_grad_(False)
    optimizer = optimization.adamw(model, 1e-3, weight_decay=0.01)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim < 2 for p in no_decay["params"])
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(decay["params"]) + len(no_decay["params"]) == len(trainable) < len(list(model.parameters()))
