"""Scaled dot-product and multi-head attention, from the article's formula (chapter 5).

The article writes attention as ``softmax(QKᵀ/√d_k)·V`` with the softmax spelled out as
``exp(QKᵀ/√d_k) / Z``, its normaliser printed as ``Z⁰``. :func:`attention_as_printed` computes exactly
that with ``Z`` the sum over each query's row; :func:`attention_global_normalizer` shows what a single
normaliser for the whole matrix would give instead; :func:`scaled_dot_product_attention` is the
numerically stable form used everywhere else.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sftbook.errors import SftbookError


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.ndim < 2 or k.ndim != q.ndim or v.ndim != q.ndim:
        raise SftbookError(f"q, k, v must have the same number (>= 2) of dimensions, got {q.ndim}, {k.ndim}, {v.ndim}.")
    if q.shape[-1] != k.shape[-1]:
        raise SftbookError(f"q and k must share the last dimension d_k, got {q.shape[-1]} and {k.shape[-1]}.")
    if k.shape[-2] != v.shape[-2]:
        raise SftbookError(f"k and v must have the same number of positions, got {k.shape[-2]} and {v.shape[-2]}.")
    if q.shape[-2] == 0 or k.shape[-2] == 0:
        raise SftbookError("Attention needs at least one query and one key position.")


def attention_as_printed(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``exp(QKᵀ/√d_k) / Z · V`` literally, with ``Z`` the per-query (per-row) sum. Overflows for large scores."""
    _check_qkv(q, k, v)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., n_q, n_k)
    exp = scores.exp()
    z = exp.sum(dim=-1, keepdim=True)  # (..., n_q, 1): one normaliser per query
    weights = exp / z
    return weights @ v, weights


def attention_global_normalizer(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A misreading of ``Z⁰``: one normaliser for the whole score matrix. Rows no longer sum to 1."""
    _check_qkv(q, k, v)
    exp = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).exp()
    weights = exp / exp.sum(dim=(-2, -1), keepdim=True)
    return weights @ v, weights


def scaled_dot_product_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, scale: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stable attention: the row maximum is subtracted before ``exp``; masked keys get weight 0.

    ``mask`` is boolean and broadcastable to ``(..., n_q, n_k)``, True where a key may be attended to.
    ``scale=False`` drops the ``1/√d_k`` factor (chapter 5 measures why it is there).
    """
    _check_qkv(q, k, v)
    scores = q @ k.transpose(-2, -1)  # (..., n_q, n_k)
    if scale:
        scores = scores / math.sqrt(q.shape[-1])
    if mask is not None:
        if mask.dtype != torch.bool:
            raise SftbookError(f"mask must be boolean (True = attend), got dtype {mask.dtype}.")
        try:
            mask = torch.broadcast_to(mask, scores.shape)
        except RuntimeError:
            raise SftbookError(
                f"mask of shape {tuple(mask.shape)} does not broadcast to the scores' shape {tuple(scores.shape)}."
            ) from None
        if not mask.any(dim=-1).all():
            raise SftbookError("A query has every key masked; each row of the mask needs at least one True.")
        scores = scores.masked_fill(~mask, float("-inf"))
    scores = scores - scores.max(dim=-1, keepdim=True).values
    exp = scores.exp()
    weights = exp / exp.sum(dim=-1, keepdim=True)
    return weights @ v, weights


def padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Tokenizer ``attention_mask`` (batch, seq) of 1/0 → boolean key mask (batch, 1, 1, seq)."""
    if attention_mask.ndim != 2:
        raise SftbookError(f"attention_mask must be (batch, seq), got shape {tuple(attention_mask.shape)}.")
    return attention_mask.bool()[:, None, None, :]


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(batch, seq, d_model) → (batch, heads, seq, d_k)."""
    batch, seq, d_model = x.shape
    if d_model % num_heads:
        raise SftbookError(f"d_model={d_model} is not divisible by num_heads={num_heads}.")
    return x.view(batch, seq, num_heads, d_model // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(batch, heads, seq, d_k) → (batch, seq, heads · d_k)."""
    batch, heads, seq, d_k = x.shape
    return x.transpose(1, 2).reshape(batch, seq, heads * d_k)


class MultiHeadSelfAttention(nn.Module):
    """Project to queries, keys and values, attend in ``num_heads`` heads, merge, project out."""

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        if d_model % num_heads:
            raise SftbookError(f"d_model={d_model} is not divisible by num_heads={num_heads}.")
        self.num_heads = num_heads
        self.query, self.key, self.value = (nn.Linear(d_model, d_model) for _ in range(3))
        self.output = nn.Linear(d_model, d_model)

    def context(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Merged head outputs before the output projection — what ``BertSelfAttention`` returns."""
        if x.ndim != 3:
            raise SftbookError(f"x must be (batch, seq, d_model), got shape {tuple(x.shape)}.")
        q, k, v = (split_heads(layer(x), self.num_heads) for layer in (self.query, self.key, self.value))
        mask = None if attention_mask is None else padding_mask(attention_mask)
        out, weights = scaled_dot_product_attention(q, k, v, mask)  # (batch, heads, seq, d_k)
        return merge_heads(out), weights

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        context, weights = self.context(x, attention_mask)
        return self.output(context), weights

    @classmethod
    def from_bert_layer(cls, layer) -> MultiHeadSelfAttention:
        """Copy the weights of a transformers ``BertLayer``'s attention (query/key/value and output dense)."""
        attention = layer.attention
        d_model = attention.self.query.in_features
        module = cls(d_model, attention.self.num_attention_heads)
        with torch.no_grad():
            for ours, theirs in [
                (module.query, attention.self.query),
                (module.key, attention.self.key),
                (module.value, attention.self.value),
                (module.output, attention.output.dense),
            ]:
                ours.weight.copy_(theirs.weight)
                ours.bias.copy_(theirs.bias)
        return module
