"""Fine-tuning pieces on a toy model: the classifier, the loop, evaluation, saving and loading."""

import datasets
import pytest
import torch
from transformers import BertConfig, BertModel

from sftbook import env, evaluation, modeling, training
from sftbook.errors import HubUnavailableError, SftbookError, UnknownNameError
from sftbook.tokenization import train_wordpiece

GOOD = ["a good film", "a great movie", "good acting and a great plot", "great fun"]
BAD = ["a bad film", "a dull movie", "bad acting and a dull plot", "dull stuff"]


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece((GOOD + BAD) * 3, vocab_size=80)


def toy_encoder(tokenizer, pooler=False):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    return BertModel(config, add_pooling_layer=pooler)


def toy_dataset(n=8):
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["negative", "positive"])})
    texts = (BAD + GOOD) * (n // 8 or 1)
    labels = ([0] * len(BAD) + [1] * len(GOOD)) * (n // 8 or 1)
    split = datasets.Dataset.from_dict({"text": texts, "label": labels}, features=features)
    return datasets.DatasetDict({"train": split, "validation": split, "test": split})


@pytest.mark.parametrize("pooling", ["cls", "mean", "pooler"])
def test_classifier_shapes_and_hidden_size_from_config(tokenizer, pooling):
    model = modeling.TextClassifier(toy_encoder(tokenizer, pooler=pooling == "pooler"), 3, pooling)
    assert model.classifier.in_features == 16  # not a hard-coded 768
    batch = tokenizer(["a good film", "dull"], padding=True, return_tensors="pt")
    assert model(batch["input_ids"], batch["attention_mask"]).shape == (2, 3)


def test_mean_pooling_ignores_padding(tokenizer):
    model = modeling.TextClassifier(toy_encoder(tokenizer), 2, "mean").eval()
    alone = tokenizer(["a good film"], return_tensors="pt")
    padded = tokenizer(["a good film", "good acting and a great plot"], padding=True, return_tensors="pt")
    with torch.no_grad():
        a = model(alone["input_ids"], alone["attention_mask"])
        b = model(padded["input_ids"], padded["attention_mask"])[:1]
    assert torch.allclose(a, b, atol=1e-5)


def test_classifier_bad_inputs(tokenizer):
    with pytest.raises(SftbookError, match="num_labels >= 2"):
        modeling.TextClassifier(toy_encoder(tokenizer), 1)
    with pytest.raises(UnknownNameError, match="pooling"):
        modeling.TextClassifier(toy_encoder(tokenizer), 2, "max")
    with pytest.raises(SftbookError, match="pooler layer"):
        modeling.TextClassifier(toy_encoder(tokenizer), 2, "pooler")
    model = modeling.TextClassifier(toy_encoder(tokenizer), 2)
    with pytest.raises(SftbookError, match="exceeds the encoder's 32 positions"):
        model(torch.ones(1, 40, dtype=torch.long), torch.ones(1, 40, dtype=torch.long))


def test_fine_tune_learns_saves_and_reloads(tokenizer, tmp_path):
    model = modeling.TextClassifier(toy_encoder(tokenizer), 2, "mean", label_names=["negative", "positive"])
    config = training.FineTuneConfig(epochs=8, batch_size=4, learning_rate=3e-3, warmup_fraction=0.1)
    result = training.fine_tune(model, tokenizer, toy_dataset(), config, progress=False)
    assert len(result.history) == 8
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    best = max(h["validation_accuracy"] for h in result.history)
    assert result.history[result.best_epoch - 1]["validation_accuracy"] == best
    assert evaluation.evaluate(result.model, tokenizer, toy_dataset()["validation"])["accuracy"] == best
    saved = result.model.save_pretrained(tmp_path / "clf", tokenizer)
    reloaded = modeling.TextClassifier.from_pretrained(saved)
    texts = ["a great plot", "a dull film"]
    assert torch.allclose(evaluation.predict_logits(reloaded, tokenizer, texts), evaluation.predict_logits(result.model, tokenizer, texts))
    prediction = evaluation.predict(reloaded, tokenizer, texts)[0]
    assert prediction["label"] in {"negative", "positive"} and abs(sum(prediction["probabilities"].values()) - 1) < 1e-6


def test_fine_tune_is_deterministic_on_cpu(tokenizer):
    runs = []
    for _ in range(2):
        model = modeling.TextClassifier(toy_encoder(tokenizer), 2)
        result = training.fine_tune(model, tokenizer, toy_dataset(16), training.FineTuneConfig(epochs=2, batch_size=4, learning_rate=1e-3), progress=False)
        runs.append(([{k: v for k, v in h.items() if k != "seconds"} for h in result.history], result.model.state_dict()))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])


def test_precision_settings():
    cpu, meta = torch.device("cpu"), torch.device("meta")
    assert training.mixed_precision("fp32", cpu) == "no"
    assert training.mixed_precision("bf16", cpu) == "bf16"
    assert training.mixed_precision("auto", cpu) == ("bf16" if env.native_bf16(cpu) else "no")
    assert env.native_bf16(meta) is False and training.mixed_precision("auto", meta) == "no"
    with pytest.raises(SftbookError, match="precision must be one of auto, fp32, bf16"):
        training.mixed_precision("half", cpu)


def test_bf16_autocast_trains_close_to_float32(tokenizer):
    histories = {}
    for precision in ("fp32", "bf16"):
        model = modeling.TextClassifier(toy_encoder(tokenizer), 2)
        config = training.FineTuneConfig(epochs=3, batch_size=4, learning_rate=1e-3, precision=precision)
        histories[precision] = [h["train_loss"] for h in training.fine_tune(model, tokenizer, toy_dataset(16), config, progress=False).history]
    assert histories["fp32"] != histories["bf16"]  # autocast really ran in bf16 ...
    assert histories["bf16"] == pytest.approx(histories["fp32"], rel=0.05)  # ... and changed little
    assert histories["bf16"][-1] < histories["bf16"][0]


def test_classifier_head_ignores_and_keeps_the_global_random_state(tokenizer):
    encoder = toy_encoder(tokenizer)
    torch.manual_seed(2)
    torch.rand(5)
    expected_next_draw = torch.rand(1)
    torch.manual_seed(1)
    first = modeling.TextClassifier(encoder, 2).classifier.weight
    torch.manual_seed(2)
    torch.rand(5)
    second = modeling.TextClassifier(encoder, 2).classifier.weight
    assert torch.equal(torch.rand(1), expected_next_draw)  # building a classifier drew nothing from it
    assert torch.equal(first, second)
    assert not torch.equal(first, modeling.TextClassifier(encoder, 2, seed=1).classifier.weight)


def test_fine_tune_bad_inputs(tokenizer):
    model = modeling.TextClassifier(toy_encoder(tokenizer), 2)
    dataset = toy_dataset()
    wrong = datasets.DatasetDict({**dataset, "train": datasets.Dataset.from_dict({"text": ["a good film"], "label": [5]})})
    with pytest.raises(SftbookError, match="Label 5 is outside the model's label set 0..1"):
        training.fine_tune(model, tokenizer, wrong, training.FineTuneConfig(), progress=False)
    empty = datasets.DatasetDict({**dataset, "train": datasets.Dataset.from_dict({"text": ["  "], "label": [0]})})
    with pytest.raises(SftbookError, match="empty"):
        training.fine_tune(model, tokenizer, empty, training.FineTuneConfig(), progress=False)
    with pytest.raises(SftbookError, match="became nan|became inf"):
        training.fine_tune(model, tokenizer, dataset, training.FineTuneConfig(learning_rate=1e30, epochs=3, batch_size=2), progress=False)
    with pytest.raises(SftbookError, match="epochs must be at least 1"):
        training.FineTuneConfig(epochs=0)


def test_scores_by_hand():
    metrics = evaluation.scores([0, 1, 1, 1], [0, 0, 1, 1], 2)
    assert metrics["accuracy"] == 0.75
    # class 0: P=1, R=.5, F1=2/3; class 1: P=2/3, R=1, F1=.8
    assert abs(metrics["macro_f1"] - (2 / 3 + 0.8) / 2) < 1e-12
    assert evaluation.confusion_matrix([0, 1, 1, 1], [0, 0, 1, 1], 2).tolist() == [[1, 1], [0, 2]]
    with pytest.raises(SftbookError, match="empty"):
        evaluation.scores([], [], 2)
    with pytest.raises(SftbookError, match="0..1"):
        evaluation.confusion_matrix([0, 2], [0, 1], 2)


def test_loading_refuses_non_classifier_folders(tmp_path):
    with pytest.raises(SftbookError, match="classifier.json"):
        modeling.TextClassifier.from_pretrained(tmp_path)


def test_unknown_and_offline_encoders(monkeypatch, tmp_path):
    with pytest.raises(UnknownNameError, match="minilm, minilm-random, tiny, tiny-random, bert-base-uncased"):
        modeling.load_encoder("gpt-5")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnavailableError, match="use --model minilm"):
        modeling.load_encoder("bert-base-uncased")
    with pytest.raises(SftbookError, match="no config.json"):
        modeling.load_encoder(str(tmp_path))


def test_finetuned_classifier_cache(tokenizer, tmp_path, monkeypatch, capsys):
    from sftbook import data

    monkeypatch.setenv("SFTBOOK_CACHE", str(tmp_path))
    monkeypatch.setattr(modeling, "load_encoder", lambda name: (toy_encoder(tokenizer), tokenizer))
    monkeypatch.setattr(data, "load", lambda name: toy_dataset())
    with pytest.raises(SftbookError, match="04_fine_tuning.ipynb"):
        training.finetuned_classifier("toy", "sst2", build=False)
    first, _, history = training.finetuned_classifier("toy", "sst2", epochs=1, batch_size=4)
    assert "fine-tuning it now" in capsys.readouterr().out and len(history) == 1
    second, second_tokenizer, cached_history = training.finetuned_classifier("toy", "sst2", epochs=1, batch_size=4)
    assert "fine-tuning it now" not in capsys.readouterr().out and cached_history == history
    texts = ["a good film", "dull stuff"]
    assert torch.allclose(evaluation.predict_logits(first, tokenizer, texts), evaluation.predict_logits(second, second_tokenizer, texts))


def test_sentence_embeddings_are_the_classifiers_mean_pooling(tokenizer):
    encoder = toy_encoder(tokenizer)
    texts = ["a good film", "good acting and a great plot", "dull"]
    vectors = evaluation.sentence_embeddings(encoder, tokenizer, texts, batch_size=2)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        pooled = modeling.TextClassifier(encoder, 2, "mean").eval().pool(batch["input_ids"], batch["attention_mask"])
    assert vectors.shape == (3, 16)
    assert torch.allclose(torch.from_numpy(vectors), pooled, atol=1e-5)
    with pytest.raises(SftbookError, match="empty"):
        evaluation.sentence_embeddings(encoder, tokenizer, ["fine", " "])


def test_saving_never_replaces_a_folder_that_is_not_a_classifier(tokenizer, tmp_path):
    precious = tmp_path / "notes"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    model = modeling.TextClassifier(toy_encoder(tokenizer), 2)
    with pytest.raises(SftbookError, match="not a saved classifier"):
        model.save_pretrained(precious)
    assert (precious / "thesis.txt").read_text() == "years of work"
    saved = model.save_pretrained(tmp_path / "clf")
    assert model.save_pretrained(saved) == saved  # a previous save may be replaced


def test_inference_order_does_not_change_results(tokenizer):
    """predict_logits and sentence_embeddings sort by length for speed; results come back in input order."""
    model = modeling.TextClassifier(toy_encoder(tokenizer), 2).eval()
    texts = ["good acting and a great plot", "dull", "a good film", "a bad film and dull stuff", "great"]
    together = evaluation.predict_logits(model, tokenizer, texts, batch_size=2)
    one_by_one = torch.cat([evaluation.predict_logits(model, tokenizer, [t]) for t in texts])
    assert torch.allclose(together, one_by_one, atol=1e-5)
    vectors = evaluation.sentence_embeddings(model.encoder, tokenizer, texts, batch_size=2)
    single = [evaluation.sentence_embeddings(model.encoder, tokenizer, [t])[0] for t in texts]
    assert all(abs(a - b).max() < 1e-5 for a, b in zip(vectors, single))
    assert evaluation.latency_ms(model, tokenizer, texts[:2], repeats=1) > 0
    with pytest.raises(SftbookError, match="at least one text"):
        evaluation.latency_ms(model, tokenizer, [])


def test_probe_and_tfidf_select_on_validation_and_learn_the_toy_task(tokenizer):
    dataset = toy_dataset(32)
    pipeline = evaluation.tfidf_classifier(dataset)
    assert pipeline.score(list(dataset["test"]["text"]), list(dataset["test"]["label"])) == 1.0
    probe = evaluation.linear_probe(toy_encoder(tokenizer), tokenizer, dataset)
    assert 0.5 <= probe["accuracy"] <= 1.0 and probe["C"] in (0.1, 1, 10)
    with pytest.raises(SftbookError, match="two classes"):
        evaluation.fit_logistic([[0.0], [1.0]], [1, 1], [[0.0]], [1])


def test_finetuned_classifier_on_a_subset(tokenizer, tmp_path, monkeypatch, capsys):
    from sftbook import data

    monkeypatch.setenv("SFTBOOK_CACHE", str(tmp_path))
    monkeypatch.setattr(modeling, "load_encoder", lambda name: (toy_encoder(tokenizer), tokenizer))
    monkeypatch.setattr(data, "load", lambda name: toy_dataset(32))
    model, _, history = training.finetuned_classifier("toy", "sst2", train_size=8, epochs=1, batch_size=4)
    assert len(history) == 1 and [p.name.split("-")[3] for p in tmp_path.iterdir()] == ["n8"]


def test_per_class_scores_by_hand():
    # true:      0 0 1 1 2 ; predicted: 0 1 1 1 0
    table = evaluation.per_class_scores([0, 1, 1, 1, 0], [0, 0, 1, 1, 2], ["neg", "neu", "pos"])
    assert table["neg"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert table["neu"]["precision"] == pytest.approx(2 / 3) and table["neu"]["recall"] == 1.0
    assert table["pos"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert evaluation.scores([0, 1, 1, 1, 0], [0, 0, 1, 1, 2], 3)["macro_f1"] == pytest.approx((0.5 + 0.8 + 0) / 3)


def test_tiny_classifiers_are_keyed_on_the_pretrained_checkpoint(tokenizer, tmp_path, monkeypatch):
    """Chapter 3 re-pretrains on every run; a classifier fine-tuned from an older checkpoint is not reused."""
    from sftbook import data, pretraining

    monkeypatch.setenv("SFTBOOK_CACHE", str(tmp_path))
    monkeypatch.setattr(modeling, "load_encoder", lambda name: (toy_encoder(tokenizer), tokenizer))
    monkeypatch.setattr(data, "load", lambda name: toy_dataset())
    for fingerprint in ("checkpoint-a", "checkpoint-b"):
        monkeypatch.setattr(pretraining, "checkpoint_fingerprint", lambda config, build=True, f=fingerprint: f)
        training.finetuned_classifier("tiny", "sst2", epochs=1, batch_size=4)
    assert len(list(tmp_path.glob("finetuned-tiny-sst2-*"))) == 2
