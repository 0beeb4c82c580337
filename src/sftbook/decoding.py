"""Greedy decoding: the one loop the book's two generators share, the encoder–decoder translator (chapter 9)
and the chat LLM (chapter 8). What differs between them is only how the next token's scores are computed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from sftbook.errors import SftbookError

# next_logits(tokens so far (batch, seq), state) -> (the next token's logits (batch, vocab), the new state)
NextLogits = Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]


@torch.no_grad()
def greedy_decode(next_logits: NextLogits, start: torch.Tensor, max_new_tokens: int, eos_id: int) -> torch.Tensor:
    """The new tokens after ``start`` ``(batch, seq)``, each the most probable next token given all before it
    (the chain rule, read left to right), until every row has written ``eos_id`` or ``max_new_tokens`` are
    written. A finished row keeps writing ``eos_id``. ``state`` starts as ``None``: a key/value cache that
    ``next_logits`` fills keeps each later step to one token's work."""
    if max_new_tokens < 1:
        raise SftbookError(f"max_new_tokens must be at least 1, got {max_new_tokens}; pass a positive whole number.")
    tokens, state = start, None
    finished = torch.zeros(len(start), dtype=torch.bool, device=start.device)  # (batch,)
    for _ in range(max_new_tokens):
        logits, state = next_logits(tokens, state)  # (batch, vocab)
        next_token = logits.argmax(-1).masked_fill(finished, eos_id)  # (batch,)
        tokens = torch.cat([tokens, next_token[:, None]], dim=1)
        finished |= next_token == eos_id
        if finished.all():
            break
    return tokens[:, start.shape[1] :]  # (batch, new)
