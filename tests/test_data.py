import hashlib
import json
from collections import Counter

import pytest
from conftest import REPO_ROOT

from sftbook import data
from sftbook.errors import DataFileError, HubUnavailableError, SftbookError, UnknownNameError

EXPECTED_SIZES = {
    "sst2": (6920, 872, 1821),
    "sst5": (8544, 1101, 2210),
    "sst3": (8544, 1101, 2210),
    "trec": (4906, 546, 500),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_SIZES))
def test_load_returns_three_splits_with_class_labels(name):
    dataset = data.load(name)
    assert tuple(len(dataset[s]) for s in ("train", "validation", "test")) == EXPECTED_SIZES[name]
    names = dataset["train"].features["label"].names
    assert names == list(data.DATASETS[name].label_names)
    for split in dataset.values():
        assert set(split["label"]) == set(range(len(names)))
        assert all(text.strip() == text and text for text in split["text"])


def test_sst2_counts_match_the_data_card():
    dataset = data.load("sst2")
    assert Counter(dataset["train"]["label"]) == {0: 3310, 1: 3610}
    assert Counter(dataset["test"]["label"]) == {0: 912, 1: 909}


def test_sst3_collapses_sst5():
    sst5, sst3 = data.load("sst5"), data.load("sst3")
    collapse = {0: 0, 1: 0, 2: 1, 3: 2, 4: 2}
    for split in ("train", "validation", "test"):
        assert sst3[split]["text"] == sst5[split]["text"]
        assert sst3[split]["label"] == [collapse[label] for label in sst5[split]["label"]]
    assert Counter(sst3["test"]["label"]) == {0: 912, 1: 389, 2: 909}


def test_trec_validation_is_stratified_disjoint_and_fixed():
    first, second = data.load("trec"), data.load("trec")
    assert first["validation"]["text"] == second["validation"]["text"]
    train, validation = Counter(first["train"]["label"]), Counter(first["validation"]["label"])
    for label in range(6):
        share = validation[label] / (train[label] + validation[label])
        assert abs(share - 0.1) < 0.01, (label, share)
    assert len(first["train"]) + len(first["validation"]) == 5452


def test_cp1252_files_keep_their_ellipses_inside_lines():
    raw = (REPO_ROOT / "data" / "rt-polarity.all").read_bytes()
    assert b"\x85" in raw
    lines = data.read_lines("rt-polarity.all")
    assert len(lines) == raw.count(b"\n") == 10662
    assert any("\u2026" in line for line in lines)  # 0x85 decoded as an ellipsis, not a line break
    assert len(raw.decode("latin-1").splitlines()) > len(lines)  # the trap: 0x85 read as NEL


def test_corpora_are_unlabeled_sentences():
    assert len(data.load_corpus("mr")) == 10662
    subj = data.load_corpus("subj")
    assert len(subj) == 10000 and all(isinstance(s, str) and s for s in subj)


def test_checksums_cover_every_vendored_file_and_the_data_card():
    sums = data.expected_checksums()
    files = {p.name for p in (REPO_ROOT / "data").iterdir()} - {"README.md", "SHA256SUMS"}
    assert set(sums) == files
    card = (REPO_ROOT / "data" / "README.md").read_text(encoding="utf-8")
    for name, digest in sums.items():
        assert digest == hashlib.sha256((REPO_ROOT / "data" / name).read_bytes()).hexdigest()
        assert digest in card, f"data/README.md lacks the sha256 of {name}"


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(UnknownNameError, match="sst2, sst3, sst5, trec"):
        data.load("imdb")
    with pytest.raises(UnknownNameError, match="mr, subj"):
        data.load_corpus("wiki")
    with pytest.raises(UnknownNameError, match="local, hub"):
        data.load("sst2", source="s3")


def test_missing_file_names_the_fix(data_copy):
    (data_copy / "stsa.binary.dev").unlink()
    with pytest.raises(DataFileError, match=r"Missing data file .*stsa\.binary\.dev.*git checkout"):
        data.load("sst2")


def test_checksum_mismatch_names_file_and_both_hashes(data_copy):
    path = data_copy / "stsa.binary.test"
    expected = data.expected_checksums()["stsa.binary.test"]
    path.write_bytes(path.read_bytes().replace(b"1 ", b"0 ", 1))
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(DataFileError) as info:
        data.load("sst2")
    message = str(info.value)
    assert "stsa.binary.test" in message and expected in message and actual in message


def _rewrite_with_checksum(directory, name, content: bytes):
    (directory / name).write_bytes(content)
    sums = data.expected_checksums(directory)
    sums[name] = hashlib.sha256(content).hexdigest()
    (directory / "SHA256SUMS").write_text("".join(f"{d}  {n}\n" for n, d in sums.items()))


def test_malformed_line_names_file_and_line_number(data_copy):
    _rewrite_with_checksum(data_copy, "stsa.binary.dev", b"1 a fine film .\nno label here\n")
    with pytest.raises(DataFileError, match=r"stsa\.binary\.dev, line 2: expected '<label> <text>'"):
        data.load("sst2")


def test_empty_text_is_malformed(data_copy):
    _rewrite_with_checksum(data_copy, "stsa.binary.dev", b"1 a fine film .\n0    \n")
    with pytest.raises(DataFileError, match="line 2"):
        data.load("sst2")


def test_label_out_of_range(data_copy):
    _rewrite_with_checksum(data_copy, "stsa.binary.dev", b"1 a fine film .\n7 a bad one .\n")
    with pytest.raises(DataFileError, match=r"line 2: label 7 is outside 0\.\.1"):
        data.load("sst2")


def test_missing_data_dir_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("SFTBOOK_DATA_DIR", str(tmp_path))
    with pytest.raises(DataFileError, match="SFTBOOK_DATA_DIR"):
        data.load("sst2")


def test_hub_source_offline_fails_with_one_sentence_before_asking_the_hub(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    asked = []
    monkeypatch.setattr(data.datasets, "load_dataset", lambda *args, **kwargs: asked.append(args))
    with pytest.raises(HubUnavailableError, match=r"stanfordnlp/sst2.*sftbook\.data\.load\('sst2'\)"):
        data.load("sst2", source="hub")
    assert asked == []  # no download was even attempted, so nothing waits on network time-outs


def test_hub_source_only_for_datasets_that_have_one():
    with pytest.raises(UnknownNameError, match="hub source"):
        data.load("trec", source="hub")


def test_subsample_is_stratified_seeded_and_checked():
    train = data.load("sst2")["train"]
    part = data.subsample(train, 500, seed=0)
    assert len(part) == 500 and part["text"] == data.subsample(train, 500, seed=0)["text"]
    assert part["text"] != data.subsample(train, 500, seed=1)["text"]
    share = sum(train["label"]) / len(train)
    assert abs(sum(part["label"]) / 500 - share) < 0.01
    assert set(part["text"]) <= set(train["text"])
    for bad in (0, len(train) + 1):
        with pytest.raises(SftbookError, match="pick 1.."):
            data.subsample(train, bad)


def test_reduced_scale_cuts_every_split_to_a_fixed_stratified_subset(monkeypatch):
    full = data.load("sst2")
    monkeypatch.setenv("SFTBOOK_SCALE", "reduced")
    reduced = data.load("sst2")
    for split, size in data.REDUCED_SPLIT_SIZES.items():
        assert len(reduced[split]) == min(size, len(full[split]))
        assert set(reduced[split]["text"]) <= set(full[split]["text"])
    assert reduced["test"]["text"] == data.load("sst2")["test"]["text"]
    assert abs(sum(reduced["train"]["label"]) / len(reduced["train"]) - sum(full["train"]["label"]) / len(full["train"])) < 0.01
    assert len(data.subsample(reduced["train"], 2000)) == len(reduced["train"])  # more than there is: all of it
    assert len(data.load_corpus("mr")) == data.REDUCED_CORPUS_SIZE
    monkeypatch.setenv("SFTBOOK_SCALE", "full")
    assert len(data.load_corpus("mr")) > data.REDUCED_CORPUS_SIZE


def test_book_questions_are_checked_and_a_bad_line_names_the_fix(data_copy):
    questions = data.book_questions()
    assert all(q.question.endswith("?") and q.answer and q.chapter[:2].isdigit() for q in questions)
    good = b'{"question": "Why?", "answer": "because", "chapter": "01_background"}\n'
    _rewrite_with_checksum(data_copy, data.BOOK_QA_FILE, good + b'{"question": "no answer"}\n')
    with pytest.raises(DataFileError, match=r"book_qa\.jsonl: line 2 .*git checkout"):
        data.book_questions()


def test_squad_is_split_by_article_with_every_answer_a_span_of_its_paragraph():
    splits = data.squad()
    parts = (splits.train, splits.validation, splits.test)
    assert sum(map(len, parts)) == 10_570 and len(splits.test) >= 500
    titles = [{q.title for q in part} for part in parts]
    assert len(titles[1]) == 4 and len(titles[2]) == 4 and not (titles[0] & titles[1] or titles[0] & titles[2] or titles[1] & titles[2])
    contexts = [{q.context for q in part} for part in parts]
    assert not (contexts[0] & contexts[2] or contexts[0] & contexts[1])  # no test or validation paragraph is trained on
    assert all(q.answers and all(answer in q.context for answer in q.answers) for part in parts for q in part)
    assert data.squad(seed=1).test != splits.test and data.squad().test == splits.test


def test_a_corrupt_or_malformed_squad_file_is_one_clear_error(tmp_path):
    qa = {"id": "1", "question": "q?", "answers": [{"text": "zz", "answer_start": 0}]}
    (tmp_path / data.SQUAD_FILE).write_text(json.dumps({"version": "1.1", "data": [{"title": "x", "paragraphs": [{"context": "abc", "qas": [qa]}]}]}))
    (tmp_path / data.CHECKSUM_FILE).write_text(f"{hashlib.sha256((tmp_path / data.SQUAD_FILE).read_bytes()).hexdigest()}  {data.SQUAD_FILE}\n")
    with pytest.raises(DataFileError, match="not at its answer_start.*git checkout -- data/squad-dev-v1.1.json"):
        data.squad(directory=tmp_path)
    (tmp_path / data.SQUAD_FILE).write_text("{}")
    with pytest.raises(DataFileError, match="git checkout -- data/squad-dev-v1.1.json"):
        data.squad(directory=tmp_path)
    with pytest.raises(SftbookError, match="at least 1"):
        data.squad(test_articles=0)
