"""Chapter 10's summarization and retrieval helpers, on the book's own text and on toy vectors."""

import warnings

import numpy as np
import pytest

from sftbook import applications, data, retrieval
from sftbook.errors import SftbookError, UnknownNameError


def test_markdown_is_cleaned_and_glued_numbers_filled_in():
    text = (
        "## Head\nWe ran {glue:text}`steps:,` steps {cite:p}`x2020` in $O(n^2)$, see {doc}`04_fine_tuning`.\n```python\nprint(1)\n```\n**Bold** end."
    )
    cleaned = retrieval.clean_markdown(text, {"steps": "6000"})
    assert "6,000 steps" in cleaned and "O(n^2)" in cleaned and "04_fine_tuning" in cleaned
    assert "print" not in cleaned and "cite" not in cleaned and "**" not in cleaned and "##" not in cleaned


def test_book_documents_are_prose_with_headings_and_no_glue_roles():
    documents = retrieval.book_documents(["05_attention"])
    passages = documents["05_attention"]
    assert len(passages) > 5
    assert all("{glue" not in p and "```" not in p for p in passages)
    assert any(" — " in p for p in passages)
    with pytest.raises(SftbookError, match="03_pretraining"):
        retrieval.book_documents(["no_such_chapter"])


def test_sentences_split_on_end_punctuation():
    # "Was it?" is dropped: fragments under three words are not summary material
    assert retrieval.split_sentences("The cat sat down. It was tired! Was it? Yes it was. e.g. not 3.5 here") == [
        "The cat sat down.",
        "It was tired!",
        "Yes it was. e.g. not 3.5 here",
    ]
    with pytest.raises(SftbookError, match="non-empty document"):
        retrieval.split_sentences("   ")


def test_centroid_summary_prefers_central_and_avoids_duplicates():
    vectors = np.array([[1, 0], [0.9, 0.1], [0.9, 0.1], [0, 1], [0.7, 0.7]], dtype=float)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    chosen = retrieval.centroid_summary(vectors, 2, redundancy=1.0)
    assert chosen == sorted(chosen) and len(chosen) == 2
    assert not {1, 2} <= set(chosen)  # the duplicate pair is never chosen together
    assert retrieval.centroid_summary(vectors, 10) == [0, 1, 2, 3, 4]
    for bad, message in [(np.zeros((0, 2)), "empty document"), (vectors, "k ≥ 1")]:
        with pytest.raises(SftbookError, match=message):
            retrieval.centroid_summary(bad, 0 if len(bad) else 2)
    with pytest.raises(SftbookError, match="empty document"):
        retrieval.lead_summary([], 3)


def test_rouge_1_recall_counts_content_words_with_multiplicity():
    assert retrieval.rouge_1_recall("attention attention heads", "the attention heads attention") == 1.0
    assert retrieval.rouge_1_recall("heads", "attention heads") == 0.5
    with pytest.raises(SftbookError, match="no content words"):
        retrieval.rouge_1_recall("x", "the of and")


def test_passage_index_ranks_by_cosine_and_warns_on_long_questions(monkeypatch):
    # two-dimensional "embeddings" by phrase, so the ranking is known without a model
    vectors = {"cats purr": [1.0, 0.0], "dogs bark": [0.0, 1.0], "cats and dogs": [0.7, 0.7]}

    def fake_embed(encoder, tokenizer, texts, max_length=256):
        out = np.array([vectors.get(t, [1.0, 0.1]) for t in texts])
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    monkeypatch.setattr(retrieval, "embed", fake_embed)
    tokenizer = lambda text: {"input_ids": text.split()}
    index = retrieval.PassageIndex(None, tokenizer, {"a": ["cats purr", "dogs bark"], "b": ["cats and dogs"]}, max_length=5)
    hits = index.search("why do cats purr", top_k=2)
    assert [h.passage for h in hits] == ["cats purr", "cats and dogs"] and hits[0].score > hits[1].score
    assert hits[1].source == "b"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        index.search("why " * 10)
    assert any("first 5 are used" in str(w.message) for w in caught)
    with pytest.raises(SftbookError, match="query is empty"):
        index.search(" ")
    with pytest.raises(SftbookError, match="No passages"):
        retrieval.PassageIndex(None, tokenizer, {"a": []})


def test_applications_registry():
    assert set(applications.APPLICATIONS) == {"sentiment", "translation", "summarization", "question-answering"}
    assert "cross-attention" in applications.application("translation").head
    with pytest.raises(UnknownNameError, match="choose one of: question-answering, sentiment"):
        applications.application("chatbot")


def test_cleaning_keeps_glued_decimals_at_a_line_start_and_drops_list_markers():
    text = "falls to an entropy of\n{glue:text}`entropy:.2f` nats.\n1. first item\n- second item\n{glue:text}`share:.1f`% of them"
    cleaned = retrieval.clean_markdown(text, {"entropy": "0.1102", "share": "50.12"})
    assert "entropy of 0.11 nats" in cleaned and "50.1% of them" in cleaned
    assert "first item second item" in cleaned and "1." not in cleaned.split("first")[0]


def test_cleaning_writes_inline_latex_as_plain_text():
    cleaned = retrieval.clean_markdown(r"divide by $\sqrt{d_k}$, set to $-\infty$, $\frac{\exp(s_{ij})}{Z_i}$ and $\theta \leftarrow \theta$")
    assert "√d_k" in cleaned and "-∞" in cleaned and "(exp(s_ij))/(Z_i)" in cleaned and "θ ← θ" in cleaned
    assert "\\" not in cleaned and "{" not in cleaned


def test_cleaning_removes_citation_runs_and_names_textual_citations():
    names = {"devlin2019bert": "Devlin et al. (2019)"}
    text = "Sources: {cite:p}`a`, {cite:p}`b`, {cite:p}`c`. As {cite:t}`devlin2019bert` showed, BERT works {cite:p}`devlin2019bert`."
    assert retrieval.clean_markdown(text, cited=names) == "Sources:. As Devlin et al. (2019) showed, BERT works."


def test_bibliography_names_one_author_and_several():
    names = retrieval.bibliography_names(retrieval.BOOK_DIR / "references.bib")
    assert names["kim2014cnn"] == "Kim (2014)" and names["devlin2019bert"] == "Devlin et al. (2019)"


def test_sections_keep_headings_out_of_the_prose():
    sections = retrieval.book_sections(["05_attention"])
    assert any(s.heading.startswith("Why divide by √d_k") for s in sections)
    assert all(not p.startswith(s.heading) for s in sections for p in s.paragraphs if s.heading)
    documents = retrieval.book_documents(["05_attention"])["05_attention"]
    assert len(documents) == sum(len(s.paragraphs) for s in sections)


def test_every_book_question_is_answered_by_a_span_of_its_chapter():
    questions = data.book_questions()
    assert len(questions) >= 30 and len({q.question for q in questions}) == len(questions)
    chapters = sorted({q.chapter for q in questions})
    documents = retrieval.book_documents(chapters)
    missing = [q.answer for q in questions if not any(retrieval.contains_answer(p, q.answer) for p in documents[q.chapter])]
    assert missing == []


def test_answers_are_compared_after_squad_normalisation():
    assert retrieval.normalize_answer("The  Pooler output!") == "pooler output"
    assert retrieval.contains_answer("It uses the pooler output, as printed.", "pooler output")
    assert not retrieval.contains_answer("a poolers output", "pooler output")  # whole words only
    assert retrieval.contains_answer("Scores go to -∞ first.", "-∞")


def test_support_and_invented_numbers_of_a_summary():
    source = "The model reached 88.2% after 3 epochs on 6,920 sentences."
    assert retrieval.content_word_support("model reached 88.2% after epochs", source) == 1.0
    assert retrieval.content_word_support("model failed badly", source) == pytest.approx(1 / 3)
    assert retrieval.unsupported_numbers("It reached 91.5% after 3 epochs on 6,920 sentences.", source) == ["91.5"]
    with pytest.raises(SftbookError, match="no content words"):
        retrieval.content_word_support("the and of", source)


def test_first_sentences_keep_the_sentences_asked_for_and_drop_an_unfinished_one():
    text = "The model reads the text. It writes a summary of it. Then it goes on and on and"
    assert retrieval.first_sentences(text, 2) == "The model reads the text. It writes a summary of it."
    assert retrieval.first_sentences(text, 5) == "The model reads the text. It writes a summary of it."  # the cut-off tail is not a sentence
    assert retrieval.first_sentences("", 2) == ""
    with pytest.raises(SftbookError, match="at least one sentence"):
        retrieval.first_sentences(text, 0)


def test_prompt_passages_give_back_the_passages_a_question_prompt_was_written_with():
    passages = ["First passage.\nIts second line.", "Second: with a colon."]
    assert retrieval.prompt_passages(retrieval.question_prompt("Why?", passages)) == passages
    assert retrieval.prompt_passages(retrieval.question_prompt("Why?")) == []
