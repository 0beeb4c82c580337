"""Sentence embeddings at work: extractive summarization and passage retrieval over the book (chapter 10).

The text is the book itself — the prose of its chapters, with every glued number filled in from the
stored outputs — embedded with all-MiniLM-L6-v2, a model trained to put sentences of similar meaning
close together (mean pooling, then unit length, as sentence-transformers does).
"""

from __future__ import annotations

import re
import unicodedata
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


LATEX_SYMBOLS = {
    r"\infty": "∞",
    r"\cdot": "·",
    r"\times": "×",
    r"\le": "≤",
    r"\ge": "≥",
    r"\to": "→",
    r"\leftarrow": "←",
    r"\in": "∈",
    r"\sum": "Σ",
    r"\lambda": "λ",
    r"\varepsilon": "ε",
    r"\epsilon": "ε",
    r"\eta": "η",
    r"\theta": "θ",
    r"\sigma": "σ",
    r"\delta": "δ",
    r"\dots": "…",
    r"\ldots": "…",
    r"\top": "ᵀ",
    r"\partial": "∂",
    r"\,": " ",
}


def latex_to_text(math: str) -> str:
    """Inline LaTeX as plain text a reader (and a tokenizer) can take: ``\\sqrt{d_k}`` → ``√d_k``, ``-\\infty`` → ``-∞``."""
    text = re.sub(r"\\(?:hat|tilde|bar)\b\s*", "", math)  # accents: the letter itself
    text = re.sub(r"\\(?:big|Big|left|right)(?![a-zA-Z])", "", text)
    previous = None
    while previous != text:  # innermost braces first: \frac{\exp(s_{ij})}{Z_i}
        previous = text
        text = re.sub(r"\\(?:text|texttt|mathrm|mathcal|operatorname|mathbf)\{([^{}]*)\}", r"\1", text)
        text = re.sub(r"([_^])\{([^{}]*)\}", r"\1\2", text)  # x_{ij} → x_ij
        text = re.sub(r"\\frac\{([^{}]*)\}\{([^{}]*)\}", r"(\1)/(\2)", text)
        text = re.sub(r"\\sqrt\{([^{}]*)\}", lambda m: "√" + (m.group(1) if re.fullmatch(r"\w+", m.group(1)) else f"({m.group(1)})"), text)
    for command, symbol in sorted(LATEX_SYMBOLS.items(), key=lambda item: -len(item[0])):
        text = re.sub(re.escape(command) + r"(?![a-zA-Z])", symbol, text)
    text = re.sub(r"\\([a-zA-Z]+)", r"\1", text)  # \exp, \log, \max: the name itself
    return text.replace("{", "").replace("}", "")


def bibliography_names(bib_path: Path) -> dict[str, str]:
    """``key → "Author et al. (year)"`` (or ``"Author (year)"`` for one author) from a BibTeX file."""
    names = {}
    for entry in re.split(r"\n(?=@)", bib_path.read_text(encoding="utf-8")):
        key = re.match(r"@\w+\{([^,]+),", entry.strip())
        authors = re.search(r"author\s*=\s*\{(.*)\},?\s*\n", entry)
        year = re.search(r"year\s*=\s*\{?([^},\n]+)", entry)
        if key and authors and year:
            first = authors.group(1).split(" and ")[0].split(",")[0].strip("{} ")
            names[key.group(1)] = f"{first}{' et al.' if ' and ' in authors.group(1) else ''} ({year.group(1).strip()})"
    return names


def clean_markdown(text: str, glued: dict[str, str] | None = None, cited: dict[str, str] | None = None) -> str:
    """Prose of a Markdown cell: code blocks, directives, citations and markup removed; inline math as plain
    text; glued numbers filled in; ``{cite:t}`` written as its ``cited`` name ("Liu et al. (2019)")."""
    glued, cited = glued or {}, cited or {}

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
    # markup at the start of a line goes before the glued numbers arrive: a line that starts "0.11 nats" is not a list item
    text = re.sub(r"^\s*(#+|[-*]|\d+\.|>|\|.*\|)[ \t]+", "", text, flags=re.M)
    text = re.sub(r"\{glue:text\}`([^`]*)`", glue_value, text)
    text = re.sub(r"\{cite:t\}`([^`]*)`", lambda m: " and ".join(cited.get(k.strip(), "") for k in m.group(1).split(",")), text)
    text = re.sub(r"\s*\{cite:p\}`[^`]*`(?:\s*[,;]\s*\{cite:p\}`[^`]*`)*", "", text)  # a run of citations, with its commas
    text = re.sub(r"\{(?:doc|ref|numref|eq)\}`([^`<]*)(?:<[^>]*>)?`", r"\1", text)
    text = re.sub(r"\$\$.*?\$\$", " ", text, flags=re.S)
    text = re.sub(r"\$([^$\n]+)\$", lambda m: latex_to_text(m.group(1)), text)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links and images keep their text
    text = re.sub(r"[*`]", "", text)
    text = re.sub(r"\s+([,.;:])", r"\1", text)
    return re.sub(r"\s+", " ", text).strip()


@dataclass
class Section:
    chapter: str  # e.g. "03_pretraining"
    heading: str  # the section's heading, as plain text ("" before the first one)
    paragraphs: list[str]


def book_sections(chapter_names: Sequence[str], book_dir: Path | None = None) -> list[Section]:
    """The prose of each chapter (e.g. ``"03_pretraining"``), section by section, from the stored notebook:
    paragraphs of at least five words, glued numbers filled in, citations written as names."""
    book_dir = book_dir or BOOK_DIR
    cited = bibliography_names(book_dir / "references.bib") if (book_dir / "references.bib").is_file() else {}
    sections: list[Section] = []
    for name in chapter_names:
        path = book_dir / f"{name}.ipynb"
        if not path.is_file():
            raise SftbookError(f"No chapter {path}; chapter names look like '03_pretraining'.")
        glued = glued_values(path)
        current = Section(name, "", [])
        for cell in read(path).cells:
            for block in re.split(r"\n\s*\n", cell.source) if cell.cell_type == "markdown" else []:
                if re.match(r"#+ ", block.strip()) and "\n" not in block.strip():
                    sections.append(current)
                    current = Section(name, clean_markdown(block, glued, cited), [])
                    continue
                text = clean_markdown(block, glued, cited)
                if len(text.split()) >= 5:
                    current.paragraphs.append(text)
        sections.append(current)
    return [section for section in sections if section.paragraphs]


def book_documents(chapter_names: Sequence[str], book_dir: Path | None = None) -> dict[str, list[str]]:
    """For each chapter: its paragraphs in order, each prefixed with its section's heading
    (``"Heading — paragraph"``), so a passage found by retrieval says where it comes from."""
    documents: dict[str, list[str]] = {name: [] for name in chapter_names}
    for section in book_sections(chapter_names, book_dir):
        documents[section.chapter] += [f"{section.heading} — {p}" if section.heading else p for p in section.paragraphs]
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


def first_sentences(text: str, count: int) -> str:
    """The first ``count`` whole sentences of ``text`` (:func:`split_sentences`): a summary asked for in two
    sentences is cut to two, and an unfinished sentence at a length cap is dropped."""
    if count < 1:
        raise SftbookError(f"Keep at least one sentence, got count={count}.")
    if not isinstance(text, str) or not text.strip():
        return ""
    sentences = [s for s in split_sentences(text) if s[-1] in ".!?\"')"]
    return " ".join(sentences[:count])


def content_words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z][a-z0-9\-]+", text.lower()) if w not in STOPWORDS]


def rouge_1_recall(summary: str, reference: str) -> float:
    """Share of the reference's content words (stopwords removed, counted with multiplicity) the summary contains."""
    reference_counts, summary_counts = Counter(content_words(reference)), Counter(content_words(summary))
    if not reference_counts:
        raise SftbookError("The reference has no content words to recall.")
    return sum(min(c, summary_counts[w]) for w, c in reference_counts.items()) / sum(reference_counts.values())


def content_word_support(summary: str, source: str) -> float:
    """Share of the summary's content words that occur in the source: 1 for any extract, lower when a
    summary brings in words of its own — paraphrase as well as invention, so it is a warning light, not a verdict."""
    words, known = content_words(summary), set(content_words(source))
    if not words:
        raise SftbookError("The summary has no content words to check.")
    return sum(w in known for w in words) / len(words)


def unsupported_numbers(summary: str, source: str) -> list[str]:
    """Numbers written in the summary that appear nowhere in the source: invented figures, the most
    damaging kind of error in a summary of measurements."""
    found = lambda text: re.findall(r"\d+(?:[.,]\d+)*", text)
    known = set(found(source))
    return [number for number in found(summary) if number not in known]


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


def normalize_answer(text: str) -> str:
    """Lower case, punctuation and the articles a/an/the removed, spaces collapsed (SQuAD's normalisation)."""
    text = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text.lower())
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def contains_answer(text: str, answer: str) -> bool:
    """Whether ``answer`` occurs in ``text`` once both are normalised (:func:`normalize_answer`)."""
    return f" {normalize_answer(answer)} " in f" {normalize_answer(text)} "


QUESTION_PROMPT = "Answer the question in a few words.\n\nQuestion: {question}"
PASSAGES_PROMPT = "Answer the question in a few words, using the passages below.\n\n{passages}\n\nQuestion: {question}"


def question_prompt(question: str, passages: Sequence[str] = ()) -> str:
    """The prompt for a question: on its own (closed book), or after numbered ``passages`` (retrieval-augmented)."""
    if not isinstance(question, str) or not question.strip():
        raise SftbookError("Ask a question: the question is empty.")
    if not passages:
        return QUESTION_PROMPT.format(question=question.strip())
    numbered = "\n\n".join(f"Passage {i}: {p}" for i, p in enumerate(passages, start=1))
    return PASSAGES_PROMPT.format(passages=numbered, question=question.strip())


def prompt_passages(prompt: str) -> list[str]:
    """The passages of a prompt written by :func:`question_prompt`, in order (none for a closed-book prompt)."""
    return re.findall(r"Passage \d+: (.*?)(?=\n\nPassage \d+: |\n\nQuestion: )", prompt, flags=re.S)
