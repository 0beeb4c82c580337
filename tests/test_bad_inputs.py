"""The bad-input catalogue: every public helper and CLI command, given bad input, answers with one clear
sentence that names the fix — an :class:`SftbookError`, not a traceback from deep inside a library — and
loses no saved work (files that existed are unchanged).

Each case is ``(id, call, expected message)``; ``call`` gets a ``Workspace`` with a private data copy and
cache, so cases can corrupt files freely.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import datasets
import pytest
import torch
from conftest import REPO_ROOT
from toys import toy_chat_tokenizer, toy_dataset, toy_encoder, toy_llama
from transformers import BertForMaskedLM

from sftbook import applications, attention, data, env, evaluation, finetuning, llm, lora, modeling, pretraining, retrieval, sft, translation, zoo
from sftbook.cli import main
from sftbook.errors import SftbookError
from sftbook.tokenization import train_wordpiece

FIX = re.compile(
    r"\b(use|run|pass|choose|restore|delete|lower|convert|put|check|train|pick|give|remove|shorten|"
    r"reinstall|tokenize|ask|draw|combine|set)\b",
    re.IGNORECASE,
)


@dataclass
class Workspace:
    root: Path
    data: Path
    tokenizer: object
    monkeypatch: pytest.MonkeyPatch

    def classifier(self) -> modeling.TextClassifier:
        return modeling.TextClassifier(toy_encoder(self.tokenizer), 2, label_names=["negative", "positive"])


@pytest.fixture
def ws(tmp_path, monkeypatch, data_copy):
    monkeypatch.setenv("SFTBOOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tokenizer = train_wordpiece(["a good film", "a bad film", "dull stuff", "great fun"] * 3, vocab_size=80)
    return Workspace(tmp_path, data_copy, tokenizer, monkeypatch)


def corrupt_data_file(ws):
    with open(ws.data / "stsa.binary.test", "ab") as f:
        f.write(b"1 an extra line\n")
    return data.load("sst2")


def truncated_checkpoint(ws):
    folder = ws.classifier().save_pretrained(ws.root / "clf", ws.tokenizer)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    return modeling.TextClassifier.from_pretrained(folder)


def non_utf8_file(ws):
    path = ws.root / "reviews.txt"
    path.write_bytes("a caf\u00e9 review\n".encode("cp1252"))
    return data.read_texts(path)


def empty_file(ws):
    (ws.root / "empty.txt").write_text("\n  \n")
    return data.read_texts(ws.root / "empty.txt")


def nan_loss(ws):
    dataset = toy_dataset(8)
    return finetuning.fine_tune(
        ws.classifier(),
        ws.tokenizer,
        dataset,
        finetuning.FineTuneConfig(epochs=3, batch_size=4, learning_rate=1e30, warmup_fraction=0.0),
        progress=False,
    )


def too_long_for_fill_mask(ws):
    config = pretraining.bert_config("nano", len(ws.tokenizer), max_length=8)
    return pretraining.fill_mask(BertForMaskedLM(config), ws.tokenizer, "a good film " * 10 + "[MASK]")


def resume_with_other_config(ws):
    run = ws.root / "pretrain"
    corpus = pretraining.Corpus(["a good film", "a bad film", "dull stuff", "great fun"] * 10, ["a good film"], {})
    config = pretraining.PretrainConfig(size="nano", steps=4, vocab_size=80, checkpoint_every=2, eval_every=2)
    pretraining.pretrain(config, run, corpus=corpus, stop_after=2, progress=False)
    return pretraining.pretrain(pretraining.PretrainConfig(size="nano", steps=8, vocab_size=80), run, corpus=corpus, progress=False)


def wrong_label(ws):
    split = datasets.Dataset.from_dict({"text": ["a good film", "a bad film"], "label": [1, 5]})
    return finetuning.fine_tune(
        ws.classifier(), ws.tokenizer, {"train": split, "validation": split}, finetuning.FineTuneConfig(epochs=1), progress=False
    )


def empty_question(ws):
    index = retrieval.PassageIndex(toy_encoder(ws.tokenizer), ws.tokenizer, {"reviews": ["a good film", "dull stuff"]})
    return index.search("  ")


def save_over_other_folder(ws):
    (ws.root / "thesis").mkdir()
    (ws.root / "thesis" / "chapter1.txt").write_text("years of work")
    return ws.classifier().save_pretrained(ws.root / "thesis")


CASES = [
    ("unknown dataset", lambda ws: data.load("imdb"), "Unknown dataset 'imdb'; choose one of"),
    ("unknown data source", lambda ws: data.load("sst2", source="ftp"), "Unknown source 'ftp'"),
    ("unknown model", lambda ws: zoo.load_encoder("gpt-5"), "Unknown model 'gpt-5'"),
    ("unknown model size", lambda ws: pretraining.PretrainConfig(size="huge"), "Unknown model size 'huge'"),
    ("unknown application", lambda ws: applications.application("chatbot"), "Unknown application 'chatbot'"),
    ("unknown scale", lambda ws: (ws.monkeypatch.setenv("SFTBOOK_SCALE", "tiny"), data.load("sst2")), "SFTBOOK_SCALE='tiny' is not a scale"),
    ("bad seed", lambda ws: env.set_seed(-1), "non-negative int"),
    ("unknown pooling", lambda ws: modeling.TextClassifier(toy_encoder(ws.tokenizer), 2, "max"), "Unknown pooling 'max'"),
    ("corrupt data file", corrupt_data_file, "Checksum mismatch .*git checkout"),
    ("missing data file", lambda ws: ((ws.data / "TREC.test.all").unlink(), data.load("trec")), "Missing data file"),
    ("checksum mismatch, third-party weights", lambda ws: modeling.load_minilm(expected_sha256="0" * 64), "Checksum mismatch.*reinstall"),
    ("corrupt checkpoint", truncated_checkpoint, "is corrupt .*delete the folder and train it again"),
    ("model folder without config", lambda ws: zoo.load_encoder(str(ws.root)), "no config.json"),
    ("non-UTF-8 text file", non_utf8_file, r"not UTF-8 \(byte 0xe9.*iconv"),
    ("text file with no text", empty_file, "has no text"),
    ("empty text", lambda ws: evaluation.predict(ws.classifier(), ws.tokenizer, ["a good film", ""]), "Text #1 is empty"),
    ("whitespace text", lambda ws: evaluation.predict(ws.classifier(), ws.tokenizer, ["   "]), "Text #0 is empty"),
    ("label outside the label set", wrong_label, "Label 5 is outside"),
    ("unknown precision", lambda ws: finetuning.FineTuneConfig(precision="fp16"), "precision must be one of auto, fp32, bf16, got 'fp16'"),
    ("fewer than two classes", lambda ws: modeling.TextClassifier(toy_encoder(ws.tokenizer), 1), "num_labels >= 2"),
    ("sequence longer than the position embeddings", too_long_for_fill_mask, "exceeds the model's 8 position embeddings"),
    ("NaN loss during training", nan_loss, "lower the learning rate"),
    ("missing pretraining cache", lambda ws: zoo.load_pretrained(build=False), "run book/03_pretraining.ipynb"),
    ("missing fine-tuned cache", lambda ws: zoo.finetuned_classifier("minilm", "sst2", build=False), "run book/04_fine_tuning.ipynb"),
    ("no checkpoint under a tiny classifier", lambda ws: zoo.finetuned_classifier("tiny", "sst2", build=False), "run book/03_pretraining.ipynb"),
    ("missing teacher-taught BERT-tiny", lambda ws: zoo.embedding_distilled_tiny(build=False), "run book/03_pretraining.ipynb"),
    ("interrupted run resumed with another config", resume_with_other_config, "another configuration; pass overwrite=True"),
    ("hub unreachable: data", lambda ws: data.load("sst2", source="hub"), "use sftbook.data.load"),
    ("hub unreachable: model", lambda ws: zoo.load_encoder("bert-base-uncased"), "use --model minilm"),
    ("hub unreachable: translation", lambda ws: translation.hub_translate(["你好"]), "not reachable here"),
    ("number outside the translation task", lambda ws: translation.chinese_numeral(10**6), "0 ≤ n < 1,000,000"),
    ("empty document to summarise", lambda ws: retrieval.split_sentences(""), "pass a non-empty document"),
    ("empty question", empty_question, "Ask a question"),
    ("subset larger than the split", lambda ws: data.subsample(data.load("trec")["test"], 501), "pick 1..500"),
    (
        "attention with mismatched widths",
        lambda ws: attention.scaled_dot_product_attention(torch.ones(1, 2, 4), torch.ones(1, 2, 3), torch.ones(1, 2, 3)),
        "share the last dimension",
    ),
    ("empty corpus for a tokenizer", lambda ws: train_wordpiece([], vocab_size=100), "empty"),
    ("saving over a folder that is not a classifier", save_over_other_folder, "refusing to replace it. Choose a new folder"),
    ("JSONL row without an answer", lambda ws: data.read_jsonl(write(ws, "sft.jsonl", '{"prompt": "hi"}\n')), 'line 1 has no "answer"'),
    ("JSONL row with an empty answer", lambda ws: data.read_jsonl(write(ws, "sft.jsonl", '{"prompt": "hi", "answer": " "}\n')), "empty answer"),
    ("prompt longer than the context", lambda ws: sft.sft_features(toy_chat_tokenizer(), "word " * 300, "yes", 128), "over max_length=128"),
    ("adapter folder that is not one", lambda ws: lora.load_adapter(toy_llama(toy_chat_tokenizer()), ws.root), "not a LoRA adapter"),
    ("GGUF whose sha256 does not match", lambda ws: llm.verify_gguf(write(ws, "model.gguf", "not a model")), "Checksum mismatch.*reinstall"),
    ("hub unreachable: base LLM", lambda ws: llm.load_base_smollm2(), "use load_smollm2"),
]


def write(ws, name: str, text: str) -> Path:
    path = ws.root / name
    path.write_text(text)
    return path


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name, call, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clear_error_that_names_the_fix(ws, name, call, message):
    with pytest.raises(SftbookError) as caught:
        call(ws)
    error = caught.value
    text = str(error)
    assert re.search(message, text), text
    assert "\n" not in text and len(text) < 400, text
    assert FIX.search(text), f"no fix named in: {text}"
    # not a library's traceback re-labelled: nothing chained, or the chain deliberately suppressed
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__), repr(error.__context__)


def test_the_catalogue_is_at_least_twenty_distinct_inputs():
    assert len({name for name, _, _ in CASES}) == len(CASES) >= 20


def test_no_saved_work_is_lost(ws):
    save_over_other_folder_root = ws.root / "thesis"
    with pytest.raises(SftbookError):
        save_over_other_folder(ws)
    assert (save_over_other_folder_root / "chapter1.txt").read_text() == "years of work"
    with pytest.raises(SftbookError):
        resume_with_other_config(ws)
    assert (ws.root / "pretrain" / "checkpoint" / "state.json").is_file()  # the interrupted run is still there
    folder = ws.classifier().save_pretrained(ws.root / "clf2", ws.tokenizer)
    (folder / "model.safetensors").write_bytes(b"junk")
    before = snapshot(folder)
    with pytest.raises(SftbookError):
        modeling.TextClassifier.from_pretrained(folder)
    assert snapshot(folder) == before  # loading a corrupt save never deletes or rewrites it


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """``sftbook ARGS`` run in this process, from the repository root: (exit code, stdout, stderr). Starting a
    Python per case cost seconds each; ``python -m sftbook`` itself is run as a process in test_cli."""
    monkeypatch.chdir(REPO_ROOT)

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


CLI_CASES = [
    ("unknown model", ["finetune", "--model", "gpt-5", "--dataset", "sst2"], "Unknown model 'gpt-5'"),
    ("no steps", ["pretrain", "--steps", "0"], "steps must be at least 1"),
    ("missing notebook", ["execute", "book/99_missing.ipynb"], "No notebook at book/99_missing.ipynb"),
    ("predict without a classifier", ["predict", "--model", "/nonexistent", "great"], "classifier.json"),
    ("predict with nothing to predict", ["predict", "--model", "/nonexistent"], "Nothing to predict"),
    ("sft without a data file", ["sft", "--data", "/nonexistent.jsonl", "--out", "/tmp/sftbook-adapter"], "No file at /nonexistent.jsonl"),
    ("chat with a folder that is not an adapter", ["chat", "--adapter", "/", "hello"], "not a LoRA adapter"),
]


@pytest.mark.parametrize("name, args, message", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input_is_one_line_without_traceback(run_cli, name, args, message):
    code, _, stderr = run_cli(*args)  # an exception other than SftbookError would fail the test with its traceback
    assert code == 2, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], stderr
    assert FIX.search(lines[0])


def test_cli_refuses_a_bad_output_folder_before_training(run_cli, tmp_path):
    precious = tmp_path / "results"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    code, stdout, stderr = run_cli("finetune", "--model", "tiny", "--dataset", "sst2", "--out", str(precious))
    assert code == 2 and "refusing to replace it" in stderr
    assert "fine-tuning" not in stdout + stderr  # refused before any training
    assert (precious / "notes.txt").read_text() == "keep me"


def test_cli_predict_reads_a_non_utf8_file_with_a_clear_error(run_cli, tmp_path):
    path = tmp_path / "reviews.txt"
    path.write_bytes(b"caf\xe9\n")
    code, _, stderr = run_cli("predict", "--model", str(tmp_path), "--file", str(path))
    assert code == 2 and "is not UTF-8" in stderr and "iconv" in stderr
