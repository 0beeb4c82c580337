"""Scoring predictions (chapters 4, 7, 8, 10): accuracy, macro-F1, per-class scores, confusion matrices.

The book does not teach these formulas, so scikit-learn computes them; this module only checks the
inputs and fixes the label set, so a class that is never predicted still counts (with F1 = 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn import metrics as sk

from sftbook.errors import SftbookError


def _checked(predictions: Sequence[int], labels: Sequence[int], num_labels: int) -> tuple[np.ndarray, np.ndarray]:
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape:
        raise SftbookError(f"{len(predictions)} predictions for {len(labels)} labels; pass one prediction per label.")
    if len(labels) == 0:
        raise SftbookError("Cannot score an empty set of predictions.")
    if labels.min() < 0 or labels.max() >= num_labels or predictions.min() < 0 or predictions.max() >= num_labels:
        raise SftbookError(f"Labels and predictions must lie in 0..{num_labels - 1}; check num_labels.")
    return predictions, labels


def confusion_matrix(predictions: Sequence[int], labels: Sequence[int], num_labels: int) -> np.ndarray:
    """``matrix[true, predicted]`` counts."""
    predictions, labels = _checked(predictions, labels, num_labels)
    return sk.confusion_matrix(labels, predictions, labels=list(range(num_labels)))


def scores(predictions: Sequence[int], labels: Sequence[int], num_labels: int) -> dict[str, float]:
    """Accuracy and macro-averaged F1 (a class never predicted nor present counts as F1 = 0)."""
    predictions, labels = _checked(predictions, labels, num_labels)
    macro_f1 = sk.f1_score(labels, predictions, labels=list(range(num_labels)), average="macro", zero_division=0)
    return {"accuracy": float(sk.accuracy_score(labels, predictions)), "macro_f1": float(macro_f1)}


def per_class_scores(predictions: Sequence[int], labels: Sequence[int], label_names: Sequence[str]) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support of every class (chapter 9's three-way sentiment)."""
    predictions, labels = _checked(predictions, labels, len(label_names))
    precision, recall, f1, support = sk.precision_recall_fscore_support(labels, predictions, labels=list(range(len(label_names))), zero_division=0)
    return {
        name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
        for i, name in enumerate(label_names)
    }
