"""Predicting and scoring classifiers (chapters 4, 7, 8, 10): accuracy, macro-F1, confusion matrices."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from sftbook.errors import SftbookError


def encode_texts(tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids of each text, truncated to ``max_length``; empty or blank texts are refused."""
    texts = list(texts)
    for index, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise SftbookError(f"Text #{index} is empty or not a string ({text!r}); a classifier needs words to classify.")
    return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]


def predict_logits(model, tokenizer, texts: Sequence[str], max_length: int = 128, batch_size: int = 128) -> torch.Tensor:
    """Logits ``(n, num_labels)`` of a :class:`~sftbook.modeling.TextClassifier`, in eval mode."""
    from sftbook.training import pad_batch

    limit = min(max_length, model.encoder.config.max_position_embeddings)
    encoded = encode_texts(tokenizer, texts, limit)
    device = next(model.parameters()).device
    model.eval()
    chunks = []
    with torch.no_grad():
        for start in range(0, len(encoded), batch_size):
            batch = pad_batch(encoded[start : start + batch_size], tokenizer.pad_token_id)
            chunks.append(model(batch["input_ids"].to(device), batch["attention_mask"].to(device)).float().cpu())
    return torch.cat(chunks) if chunks else torch.empty(0, model.num_labels)


def predict(model, tokenizer, texts: Sequence[str], max_length: int = 128) -> list[dict]:
    """For each text: the predicted label name and the probability of every label."""
    probabilities = predict_logits(model, tokenizer, texts, max_length).softmax(-1)
    return [
        {"label": model.label_names[int(p.argmax())], "probabilities": dict(zip(model.label_names, p.tolist()))}
        for p in probabilities
    ]


def confusion_matrix(predictions: Sequence[int], labels: Sequence[int], num_labels: int) -> np.ndarray:
    """``matrix[true, predicted]`` counts."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape:
        raise SftbookError(f"{len(predictions)} predictions for {len(labels)} labels.")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_labels or predictions.min() < 0 or predictions.max() >= num_labels):
        raise SftbookError(f"Labels and predictions must lie in 0..{num_labels - 1}.")
    matrix = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def scores(predictions: Sequence[int], labels: Sequence[int], num_labels: int) -> dict[str, float]:
    """Accuracy and macro-averaged F1 (a class never predicted nor present counts as F1 = 0)."""
    if len(labels) == 0:
        raise SftbookError("Cannot score an empty set of predictions.")
    matrix = confusion_matrix(predictions, labels, num_labels)
    true_positive = np.diag(matrix).astype(float)
    precision = np.divide(true_positive, matrix.sum(0), out=np.zeros(num_labels), where=matrix.sum(0) > 0)
    recall = np.divide(true_positive, matrix.sum(1), out=np.zeros(num_labels), where=matrix.sum(1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(num_labels), where=(precision + recall) > 0)
    return {"accuracy": float(true_positive.sum() / matrix.sum()), "macro_f1": float(f1.mean())}


def evaluate(model, tokenizer, split, max_length: int = 128) -> dict[str, float]:
    """Accuracy and macro-F1 of a classifier on a labelled ``datasets.Dataset`` split."""
    logits = predict_logits(model, tokenizer, list(split["text"]), max_length)
    return scores(logits.argmax(-1).tolist(), list(split["label"]), model.num_labels)


def sentence_embeddings(encoder, tokenizer, texts: Sequence[str], max_length: int = 64, batch_size: int = 128) -> np.ndarray:
    """Frozen sentence vectors: the encoder's output averaged over each text's real tokens.

    The features of a *linear probe* (chapters 3 and 4): a classifier fitted on top of them measures
    what the encoder already knows, without changing it. Mean pooling as in ``TextClassifier(pooling="mean")``.
    """
    from sftbook.training import pad_batch

    encoded = encode_texts(tokenizer, texts, min(max_length, encoder.config.max_position_embeddings))
    device = next(encoder.parameters()).device
    encoder.eval()
    vectors = []
    with torch.no_grad():
        for start in range(0, len(encoded), batch_size):
            batch = pad_batch(encoded[start : start + batch_size], tokenizer.pad_token_id)
            mask = batch["attention_mask"].to(device)
            hidden = encoder(input_ids=batch["input_ids"].to(device), attention_mask=mask).last_hidden_state  # (batch, seq, hidden)
            weights = mask.unsqueeze(-1).to(hidden.dtype)  # (batch, seq, 1)
            vectors.append(((hidden * weights).sum(1) / weights.sum(1)).float().cpu().numpy())
    return np.concatenate(vectors)
