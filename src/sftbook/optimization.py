"""The optimiser and learning-rate schedule every training loop of the book shares (chapters 3, 4, 8, 9, 10).

AdamW with decoupled weight decay on weight matrices only, and the linear warm-up then linear decay
schedule of BERT — transformers' own ``get_linear_schedule_with_warmup``, stepped once per update.
"""

from __future__ import annotations

import torch
from transformers import get_linear_schedule_with_warmup


def adamw(model, learning_rate: float, weight_decay: float, beta2: float = 0.999) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only, not on biases and LayerNorm gains.

    The fused kernel (one pass over all parameters; Trainer's default too) where the parameters live on
    the CPU or a CUDA GPU in float32; chapter 4 measures what it saves.
    """
    parameters = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in parameters if p.ndim >= 2]
    no_decay = [p for p in parameters if p.ndim < 2]
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype == torch.float32 for p in parameters)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=learning_rate,
        betas=(0.9, beta2),
        fused=fused or None,
    )


def warmup_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, done_steps: int = 0):
    """Linear warm-up over ``warmup_steps``, then linear decay to zero at ``total_steps``.

    ``done_steps`` resumes the schedule after that many updates (the optimizer's state must be restored
    first: it holds each group's ``initial_lr``). Call ``.step()`` after every ``optimizer.step()``.
    """
    return get_linear_schedule_with_warmup(optimizer, max(1, warmup_steps), total_steps, last_epoch=done_steps - 1)


def schedule_curve(learning_rate: float, total_steps: int, warmup_steps: int) -> list[float]:
    """The learning rate of every step under :func:`warmup_schedule`, read from the real scheduler."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=learning_rate)
    schedule = warmup_schedule(optimizer, total_steps, warmup_steps)
    curve = []
    for _ in range(total_steps):
        curve.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    return curve
