"""Fine-tuning pieces on a toy model: the classifier, the loop, evaluation, saving and loading."""

import datasets
import pytest
import torch
from toys import toy_dataset, toy_encoder, toy_tokenizer

from sftbook import data, env, evaluation, finetuning, metrics, modeling, zoo
from sftbook.errors import SftbookError, UnknownNameError


@pytest.fixture(scope="module")
def tokenizer():
    return toy_tokenizer()


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
    config = finetuning.FineTuneConfig(epochs=8, batch_size=4, learning_rate=3e-3, warmup_fraction=0.1)
    result = finetuning.fine_tune(model, tokenizer, toy_dataset(), config, progress=False)
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
        result = finetuning.fine_tune(
            model, tokenizer, toy_dataset(16), finetuning.FineTuneConfig(epochs=2, batch_size=4, learning_rate=1e-3), progress=False
        )
        runs.append(([{k: v for k, v in h.items() if k != "seconds"} for h in result.history], result.model.state_dict()))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])


def test_precision_settings():
    cpu, meta = torch.device("cpu"), torch.device("meta")
    assert finetuning.mixed_precision("fp32", cpu) == "no"
    assert finetuning.mixed_precision("bf16", cpu) == "bf16"
    assert finetuning.mixed_precision("auto", cpu) == ("bf16" if env.bf16_pays_off(cpu) else "no")
    assert env.bf16_pays_off(meta) is False and finetuning.mixed_precision("auto", meta) == "no"
    with pytest.raises(SftbookError, match="precision must be one of auto, fp32, bf16"):
        finetuning.mixed_precision("half", cpu)


def test_bf16_autocast_trains_close_to_float32(tokenizer):
    histories = {}
    for precision in ("fp32", "bf16"):
        model = modeling.TextClassifier(toy_encoder(tokenizer), 2)
        config = finetuning.FineTuneConfig(epochs=3, batch_size=4, learning_rate=1e-3, precision=precision)
        histories[precision] = [h["train_loss"] for h in finetuning.fine_tune(model, tokenizer, toy_dataset(16), config, progress=False).history]
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
        finetuning.fine_tune(model, tokenizer, wrong, finetuning.FineTuneConfig(), progress=False)
    empty = datasets.DatasetDict({**dataset, "train": datasets.Dataset.from_dict({"text": ["  "], "label": [0]})})
    with pytest.raises(SftbookError, match="empty"):
        finetuning.fine_tune(model, tokenizer, empty, finetuning.FineTuneConfig(), progress=False)
    with pytest.raises(SftbookError, match="became nan|became inf"):
        finetuning.fine_tune(model, tokenizer, dataset, finetuning.FineTuneConfig(learning_rate=1e30, epochs=3, batch_size=2), progress=False)
    with pytest.raises(SftbookError, match="epochs must be at least 1"):
        finetuning.FineTuneConfig(epochs=0)


def test_scores_by_hand():
    result = metrics.scores([0, 1, 1, 1], [0, 0, 1, 1], 2)
    assert result["accuracy"] == 0.75
    # class 0: P=1, R=.5, F1=2/3; class 1: P=2/3, R=1, F1=.8
    assert abs(result["macro_f1"] - (2 / 3 + 0.8) / 2) < 1e-12
    assert metrics.confusion_matrix([0, 1, 1, 1], [0, 0, 1, 1], 2).tolist() == [[1, 1], [0, 2]]
    with pytest.raises(SftbookError, match="empty"):
        metrics.scores([], [], 2)
    with pytest.raises(SftbookError, match="0..1"):
        metrics.confusion_matrix([0, 2], [0, 1], 2)


def test_loading_refuses_non_classifier_folders(tmp_path):
    with pytest.raises(SftbookError, match="classifier.json"):
        modeling.TextClassifier.from_pretrained(tmp_path)


def test_finetuned_classifier_cache(tokenizer, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SFTBOOK_CACHE", str(tmp_path))
    monkeypatch.setattr(zoo, "load_encoder", lambda name, build=True: (toy_encoder(tokenizer), tokenizer))
    monkeypatch.setattr(data, "load", lambda name: toy_dataset())
    with pytest.raises(SftbookError, match="04_fine_tuning.ipynb"):
        zoo.finetuned_classifier("toy", "sst2", build=False)
    first, _, history = zoo.finetuned_classifier("toy", "sst2", epochs=1, batch_size=4)
    assert "fine-tuning it now" in capsys.readouterr().out and len(history) == 1
    second, second_tokenizer, cached_history = zoo.finetuned_classifier("toy", "sst2", epochs=1, batch_size=4)
    assert "fine-tuning it now" not in capsys.readouterr().out and cached_history == history
    texts = ["a good film", "dull stuff"]
    assert torch.allclose(evaluation.predict_logits(first, tokenizer, texts), evaluation.predict_logits(second, second_tokenizer, texts))


def test_mean_pool_averages_only_the_real_tokens():
    hidden = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)  # (batch, seq, hidden)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    pooled = modeling.mean_pool(hidden, mask)
    assert torch.equal(pooled[0], hidden[0, :2].mean(0)) and torch.equal(pooled[1], hidden[1].mean(0))
    assert torch.equal(modeling.mean_pool(hidden, torch.zeros(2, 3, dtype=torch.long)), torch.zeros(2, 4))  # no 0/0


def test_sentence_embeddings_have_the_encoder_width_and_refuse_empty_texts(tokenizer):
    encoder = toy_encoder(tokenizer)
    vectors = evaluation.sentence_embeddings(encoder, tokenizer, ["a good film", "good acting and a great plot", "dull"], batch_size=2)
    assert vectors.shape == (3, 16) and len({tuple(v) for v in vectors.round(5)}) == 3
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


def held_out_toy_dataset():
    """Train, validation and test sentences that share no sentence: the sentiment word decides the label."""

    def split(words, nouns):
        texts = [f"a {w} {n}" for w in words for n in nouns]
        return {"text": texts, "label": [int(w in ("good", "great", "fine", "superb")) for w in words for _ in nouns]}

    words = ["good", "great", "fine", "superb", "bad", "dull", "awful", "poor"]
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["negative", "positive"])})
    parts = {"train": ["film", "movie", "plot", "cast"], "validation": ["story", "score"], "test": ["script", "ending"]}
    return datasets.DatasetDict({name: datasets.Dataset.from_dict(split(words, nouns), features=features) for name, nouns in parts.items()})


def test_tfidf_classifier_picks_c_on_validation_and_generalises_to_unseen_sentences():
    dataset = held_out_toy_dataset()
    assert not set(dataset["train"]["text"]) & set(dataset["test"]["text"])
    grid = (0.001, 1, 100)
    pipeline = evaluation.tfidf_classifier(dataset, grid=grid)
    validation = (list(dataset["validation"]["text"]), list(dataset["validation"]["label"]))
    chosen = pipeline.steps[1][1].C
    alone = {c: evaluation.tfidf_classifier(dataset, grid=(c,)).score(*validation) for c in grid}
    assert alone[chosen] == max(alone.values())
    assert pipeline.score(list(dataset["test"]["text"]), list(dataset["test"]["label"])) == 1.0


def test_linear_probe_picks_c_on_validation_and_reports_that_models_test_accuracy(tokenizer):
    dataset = held_out_toy_dataset()
    encoder = toy_encoder(tokenizer)
    probe = evaluation.linear_probe(encoder, tokenizer, dataset, grid=(0.1, 10))
    splits = ("train", "validation", "test")
    features = {s: evaluation.sentence_embeddings(encoder, tokenizer, list(dataset[s]["text"])) for s in splits}
    labels = {s: list(dataset[s]["label"]) for s in splits}
    fitted = {c: evaluation.fit_logistic(features["train"], labels["train"], features["validation"], labels["validation"], (c,)) for c in (0.1, 10)}
    best = max(fitted, key=lambda c: fitted[c].score(features["validation"], labels["validation"]))
    assert probe["C"] == best
    assert probe["accuracy"] == pytest.approx(fitted[best].score(features["test"], labels["test"]))
    with pytest.raises(SftbookError, match="two classes"):
        evaluation.fit_logistic([[0.0], [1.0]], [1, 1], [[0.0]], [1])


def test_finetuned_classifier_on_a_subset(tokenizer, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SFTBOOK_CACHE", str(tmp_path))
    monkeypatch.setattr(zoo, "load_encoder", lambda name, build=True: (toy_encoder(tokenizer), tokenizer))
    monkeypatch.setattr(data, "load", lambda name: toy_dataset(32))
    model, _, history = zoo.finetuned_classifier("toy", "sst2", train_size=8, epochs=1, batch_size=4)
    assert len(history) == 1 and [p.name.split("-")[3] for p in tmp_path.iterdir()] == ["n8"]


def test_per_class_scores_by_hand():
    # true:      0 0 1 1 2 ; predicted: 0 1 1 1 0
    table = metrics.per_class_scores([0, 1, 1, 1, 0], [0, 0, 1, 1, 2], ["neg", "neu", "pos"])
    assert table["neg"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert table["neu"]["precision"] == pytest.approx(2 / 3) and table["neu"]["recall"] == 1.0
    assert table["pos"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert metrics.scores([0, 1, 1, 1, 0], [0, 0, 1, 1, 2], 3)["macro_f1"] == pytest.approx((0.5 + 0.8 + 0) / 3)


def test_classifiers_are_keyed_on_the_weights_they_start_from(tokenizer, tmp_path, monkeypatch):
    """Chapter 3 re-pretrains on every run: a classifier fine-tuned from other weights is not reused; the same weights are."""
    monkeypatch.setenv("SFTBOOK_CACHE", str(tmp_path))
    monkeypatch.setattr(data, "load", lambda name: toy_dataset())
    encoders = [toy_encoder(tokenizer), toy_encoder(tokenizer), modeling.random_like(toy_encoder(tokenizer), seed=1)]
    for encoder in encoders:
        monkeypatch.setattr(zoo, "load_encoder", lambda name, build=True, e=encoder: (e, tokenizer))
        zoo.finetuned_classifier("tiny", "sst2", epochs=1, batch_size=4)
    assert len(list(tmp_path.glob("finetuned-tiny-sst2-*"))) == 2


def test_a_head_started_at_the_probe_predicts_what_the_probe_predicts(tokenizer):
    data = toy_dataset(16)
    model = modeling.TextClassifier(toy_encoder(tokenizer), 2, "mean")
    finetuning.start_head_at_probe(model, tokenizer, data["train"], data["validation"], max_length=16)
    texts = list(data["test"]["text"])
    vectors = evaluation.sentence_embeddings(model.encoder, tokenizer, texts, 16)
    probe = evaluation.fit_logistic(vectors, list(data["train"]["label"]), vectors, list(data["validation"]["label"]))
    logits = evaluation.predict_logits(model, tokenizer, texts, 16)
    assert logits.argmax(-1).tolist() == probe.predict(vectors).tolist()
    with pytest.raises(SftbookError, match="The probe has 2 classes and the head 3"):
        finetuning.start_head_at_probe(modeling.TextClassifier(toy_encoder(tokenizer), 3), tokenizer, data["train"], data["validation"], 16)
