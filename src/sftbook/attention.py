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
        raise SftbookError(f"q and k must share the last dimension d_k, got {q.shape[-1]} and {k.shape[-1]}; give both the same width.")
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
            raise SftbookError(f"mask of shape {tuple(mask.shape)} does not broadcast to the scores' shape {tuple(scores.shape)}.") from None
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


def causal_mask(length: int) -> torch.Tensor:
    """Boolean (1, 1, length, length) mask, True on and below the diagonal: position i sees 0..i only.

    What lets a decoder train on a whole target sentence at once (teacher forcing, chapter 10).
    """
    return torch.ones(length, length, dtype=torch.bool).tril()[None, None]


class MultiHeadAttention(nn.Module):
    """Project to queries, keys and values, attend in ``num_heads`` heads, merge, project out.

    Self-attention by default; given ``memory`` the keys and values come from it instead —
    the *cross-attention* with which a decoder reads the encoder's output (chapter 10).
    """

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        if d_model % num_heads:
            raise SftbookError(f"d_model={d_model} is not divisible by num_heads={num_heads}.")
        self.num_heads = num_heads
        self.query, self.key, self.value = (nn.Linear(d_model, d_model) for _ in range(3))
        self.output = nn.Linear(d_model, d_model)

    def context(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Merged head outputs before the output projection — what ``BertSelfAttention`` returns.

        ``attention_mask`` (batch, keys) is a tokenizer padding mask; ``mask`` any boolean mask
        broadcastable to (batch, heads, queries, keys), e.g. :func:`causal_mask`. Give one or neither.
        """
        source = x if memory is None else memory
        for name, tensor in (("x", x), ("memory", source)):
            if tensor.ndim != 3:
                raise SftbookError(f"{name} must be (batch, seq, d_model), got shape {tuple(tensor.shape)}.")
        if attention_mask is not None and mask is not None:
            raise SftbookError("Pass either attention_mask (padding) or mask (general), not both; combine them with &.")
        q = split_heads(self.query(x), self.num_heads)  # (batch, heads, queries, d_k)
        k, v = (split_heads(layer(source), self.num_heads) for layer in (self.key, self.value))  # (batch, heads, keys, d_k)
        if attention_mask is not None:
            mask = padding_mask(attention_mask)
        out, weights = scaled_dot_product_attention(q, k, v, mask)  # (batch, heads, queries, d_k)
        return merge_heads(out), weights

    def forward(self, x: torch.Tensor, attention_mask=None, memory=None, mask=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The projected output and the weights (batch, heads, queries, keys); arguments as in :meth:`context`."""
        context, weights = self.context(x, attention_mask, memory, mask)
        return self.output(context), weights

    @classmethod
    def from_bert_layer(cls, layer) -> MultiHeadAttention:
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


MultiHeadSelfAttention = MultiHeadAttention  # the name chapter 5 introduces it by
