"""From sentences to tensors (chapters 3 and 4): token ids, length-grouped batches, dynamic padding.

Batches are padded only to their longest member; grouping sentences of similar length into a batch
keeps that padding small while the order of batches stays random.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sftbook.env import derived_seed
from sftbook.errors import SftbookError

IGNORE_INDEX = -100  # the label of positions a loss skips (PyTorch's cross_entropy default)


def encode_texts(tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids of each text, truncated to ``max_length``; empty or blank texts are refused."""
    texts = list(texts)
    for index, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise SftbookError(f"Text #{index} is empty or not a string ({text!r}); remove it or give it words to classify.")
    return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]


def by_length(encoded: Sequence[Sequence[int]]) -> list[int]:
    """Indices sorted by sequence length: batches of similar lengths waste little on padding.

    Inference gives the same outputs in any order (eval mode, padding masked), so the order is free.
    """
    return sorted(range(len(encoded)), key=lambda i: len(encoded[i]))


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int, labels: Sequence[Sequence[int]] | None = None) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` padded on the right to the longest sequence of this batch; with
    ``labels`` (one per sequence, as long as it), ``labels`` too, padded with ``IGNORE_INDEX``: padding is
    never a label."""
    if not sequences:
        raise SftbookError("Cannot pad an empty batch; pass at least one sequence.")
    if labels is not None and [len(s) for s in labels] != [len(s) for s in sequences]:
        raise SftbookError("Each sequence needs labels of its own length; pass one label per token.")
    width = max(len(s) for s in sequences)
    batch = {
        "input_ids": torch.full((len(sequences), width), pad_id, dtype=torch.long),  # (batch, seq)
        "attention_mask": torch.zeros((len(sequences), width), dtype=torch.long),  # (batch, seq)
    }
    if labels is not None:
        batch["labels"] = torch.full((len(sequences), width), IGNORE_INDEX, dtype=torch.long)  # (batch, seq)
    for row, seq in enumerate(sequences):
        batch["input_ids"][row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        batch["attention_mask"][row, : len(seq)] = 1
        if labels is not None:
            batch["labels"][row, : len(seq)] = torch.as_tensor(labels[row], dtype=torch.long)
    return batch


def length_grouped_batches(lengths: Sequence[int], batch_size: int, generator: torch.Generator, group_factor: int = 50) -> list[list[int]]:
    """Shuffle, then sort each window of ``group_factor`` batches by length and cut it into batches.

    Sentences of similar length share a batch, so little compute is spent on padding, while the order
    of batches stays random. The result depends only on ``generator``'s state.
    """
    if batch_size < 1:
        raise SftbookError(f"batch_size must be at least 1, got {batch_size}; pass a positive whole number.")
    order = torch.randperm(len(lengths), generator=generator).tolist()
    window = batch_size * group_factor
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled]


def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The length-grouped batches of one epoch: a function of ``(seed, epoch)`` alone, so resumable."""
    generator = torch.Generator().manual_seed(derived_seed(seed, "batch order", epoch))
    return length_grouped_batches(lengths, batch_size, generator)


class LengthGroupedBatchSampler:
    """Batch sampler over :func:`epoch_batches`, reshuffled by ``set_epoch`` (Accelerate shards it)."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int) -> None:
        self.lengths, self.batch_size, self.seed, self.epoch = list(lengths), batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter(epoch_batches(self.lengths, self.batch_size, self.seed, self.epoch))

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size) if self.lengths else 0
