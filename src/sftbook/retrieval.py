"""Sentence embeddings at work: extractive summarization and passage retrieval over the book (chapter 9).

The text is the book itself — the prose of its chapters, with every glued number filled in from the
stored outputs — embedded with all-MiniLM-L6-v2, a model trained to put sentences of similar meaning
close together (mean pooling, then unit length, as sentence-transformers does).
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sftbook.errors import SftbookError
from sftbook.evaluation import sentence_embeddings
from sftbook.notebooks import BOOK_DIR, glued_values, read

STOPWORDS = frozenset(
    "a an the and or but if of to in on at by for with from as is are was were be been being it its this that these "
    "those there here we you they he she i our your their his her not no so than then too very can could would should "
    "will do does did has have had which what who whom when where why how all any each more most other some such only "
    "own same just into over under again further once also one two".split()
)


# ----------------------------------------------------------------------------- the book as text


def clean_markdown(text: str, glued: dict[str, str] | None = None) -> str:
    """Prose of a Markdown cell: code blocks, directives, math and markup removed; glued numbers filled in."""
    glued = glued or {}

    def glue_value(match: re.Match) -> str:
        name, _, spec = match.group(1).partition(":")
        value = glued.get(name, "")
        for number in (int, float):  # "6000" formats as 6,000 — not 6,000.0
            try:
                return format(number(value), spec) if spec else value
            except ValueError:
                continue
        return value

    text = re.sub(r"(`{3,}|~{3,})[^\n]*\n.*?\1", " ", text, flags=re.S)  # fenced code and directives
    text = re.sub(r"\{glue:text\}`([^`]*)`", glue_value, text)
    text = re.sub(r"\{cite:[pt]\}`[^`]*`", "", text)
    text = re.sub(r"\{(?:doc|ref|numref|eq)\}`([^`<]*)(?:<[^>]*>)?`", r"\1", text)
    text = re.sub(r"\$\$.*?\$\$", " ", text, flags=re.S)
    text = re.sub(r"\$([^$\n]+)\$", r"\1", text)  # inline math stays, as its LaTeX source
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links and images keep their text
    text = re.sub(r"^\s*(#+|[-*]|\d+\.|>|\|.*\|)\s*", "", text, flags=re.M)  # headings, bullets, tables
    text = re.sub(r"[*`]", "", text)
    return re.sub(r"\s+", " ", text).strip()


def book_documents(chapter_names: Sequence[str], book_dir: Path | None = None) -> dict[str, list[str]]:
    """For each chapter (e.g. ``"03_pretraining"``): its prose paragraphs, in order, from the stored notebook.

    Each paragraph is prefixed with the heading of its section (``"Heading — paragraph"``), so a passage
    found by retrieval says where it comes from; headings alone are not passages.
    """
    book_dir = book_dir or BOOK_DIR
    documents = {}
    for name in chapter_names:
        path = book_dir / f"{name}.ipynb"
        if not path.is_file():
            raise SftbookError(f"No chapter {path}; chapter names look like '03_pretraining'.")
        glued = glued_values(path)
        notebook = read(path)
        heading, paragraphs = "", []
        for cell in notebook.cells:
            for block in re.split(r"\n\s*\n", cell.source) if cell.cell_type == "markdown" else []:
                if re.match(r"#+ ", block.strip()) and "\n" not in block.strip():
                    heading = clean_markdown(block, glued)
                    continue
                text = clean_markdown(block, glued)
                if len(text.split()) >= 5:
                    paragraphs.append(f"{heading} — {text}" if heading else text)
        documents[name] = paragraphs
    return documents


def split_sentences(text: str) -> list[str]:
    """Sentences ending in ``.``, ``!`` or ``?`` followed by a space and a capital, digit or quote."""
    if not isinstance(text, str) or not text.strip():
        raise SftbookError("There is no text to split into sentences; pass a non-empty document.")
    parts = re.split(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])", text.strip())
    return [p.strip() for p in parts if len(p.split()) >= 3]


# ----------------------------------------------------------------------------- embeddings


def embed(encoder, tokenizer, texts: Sequence[str], max_length: int = 256) -> np.ndarray:
    """Unit-length sentence vectors (mean pooling, as all-MiniLM-L6-v2 was trained), so dot = cosine."""
    vectors = sentence_embeddings(encoder, tokenizer, texts, max_length=max_length)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


# ----------------------------------------------------------------------------- summarization


def centroid_summary(vectors: np.ndarray, k: int, redundancy: float = 0.5) -> list[int]:
    """Indices (in document order) of ``k`` sentences close to the document's mean vector.

    Chosen greedily by maximal marginal relevance (Carbonell & Goldstein, 1998): closeness to the
    centroid minus ``redundancy`` × similarity to the most similar sentence already chosen.
    """
    if len(vectors) == 0:
        raise SftbookError("Cannot summarise an empty document.")
    if k < 1:
        raise SftbookError(f"A summary needs k ≥ 1 sentences, got {k}.")
    centroid = vectors.mean(0)
    relevance = vectors @ (centroid / np.linalg.norm(centroid))  # (sentences,)
    chosen: list[int] = []
    while len(chosen) < min(k, len(vectors)):
        penalty = (vectors @ vectors[chosen].T).max(1) if chosen else np.zeros(len(vectors))
        score = relevance - redundancy * penalty
        score[chosen] = -np.inf
        chosen.append(int(score.argmax()))
    return sorted(chosen)


def lead_summary(sentences: Sequence[str], k: int) -> list[int]:
    """The lead-k baseline: the first ``k`` sentences (hard to beat on news, where writers lead with the point)."""
    if len(sentences) == 0:
        raise SftbookError("Cannot summarise an empty document.")
    return list(range(min(k, len(sentences))))


def content_words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z][a-z0-9\-]+", text.lower()) if w not in STOPWORDS]


def rouge_1_recall(summary: str, reference: str) -> float:
    """Share of the reference's content words (stopwords removed, counted with multiplicity) the summary contains."""
    reference_counts, summary_counts = Counter(content_words(reference)), Counter(content_words(summary))
    if not reference_counts:
        raise SftbookError("The reference has no content words to recall.")
    return sum(min(c, summary_counts[w]) for w, c in reference_counts.items()) / sum(reference_counts.values())


# ----------------------------------------------------------------------------- retrieval


@dataclass
class Hit:
    score: float
    source: str
    passage: str


class PassageIndex:
    """Passages embedded once; :meth:`search` ranks them by cosine similarity to a question."""

    def __init__(self, encoder, tokenizer, documents: dict[str, list[str]], max_length: int = 256) -> None:
        self.encoder, self.tokenizer, self.max_length = encoder, tokenizer, max_length
        self.sources = [name for name, passages in documents.items() for _ in passages]
        self.passages = [p for passages in documents.values() for p in passages]
        if not self.passages:
            raise SftbookError("No passages to index; pass documents with at least one paragraph.")
        self.vectors = embed(encoder, tokenizer, self.passages, max_length)  # (passages, hidden)

    def search(self, question: str, top_k: int = 3) -> list[Hit]:
        if not isinstance(question, str) or not question.strip():
            raise SftbookError("Ask a question: the query is empty.")
        length = len(self.tokenizer(question)["input_ids"])
        if length > self.max_length:
            warnings.warn(
                f"The question is {length} tokens long; only its first {self.max_length} are used "
                "(the encoder's limit here). Shorten it or pass max_length.",
                stacklevel=2,
            )
        query = embed(self.encoder, self.tokenizer, [question], self.max_length)[0]
        scores = self.vectors @ query
        best = np.argsort(-scores)[:top_k]
        return [Hit(float(scores[i]), self.sources[i], self.passages[i]) for i in best]
