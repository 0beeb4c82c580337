"""Decoding: the one loop the book's two generators share, the encoder–decoder translator (chapter 10) and the
chat LLM (chapter 8). What differs between them is only how the next token's scores are computed; how the
next token is then chosen — greedily, or sampled after a repetition penalty, a temperature and top-k/top-p
cuts — is :class:`Decoding`, written to match ``transformers``' ``generate`` token for token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from sftbook.errors import SftbookError

# next_logits(tokens so far (batch, seq), state) -> (the next token's logits (batch, vocab), the new state)
NextLogits = Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]


@dataclass(frozen=True)
class Decoding:
    """How the next token is chosen. ``sample=False``: the most probable one (greedy). ``sample=True``: drawn
    from the softmax of the scores after the cuts. ``repetition_penalty`` > 1 lowers the score of every token
    already in the sequence (prompt included, as ``generate`` does), in greedy decoding too; ``top_k=0`` and
    ``top_p=1`` cut nothing."""

    sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        if not self.temperature > 0 or not 0 < self.top_p <= 1 or self.top_k < 0 or not self.repetition_penalty > 0:
            raise SftbookError(
                f"Invalid decoding settings {self}: temperature and repetition_penalty must be > 0, top_k ≥ 0 "
                "(0: no cut) and 0 < top_p ≤ 1; pass values in those ranges."
            )


GREEDY = Decoding()


def next_token_scores(logits: torch.Tensor, tokens: torch.Tensor, settings: Decoding) -> torch.Tensor:
    """``logits`` (batch, vocab) after the repetition penalty, the temperature, the top-k and the top-p cuts, in
    that order; a cut token gets −∞ (probability 0)."""
    if settings.repetition_penalty != 1:
        seen = logits.gather(1, tokens)  # (batch, seq): the scores of tokens already written
        penalised = torch.where(seen < 0, seen * settings.repetition_penalty, seen / settings.repetition_penalty)
        logits = logits.scatter(1, tokens, penalised)
    if not settings.sample:
        return logits
    logits = logits / settings.temperature  # < 1 sharpens the distribution, > 1 flattens it
    if settings.top_k:  # keep the k most probable tokens
        kth = logits.topk(min(settings.top_k, logits.shape[-1])).values[:, -1:]  # (batch, 1)
        logits = logits.masked_fill(logits < kth, -torch.inf)
    if settings.top_p < 1:  # keep the fewest most probable tokens whose probabilities sum to top_p
        ascending, order = logits.sort(dim=-1)
        cut = ascending.softmax(-1).cumsum(-1) <= 1 - settings.top_p  # (batch, vocab): the improbable tail
        cut[:, -1] = False  # the most probable token always stays
        logits = logits.masked_fill(cut.scatter(1, order, cut), -torch.inf)
    return logits


@torch.no_grad()
def decode(
    next_logits: NextLogits,
    start: torch.Tensor,
    max_new_tokens: int,
    eos_id: int,
    settings: Decoding = GREEDY,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The new tokens after ``start`` ``(batch, seq)``, one at a time, each chosen from the scores of the next
    token given all before it (the chain rule, read left to right), until every row has written ``eos_id`` or
    ``max_new_tokens`` are written. A finished row keeps writing ``eos_id``. ``state`` starts as ``None``: a
    key/value cache that ``next_logits`` fills keeps each later step to one token's work."""
    if max_new_tokens < 1:
        raise SftbookError(f"max_new_tokens must be at least 1, got {max_new_tokens}; pass a positive whole number.")
    tokens, state = start, None
    finished = torch.zeros(len(start), dtype=torch.bool, device=start.device)  # (batch,)
    for _ in range(max_new_tokens):
        logits, state = next_logits(tokens, state)  # (batch, vocab)
        scores = next_token_scores(logits, tokens, settings)
        if settings.sample:
            next_token = torch.multinomial(scores.softmax(-1), 1, generator=generator).squeeze(1)  # (batch,)
        else:
            next_token = scores.argmax(-1)  # (batch,)
        next_token = next_token.masked_fill(finished, eos_id)
        tokens = torch.cat([tokens, next_token[:, None]], dim=1)
        finished |= next_token == eos_id
        if finished.all():
            break
    return tokens[:, start.shape[1] :]  # (batch, new)
