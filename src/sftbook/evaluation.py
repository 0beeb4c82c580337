"""Using classifiers and encoders (chapters 3, 4, 7, 8, 11): predictions, evaluation, frozen sentence
vectors with a linear probe, the TF-IDF baseline, and latency."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from torch.utils import benchmark

from sftbook.batching import by_length, encode_texts, pad_batch
from sftbook.errors import SftbookError
from sftbook.metrics import scores
from sftbook.modeling import mean_pool


def predict_logits(model, tokenizer, texts: Sequence[str], max_length: int = 128, batch_size: int = 128) -> torch.Tensor:
    """Logits ``(n, num_labels)`` of a :class:`~sftbook.modeling.TextClassifier`, in eval mode."""
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


def predict(model, tokenizer, texts: Sequence[str], max_length: int = 128) -> list[dict]:
    """For each text: the predicted label name and the probability of every label."""
    probabilities = predict_logits(model, tokenizer, texts, max_length).softmax(-1)
    return [{"label": model.label_names[int(p.argmax())], "probabilities": dict(zip(model.label_names, p.tolist()))} for p in probabilities]


def evaluate(model, tokenizer, split, max_length: int = 128) -> dict[str, float]:
    """Accuracy and macro-F1 of a classifier on a labelled ``datasets.Dataset`` split."""
    logits = predict_logits(model, tokenizer, list(split["text"]), max_length)
    return scores(logits.argmax(-1).tolist(), list(split["label"]), model.num_labels)


def sentence_embeddings(encoder, tokenizer, texts: Sequence[str], max_length: int = 64, batch_size: int = 128) -> np.ndarray:
    """Frozen sentence vectors: the encoder's output averaged over each text's real tokens.

    The features of a *linear probe* (chapters 3 and 4): a classifier fitted on top of them measures
    what the encoder already knows, without changing it. Mean pooling as in ``TextClassifier(pooling="mean")``.
    """
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
            vectors[rows] = mean_pool(hidden, mask).float().cpu().numpy()  # (batch, hidden)
    return vectors


def fit_logistic(features, labels: Sequence[int], validation_features, validation_labels: Sequence[int], grid: Sequence[float] = (0.1, 1, 10)):
    """Logistic regression with its inverse regularisation ``C`` chosen on the validation split.

    The classifier of the linear probe (chapters 3, 4, 10, 11) and of the TF-IDF baseline.
    """
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
    """The classical baseline (chapters 4, 11): TF-IDF of words and word pairs + logistic regression.

    Returns a fitted scikit-learn pipeline (``.predict(texts)``) with ``C`` chosen on the validation split.
    """
    train, validation = dataset["train"], dataset["validation"]
    candidates = [
        make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), LogisticRegression(C=c, max_iter=3000)).fit(
            list(train["text"]), list(train["label"])
        )
        for c in grid
    ]
    return max(candidates, key=lambda model: model.score(list(validation["text"]), list(validation["label"])))


def latency_ms(model, tokenizer, texts: Sequence[str], max_length: int = 64, repeats: int = 3) -> float:
    """Median over ``texts`` of the milliseconds to classify one sentence alone (batch size 1).

    ``torch.utils.benchmark`` times each text (its mean over ``repeats`` calls, after its own warm-up
    calls, with the threads PyTorch uses now); the median over texts is not moved by one slow sentence.
    """
    if not texts:
        raise SftbookError("latency_ms needs at least one text to time.")
    predict_logits(model, tokenizer, texts[:1], max_length)
    times = []
    for text in texts:
        timer = benchmark.Timer(
            stmt="predict_logits(model, tokenizer, [text], max_length)",
            globals={"predict_logits": predict_logits, "model": model, "tokenizer": tokenizer, "text": text, "max_length": max_length},
            num_threads=torch.get_num_threads(),
        )
        times.append(timer.timeit(repeats).mean)
    return 1000 * float(np.median(times))
