"""The article's four application scenarios and the head each puts on an encoder (chapter 10)."""

from __future__ import annotations

from dataclasses import dataclass

from sftbook.errors import UnknownNameError


@dataclass(frozen=True)
class Application:
    title: str
    models: str  # which pretrained model does the work, and whether it was fine-tuned here
    head: str  # what sits on top of the pretrained network
    why: str  # why that head fits the task
    runs_with: str  # the sftbook helpers chapter 10 uses
    metric: str


APPLICATIONS: dict[str, Application] = {
    "sentiment": Application(
        "Sentiment analysis (negative / neutral / positive)",
        "MiniLM, pretrained, fine-tuned here on SST-3's labels",
        "mean-pooled sentence vector → dropout → linear layer with 3 outputs → softmax",
        "one label per sentence: a sentence-level vector and one score per class suffice",
        "zoo.finetuned_classifier('minilm', 'sst3')",
        "accuracy, per-class precision and recall",
    ),
    "translation": Application(
        "Machine translation (Chinese → English numerals)",
        "an encoder–decoder trained from scratch here (no pretraining); SmolLM2, pretrained, after chapter 8's LoRA SFT",
        "a decoder with cross-attention to the encoder and a softmax over the target vocabulary; the LLM's own next-token head",
        "the output is a new sequence of another length: it is generated word by word, each conditioned on the source",
        "translation.train_translator; zoo.instruction_tuned_smollm2",
        "exact match on held-out numbers",
    ),
    "summarization": Application(
        "Summarization (extractive and abstractive)",
        "MiniLM sentence vectors, not fine-tuned here; SmolLM2-Instruct as released (instruction-tuned by its makers)",
        "extractive: no trained head, sentences ranked by similarity to the centroid; abstractive: the LLM writes",
        "an extract can only select sentences; a generator can compress and rephrase — and can invent",
        "retrieval.centroid_summary; llm.generate",
        "coverage of the source's content words, support of the summary's words and numbers in the source",
    ),
    "question-answering": Application(
        "Question answering over the book (retrieval-augmented generation)",
        "router: MiniLM fine-tuned here on TREC; retriever: MiniLM as released; reader: SmolLM2-Instruct, LoRA-tuned here on SQuAD",
        "a 6-way question-type head; cosine similarity of question and passage vectors; the LLM reads the passages and answers",
        "retrieval finds the passages that hold the answer; the reader turns them into an answer",
        "zoo.finetuned_classifier('minilm', 'trec'); retrieval.PassageIndex; zoo.squad_reader; reading.extractive_answer",
        "retrieval hit@1 and hit@3; SQuAD exact match, token F1 and containment, with and without retrieval",
    ),
}


def application(name: str) -> Application:
    """The application called ``name`` (one of :data:`APPLICATIONS`)."""
    if name not in APPLICATIONS:
        raise UnknownNameError("application", name, sorted(APPLICATIONS))
    return APPLICATIONS[name]
