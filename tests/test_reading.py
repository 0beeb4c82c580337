"""Chapter 10's reader: RAFT-style SQuAD examples, the span-only baseline, SQuAD's scores, and the reader's cache key."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sftbook import codegraph, data, lora, reading, retrieval, sft, zoo
from sftbook.data import SquadQuestion
from sftbook.errors import SftbookError

PARAGRAPHS = (
    "The river floods every spring. Farmers plant rice after the water goes down.",
    "The castle was built in 1215 by a king. Its walls are nine metres thick.",
    "Bees make honey from nectar. A hive holds tens of thousands of bees.",
)


def question(text: str, context: int, answer: str, title: str = "Toy") -> SquadQuestion:
    return SquadQuestion(f"{title}-{text}", title, PARAGRAPHS[context], text, (answer,))


def test_reader_examples_hide_the_question_s_paragraph_among_distractors_from_its_own_article():
    questions = data.squad().train[:60]
    paragraphs = reading.article_paragraphs(questions)
    examples = reading.reader_examples(questions, distractor_counts=(0, 1, 2))
    places = set()
    for i, (item, (prompt, answer)) in enumerate(zip(questions, examples)):
        passages = retrieval.prompt_passages(prompt)
        assert len(passages) == 1 + min(i % 3, len(paragraphs[item.title]) - 1)
        assert item.context in passages and set(passages) <= set(paragraphs[item.title])
        assert prompt.endswith(f"Question: {item.question.strip()}") and answer == item.answers[0]
        places.add(passages.index(item.context))
    assert examples == reading.reader_examples(questions, distractor_counts=(0, 1, 2))  # the same draw every time
    assert len(places) > 1  # the right paragraph is not always in the same place


def test_distractors_are_the_other_paragraphs_most_similar_to_the_question():
    asked = question("When did the king build the castle walls?", 0, "spring")  # its own paragraph is the river one
    assert reading.distractors(asked, PARAGRAPHS, 1) == [PARAGRAPHS[1]]
    assert reading.distractors(asked, PARAGRAPHS, 2)[0] == PARAGRAPHS[1] and PARAGRAPHS[0] not in reading.distractors(asked, PARAGRAPHS, 2)
    with pytest.raises(SftbookError, match="ask for 0 to 2"):
        reading.distractors(asked, PARAGRAPHS, 3)


class ScriptedReader(torch.nn.Module):
    """A stand-in LM that first most wants to write "X" (nowhere in the passage), then each letter of ``target``
    in turn (almost surely), and the end-of-text token once ``target`` is written."""

    def __init__(self, tokenizer, target: str) -> None:
        super().__init__()
        self.tokenizer, self.target, self.device = tokenizer, target, torch.device("cpu")

    def forward(self, input_ids, cache=None, **_):
        written = 0 if cache is None else cache + 1
        logits = torch.zeros(len(self.tokenizer))
        logits[self.tokenizer("X", add_special_tokens=False)["input_ids"][0]] = 11.0 if written == 0 else 0.0
        if written < len(self.target):
            logits[self.tokenizer(self.target[written], add_special_tokens=False)["input_ids"][0]] = 10.0
        logits[self.tokenizer.eos_token_id] = 12.0 if written == len(self.target) else 1.0
        return SimpleNamespace(logits=logits[None, None], cache=written)


def test_the_span_only_reader_points_into_the_passage_and_stops_where_the_whole_answer_is_most_probable(tokenizer):
    asked = question("How thick are the walls?", 1, "nine metres")
    reader = ScriptedReader(tokenizer, "nine metres")
    assert (
        reading.extractive_answer(reader, tokenizer, asked.question, [asked.context], max_new_tokens=20, candidates=len(tokenizer)) == "nine metres"
    )
    # a wish the passage cannot grant ("nine metrX"): the answer still ends at a word, never mid-word
    reader = ScriptedReader(tokenizer, "nine metrX")
    assert reading.extractive_answer(reader, tokenizer, asked.question, [asked.context], max_new_tokens=20, candidates=len(tokenizer)) == "nine"
    with pytest.raises(SftbookError, match="at least one"):
        reading.extractive_answer(reader, tokenizer, asked.question, [])


def test_answer_scores_are_squad_exact_match_token_f1_and_containment_per_question():
    scores = reading.answer_scores(
        ["The Denver Broncos", "Broncos of Denver", "in 1215 by a king", "nine"],
        [("Denver Broncos",), ("Denver Broncos",), ("1215",), ("nine metres", "9 m")],
    )
    assert scores["exact match"].tolist() == [1, 0, 0, 0]
    assert scores["F1"] == pytest.approx([1, 2 * (2 / 3) * 1 / (2 / 3 + 1), 2 * (1 / 4) / (1 / 4 + 1), 2 * 0.5 / 1.5])
    assert scores["contains"].tolist() == [1, 0, 1, 0]  # "Broncos of Denver" does not contain "Denver Broncos"
    summary = reading.score_summary(["a b", "c"], [("a b",), ("d",)])
    assert summary["exact match"] == 50 and summary["exact match SE"] == pytest.approx(100 * np.std([1, 0], ddof=1) / np.sqrt(2))
    with pytest.raises(SftbookError, match="one answer per question"):
        reading.answer_scores(["a"], [("a",), ("b",)])


def test_the_reader_key_covers_every_function_its_real_run_calls(tokenizer, model, tmp_path):
    """The reader adapter's key hashes the code :data:`zoo.READER_CODE` reaches; a traced run must call nothing outside it."""
    questions = [question("How thick are the walls?", 1, "nine metres"), question("What do bees make?", 2, "honey")]

    def train_and_save():
        data.squad()
        examples = reading.reader_examples(questions)
        sft.train_lora(model, tokenizer, examples, sft.SFTConfig(steps=1, batch_size=2, top_layers=1, r=2, max_length=512), progress=False)
        lora.save_adapter(model, tmp_path / "reader")
        reading.score_summary(["honey"], [("honey",)])

    called = codegraph.called_definitions(train_and_save)
    assert {("reading", "distractors"), ("sft", "train_lora"), ("data", "squad")} <= called
    assert called - codegraph.reachable([codegraph.entry_point(entry) for entry in zoo.READER_CODE]) == set()
