"""The article's four application scenarios and the head each puts on an encoder (chapter 9)."""

from __future__ import annotations

from dataclasses import dataclass

from sftbook.errors import UnknownNameError


@dataclass(frozen=True)
class Application:
    title: str
    head: str  # what sits on top of the encoder
    why: str  # why that head fits the task
    runs_with: str  # the sftbook helper chapter 9 uses
    metric: str


APPLICATIONS: dict[str, Application] = {
    "sentiment": Application(
        "Sentiment analysis (negative / neutral / positive)",
        "mean-pooled sentence vector → dropout → linear layer with 3 outputs → softmax",
        "one label per sentence: a sentence-level vector and one score per class suffice",
        "zoo.finetuned_classifier('minilm', 'sst3')",
        "accuracy, per-class precision and recall",
    ),
    "translation": Application(
        "Machine translation (Chinese → English)",
        "a decoder with cross-attention to the encoder, and a softmax over the target vocabulary at every step",
        "the output is a new sequence of another length: it is generated word by word, each conditioned on the source",
        "translation.train_translator",
        "exact match on held-out items",
    ),
    "summarization": Application(
        "Summarization (extractive)",
        "no trained head: mean-pooled sentence vectors, ranked by similarity to the document's centroid",
        "an extractive summary selects existing sentences; a sentence encoder already says which are central",
        "retrieval.centroid_summary",
        "content-word recall (ROUGE-1) of the document against the lead-k baseline",
    ),
    "question-answering": Application(
        "Question answering (question type + retrieval)",
        "a 6-way classifier head for the answer type; cosine similarity between question and passage vectors for retrieval",
        "knowing the expected answer type narrows the search; retrieval finds the passages that hold the answer",
        "zoo.finetuned_classifier('minilm', 'trec') and retrieval.PassageIndex",
        "TREC-6 test accuracy; passages returned with scores",
    ),
}


def application(name: str) -> Application:
    """The application called ``name`` (one of :data:`APPLICATIONS`)."""
    if name not in APPLICATIONS:
        raise UnknownNameError("application", name, sorted(APPLICATIONS))
    return APPLICATIONS[name]
