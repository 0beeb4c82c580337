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
            raise SftbookError(f"Text #{index} is empty or not a string ({text!r}); remove it or give it words to classify.")
    return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]


def predict_logits(model, tokenizer, texts: Sequence[str], max_length: int = 128, batch_size: int = 128) -> torch.Tensor:
    """Logits ``(n, num_labels)`` of a :class:`~sftbook.modeling.TextClassifier`, in eval mode."""
    from sftbook.training import pad_batch

    limit = min(max_length, model.encoder.config.max_position_embeddings)
    encoded = encode_texts(tokenizer, texts, limit)
    device = next(model.parameters()).device
    model.eval()
    order = by_length(encoded)
    logits = torch.empty(len(encoded), model.num_labels)
    with torch.no_grad():
        for start in range(0, len(encoded), batch_size):
            rows = order[start : start + batch_size]
            batch = pad_batch([encoded[i] for i in rows], tokenizer.pad_token_id)
            logits[rows] = model(batch["input_ids"].to(device), batch["attention_mask"].to(device)).float().cpu()
    return logits


def by_length(encoded: Sequence[Sequence[int]]) -> list[int]:
    """Indices sorted by sequence length: batches of similar lengths waste little on padding.

    Inference gives the same logits in any order (eval mode, padding masked), so the order is free.
    """
    return sorted(range(len(encoded)), key=lambda i: len(encoded[i]))


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


def _precision_recall_f1(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    num_labels = len(matrix)
    true_positive = np.diag(matrix).astype(float)
    precision = np.divide(true_positive, matrix.sum(0), out=np.zeros(num_labels), where=matrix.sum(0) > 0)
    recall = np.divide(true_positive, matrix.sum(1), out=np.zeros(num_labels), where=matrix.sum(1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(num_labels), where=(precision + recall) > 0)
    return precision, recall, f1


def scores(predictions: Sequence[int], labels: Sequence[int], num_labels: int) -> dict[str, float]:
    """Accuracy and macro-averaged F1 (a class never predicted nor present counts as F1 = 0)."""
    if len(labels) == 0:
        raise SftbookError("Cannot score an empty set of predictions.")
    matrix = confusion_matrix(predictions, labels, num_labels)
    f1 = _precision_recall_f1(matrix)[2]
    return {"accuracy": float(np.trace(matrix) / matrix.sum()), "macro_f1": float(f1.mean())}


def per_class_scores(predictions: Sequence[int], labels: Sequence[int], label_names: Sequence[str]) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support of every class (chapter 8's three-way sentiment)."""
    if len(labels) == 0:
        raise SftbookError("Cannot score an empty set of predictions.")
    matrix = confusion_matrix(predictions, labels, len(label_names))
    precision, recall, f1 = _precision_recall_f1(matrix)
    return {
        name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(matrix[i].sum())}
        for i, name in enumerate(label_names)
    }


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
    order = by_length(encoded)
    vectors = np.zeros((len(encoded), encoder.config.hidden_size), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(encoded), batch_size):
            rows = order[start : start + batch_size]
            batch = pad_batch([encoded[i] for i in rows], tokenizer.pad_token_id)
            mask = batch["attention_mask"].to(device)
            hidden = encoder(input_ids=batch["input_ids"].to(device), attention_mask=mask).last_hidden_state  # (batch, seq, hidden)
            weights = mask.unsqueeze(-1).to(hidden.dtype)  # (batch, seq, 1)
            vectors[rows] = ((hidden * weights).sum(1) / weights.sum(1)).float().cpu().numpy()
    return vectors


def fit_logistic(features, labels: Sequence[int], validation_features, validation_labels: Sequence[int], grid: Sequence[float] = (0.1, 1, 10)):
    """Logistic regression with its inverse regularisation ``C`` chosen on the validation split.

    The classifier of the linear probe (chapters 3, 4, 9, 10) and of the TF-IDF baseline.
    """
    from sklearn.linear_model import LogisticRegression

    if len(set(labels)) < 2:
        raise SftbookError("Logistic regression needs at least two classes among the training labels.")
    fitted = [LogisticRegression(C=c, max_iter=3000).fit(features, labels) for c in grid]
    return max(fitted, key=lambda model: model.score(validation_features, validation_labels))


def linear_probe(encoder, tokenizer, dataset, max_length: int = 64, grid: Sequence[float] = (0.1, 1, 10)) -> dict[str, float]:
    """Test accuracy and macro-F1 of logistic regression on frozen :func:`sentence_embeddings`."""
    features = {split: sentence_embeddings(encoder, tokenizer, list(dataset[split]["text"]), max_length) for split in ("train", "validation", "test")}
    labels = {split: list(dataset[split]["label"]) for split in ("train", "validation", "test")}
    probe = fit_logistic(features["train"], labels["train"], features["validation"], labels["validation"], grid)
    num_labels = dataset["train"].features["label"].num_classes
    return {**scores(probe.predict(features["test"]).tolist(), labels["test"], num_labels), "C": float(probe.C)}


def tfidf_classifier(dataset, grid: Sequence[float] = (0.3, 1, 3, 10, 30)):
    """The classical baseline (chapters 4, 10): TF-IDF of words and word pairs + logistic regression.

    Returns a fitted scikit-learn pipeline (``.predict(texts)``) with ``C`` chosen on the validation split.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    train, validation = dataset["train"], dataset["validation"]
    candidates = [
        make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), LogisticRegression(C=c, max_iter=3000)).fit(list(train["text"]), list(train["label"]))
        for c in grid
    ]
    return max(candidates, key=lambda model: model.score(list(validation["text"]), list(validation["label"])))


def latency_ms(model, tokenizer, texts: Sequence[str], max_length: int = 64, repeats: int = 3) -> float:
    """Median milliseconds to classify one sentence at a time (batch size 1), after a warm-up call."""
    import time

    if not texts:
        raise SftbookError("latency_ms needs at least one text to time.")
    predict_logits(model, tokenizer, texts[:1], max_length)
    times = []
    for _ in range(repeats):
        for text in texts:
            start = time.perf_counter()
            predict_logits(model, tokenizer, [text], max_length)
            times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))
