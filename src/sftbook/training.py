"""Training machinery shared by pretraining (chapter 3) and fine-tuning (chapter 4).

Batches are length-grouped and padded only to their longest member (dynamic padding); the learning
rate warms up linearly, then decays linearly to zero; checkpoints are written atomically, so an
interrupted run resumes from its last checkpoint and ends where an uninterrupted one would.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

CHECKPOINT = "checkpoint"


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, generator: torch.Generator, group_factor: int = 50
) -> list[list[int]]:
    """Shuffle, then sort each window of ``group_factor`` batches by length and cut it into batches.

    Sentences of similar length share a batch, so little compute is spent on padding, while the order
    of batches stays random. The result depends only on ``generator``'s state.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    order = torch.randperm(len(lengths), generator=generator).tolist()
    window = batch_size * group_factor
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled]


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` padded to the longest sequence of this batch."""
    if not sequences:
        raise ValueError("Cannot pad an empty batch.")
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)  # (batch, seq)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        attention_mask[row, : len(seq)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def linear_warmup_decay(step: int, total_steps: int, warmup_steps: int) -> float:
    """Learning-rate multiplier: 0 → 1 over ``warmup_steps``, then 1 → 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def optimizer_state_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer's state into tensors (for safetensors) and JSON-able settings — no pickle."""
    state = optimizer.state_dict()
    tensors, meta = {}, {"param_groups": state["param_groups"], "scalars": {}}
    for index, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.contiguous()
            else:
                meta["scalars"][f"{index}.{key}"] = value
    return tensors, meta


def load_optimizer_state(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in [*tensors.items(), *meta["scalars"].items()]:
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(run_dir: Path, model, optimizer: torch.optim.Optimizer, state: dict[str, Any], tokenizer=None) -> Path:
    """Write model (safetensors), optimizer state and ``state.json`` to ``run_dir/checkpoint`` atomically.

    Everything goes to a temporary folder first, which then replaces the old checkpoint by renames, so
    a crash at any moment leaves one complete checkpoint behind.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".checkpoint-", dir=run_dir))
    model.save_pretrained(tmp, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    tensors, meta = optimizer_state_tensors(optimizer)
    save_file(tensors, tmp / "optimizer.safetensors")
    (tmp / "optimizer.json").write_text(json.dumps(meta))
    (tmp / "state.json").write_text(json.dumps(state))
    final, old = run_dir / CHECKPOINT, run_dir / f"{CHECKPOINT}.old"
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def find_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint to resume from, also after a crash between the two renames of a save."""
    for name in (CHECKPOINT, f"{CHECKPOINT}.old"):
        candidate = run_dir / name
        if (candidate / "state.json").is_file():
            return candidate
    return None


def load_checkpoint_state(checkpoint: Path, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore the optimizer from ``checkpoint`` and return its ``state.json``."""
    load_optimizer_state(
        optimizer,
        load_file(checkpoint / "optimizer.safetensors"),
        json.loads((checkpoint / "optimizer.json").read_text()),
    )
    return json.loads((checkpoint / "state.json").read_text())
