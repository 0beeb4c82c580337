"""Loss functions from their formulas (chapter 6), each checked against PyTorch's own.

The article prints binary cross-entropy as ``L = −Σ tᵢ log pᵢ + (1 − tᵢ) log(1 − pᵢ)``: the minus sign
covers only the first term. :func:`article_bce` implements that literally so chapter 6 can show it is
not minimised at the true labels; :func:`binary_cross_entropy` is the correct
``−Σ [tᵢ log pᵢ + (1 − tᵢ) log(1 − pᵢ)]``.
"""

from __future__ import annotations

import torch

from sftbook.errors import SftbookError

REDUCTIONS = ("mean", "sum", "none")
LOG_FLOOR = -100.0  # PyTorch clamps log(p) at −100 in binary_cross_entropy, so log(0) stays finite


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    if reduction == "none":
        return values
    raise SftbookError(f"Unknown reduction {reduction!r}; choose one of: {', '.join(REDUCTIONS)}.")


def _check_nonempty(tensor: torch.Tensor, name: str) -> None:
    if tensor.numel() == 0:
        raise SftbookError(f"{name} is an empty batch; a loss needs at least one example.")


def _check_same_shape(a: torch.Tensor, b: torch.Tensor, names: str) -> None:
    if a.shape != b.shape:
        raise SftbookError(f"{names} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}.")


def _check_class_targets(logits: torch.Tensor, targets: torch.Tensor) -> None:
    _check_nonempty(logits, "logits")
    if logits.ndim != 2:
        raise SftbookError(f"logits must be (batch, classes), got shape {tuple(logits.shape)}.")
    if targets.shape != logits.shape[:1]:
        raise SftbookError(f"targets must be (batch,) = ({logits.shape[0]},), got {tuple(targets.shape)}.")
    if targets.dtype not in (torch.int64, torch.int32):
        raise SftbookError(f"targets must be integer class indices, got dtype {targets.dtype}.")
    if targets.min() < 0 or targets.max() >= logits.shape[1]:
        raise SftbookError(
            f"targets must lie in 0..{logits.shape[1] - 1} for {logits.shape[1]} classes, "
            f"got values from {int(targets.min())} to {int(targets.max())}."
        )


def naive_log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """``log(exp(z) / Σ exp(z))`` as written: overflows to nan/−inf for large logits (chapter 6 shows it)."""
    exp = logits.exp()
    return (exp / exp.sum(dim=-1, keepdim=True)).log()


def log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """``z − logsumexp(z)``, with the row maximum subtracted first so no ``exp`` overflows."""
    shifted = logits - logits.max(dim=-1, keepdim=True).values
    return shifted - shifted.exp().sum(dim=-1, keepdim=True).log()


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """``−log softmax(z)[y]`` per example: the loss BERT classifiers are fine-tuned with."""
    _check_class_targets(logits, targets)
    per_example = -log_softmax(logits).gather(1, targets.long().unsqueeze(1)).squeeze(1)  # (batch,)
    return _reduce(per_example, reduction)


def label_smoothing_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, smoothing: float, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy against ``(1 − ε)·one_hot(y) + ε/K``: the model is never asked for certainty."""
    if not 0.0 <= smoothing < 1.0:
        raise SftbookError(f"smoothing must lie in [0, 1), got {smoothing}.")
    _check_class_targets(logits, targets)
    num_classes = logits.shape[1]
    soft = torch.full_like(logits, smoothing / num_classes)
    soft.scatter_(1, targets.long().unsqueeze(1), 1.0 - smoothing + smoothing / num_classes)
    return _reduce(-(soft * log_softmax(logits)).sum(dim=1), reduction)


def _check_probabilities(probs: torch.Tensor, targets: torch.Tensor) -> None:
    _check_nonempty(probs, "probs")
    _check_same_shape(probs, targets, "probs and targets")
    if torch.isnan(probs).any() or probs.min() < 0 or probs.max() > 1:
        raise SftbookError("probs must be probabilities in [0, 1]; apply torch.sigmoid to raw scores, or use binary_cross_entropy_with_logits.")
    if targets.min() < 0 or targets.max() > 1:
        raise SftbookError("targets must lie in [0, 1] (labels 0/1, or soft labels).")


def binary_cross_entropy(probs: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """The correct BCE: ``−[t log p + (1 − t) log(1 − p)]`` per element, logs floored at −100."""
    _check_probabilities(probs, targets)
    log_p = probs.log().clamp(min=LOG_FLOOR)
    log_not_p = (1 - probs).log().clamp(min=LOG_FLOOR)
    return _reduce(-(targets * log_p + (1 - targets) * log_not_p), reduction)


def article_bce(probs: torch.Tensor, targets: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """The article's formula read literally: ``−t log p + (1 − t) log(1 − p)`` — the sign covers one term.

    Wrong on purpose (chapter 6): for a negative example (t = 0) it *rewards* predicting p → 1.
    """
    _check_probabilities(probs, targets)
    log_p = probs.log().clamp(min=LOG_FLOOR)
    log_not_p = (1 - probs).log().clamp(min=LOG_FLOOR)
    return _reduce(-targets * log_p + (1 - targets) * log_not_p, reduction)


def binary_cross_entropy_with_logits(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """BCE on raw scores ``x``: ``(1 − t)·x + log(1 + e^{−x})``, i.e. BCE of ``σ(x)`` without forming σ(x).

    ``log(1 + e^{−x})`` is computed as ``logaddexp(0, −x)``, which neither overflows for very negative
    ``x`` nor loses the gradient at ``x = 0`` (as ``max(x, 0) + log1p(e^{−|x|})`` does).
    """
    _check_nonempty(logits, "logits")
    _check_same_shape(logits, targets, "logits and targets")
    if targets.min() < 0 or targets.max() > 1:
        raise SftbookError("targets must lie in [0, 1] (labels 0/1, or soft labels).")
    per_element = (1 - targets) * logits + torch.logaddexp(torch.zeros_like(logits), -logits)
    return _reduce(per_element, reduction)


def mse(predictions: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Mean squared error ``(ŷ − y)²`` per element."""
    _check_nonempty(predictions, "predictions")
    _check_same_shape(predictions, targets, "predictions and targets")
    return _reduce((predictions - targets) ** 2, reduction)
