"""Scoring predictions (chapters 4, 7, 8, 11): accuracy, macro-F1, per-class scores, confusion matrices; and
generated text against a reference answer (ROUGE-L, chapter 8); extractive answers against SQuAD's references
(exact match and token F1, as its official script scores them).

The book does not teach these formulas, so scikit-learn computes them; this module only checks the
inputs and fixes the label set, so a class that is never predicted still counts (with F1 = 0).
"""

from __future__ import annotations

import re
import string
from collections import Counter
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
    """Precision, recall, F1 and support of every class (chapter 10's three-way sentiment)."""
    predictions, labels = _checked(predictions, labels, len(label_names))
    precision, recall, f1, support = sk.precision_recall_fscore_support(labels, predictions, labels=list(range(len(label_names))), zero_division=0)
    return {
        name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
        for i, name in enumerate(label_names)
    }


# ----------------------------------------------------------------------------- generated text against a reference (chapter 8)


def words(text: str) -> list[str]:
    """Lower-cased runs of letters and digits: the tokens ROUGE compares (Google's ``rouge_score`` tokenizer)."""
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


def longest_common_subsequence(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest sequence of words that occurs in both, in order, not necessarily contiguous."""
    previous = [0] * (len(b) + 1)
    for word in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if word == other else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 (Lin 2004): the harmonic mean of the shares of the prediction's and the reference's words
    that lie on their longest common subsequence. It rewards shared wording, in order; a correct answer in
    other words scores low, and a fluent wrong one that copies the reference's frame scores high."""
    predicted, expected = words(prediction), words(reference)
    common = longest_common_subsequence(predicted, expected)
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def repeats_itself(text: str, n: int = 4) -> bool:
    """Whether some run of ``n`` words occurs twice in ``text``: the mark of a decoding loop."""
    tokens = words(text)
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(grams) != len(set(grams))


# ----------------------------------------------------------------------------- extractive answers (chapter 10, SQuAD)


def squad_normalize(text: str) -> str:
    """SQuAD's answer normalisation (its official evaluation script): lower case, punctuation removed, the
    articles a/an/the removed, white space collapsed."""
    text = "".join(character for character in text.lower() if character not in string.punctuation)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def squad_exact_match(prediction: str, references: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals some normalised reference, else 0.0."""
    if not references:
        raise SftbookError("No reference answers to score against; pass at least one.")
    return float(any(squad_normalize(prediction) == squad_normalize(reference) for reference in references))


def squad_f1(prediction: str, references: Sequence[str]) -> float:
    """Token F1 between the normalised prediction and each normalised reference (tokens counted with repeats),
    the best over the references."""
    if not references:
        raise SftbookError("No reference answers to score against; pass at least one.")

    def f1(reference: str) -> float:
        predicted, expected = squad_normalize(prediction).split(), squad_normalize(reference).split()
        common = sum((Counter(predicted) & Counter(expected)).values())
        if not predicted or not expected:
            return float(predicted == expected)
        if common == 0:
            return 0.0
        precision, recall = common / len(predicted), common / len(expected)
        return 2 * precision * recall / (precision + recall)

    return max(f1(reference) for reference in references)
