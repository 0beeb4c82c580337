"""Learning from a teacher instead of from labels (chapter 4).

Two ways a large model's knowledge reaches a small one through unlabeled text:

- **embedding distillation** (pretraining with a teacher): the student learns to point its sentence
  vector, through a linear map, where the teacher's sentence vector points, for every sentence of an
  unlabeled corpus. DistilBERT, TinyBERT and MiniLM itself were made this way, matching the teacher's
  outputs, hidden states or attention rather than one vector per sentence;
- **task distillation**: a teacher already fine-tuned on the task labels unlabeled in-domain sentences
  (and phrases cut from them, :func:`word_spans`) with its probabilities, and the student learns those
  soft labels (Hinton et al., 2015).

Both run the same loop, :func:`distill`: random batches of sentences, the student's output against the
teacher's target for those sentences, AdamW with warm-up and linear decay.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sftbook.batching import encode_texts, pad_batch
from sftbook.env import progress
from sftbook.errors import SftbookError, require_positive_integers
from sftbook.evaluation import sentence_embeddings
from sftbook.modeling import mean_pool
from sftbook.optimization import adamw, warmup_schedule


@dataclass
class DistillConfig:
    """Settings of a distillation run (random batches; ``steps`` updates)."""

    steps: int = 2500
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.06
    clip_norm: float = 1.0
    max_length: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        require_positive_integers(self, ("steps", "batch_size", "max_length"))


class EmbeddingStudent(nn.Module):
    """A small encoder whose mean-pooled vector is mapped linearly into the teacher's embedding space."""

    def __init__(self, encoder, teacher_size: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.projection = nn.Linear(encoder.config.hidden_size, teacher_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (batch, seq, hidden)
        return self.projection(mean_pool(hidden, attention_mask))  # (batch, teacher_size)


def teacher_embeddings(teacher, tokenizer, texts: Sequence[str], max_length: int = 64) -> torch.Tensor:
    """The teacher's unit-length sentence vectors ``(len(texts), teacher_size)``: mean pooling, then
    normalisation, as all-MiniLM-L6-v2 is used for sentence similarity."""
    return F.normalize(torch.from_numpy(sentence_embeddings(teacher, tokenizer, texts, max_length)), dim=-1)


def word_spans(texts: Sequence[str], per_text: int = 3, min_words: int = 3, seed: int = 0) -> list[str]:
    """``per_text`` random runs of consecutive words from each text of more than ``min_words`` words (each
    at least ``min_words`` long and shorter than its text): more unlabeled inputs for a teacher to label,
    as the Stanford Sentiment Treebank labels the phrases inside each of its sentences."""
    rng = random.Random(seed)
    spans = []
    for words in (text.split() for text in texts):
        for _ in range(per_text if len(words) > min_words else 0):
            length = rng.randint(min_words, len(words) - 1)
            start = rng.randint(0, len(words) - length)
            spans.append(" ".join(words[start : start + length]))
    return spans


def cosine_distance(student_vectors: torch.Tensor, teacher_vectors: torch.Tensor) -> torch.Tensor:
    """1 − cosine similarity, averaged: 0 when every student vector points where its teacher's does."""
    return 1 - F.cosine_similarity(student_vectors, teacher_vectors, dim=-1).mean()


def soft_cross_entropy(student_logits: torch.Tensor, teacher_probabilities: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against the teacher's probabilities instead of one-hot labels."""
    return F.cross_entropy(student_logits, teacher_probabilities)


def distill(
    student: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    tokenizer,
    texts: Sequence[str],
    targets: torch.Tensor,
    config: DistillConfig,
) -> list[float]:
    """Train ``student`` (called as ``student(input_ids, attention_mask)``) to reproduce ``targets`` (one
    row per text) under ``loss_fn``; returns the loss of every step. No labels are used."""
    if not texts or len(texts) != len(targets):
        raise SftbookError(f"distill needs one target per text, got {len(texts)} texts and {len(targets)} targets.")
    torch.manual_seed(config.seed)  # dropout's masks: the same run in every process
    ids = encode_texts(tokenizer, texts, config.max_length)
    optimizer = adamw(student, config.learning_rate, config.weight_decay)
    schedule = warmup_schedule(optimizer, config.steps, int(config.warmup_fraction * config.steps))
    generator = torch.Generator().manual_seed(config.seed)
    student.train()
    losses, bar = [], progress(config.steps, "distilling")
    for _ in range(config.steps):
        rows = torch.randint(len(ids), (config.batch_size,), generator=generator)
        batch = pad_batch([ids[i] for i in rows], tokenizer.pad_token_id)
        loss = loss_fn(student(batch["input_ids"], batch["attention_mask"]), targets[rows])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), config.clip_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.update(1)
    bar.close()
    return losses
