import json

import pytest
import torch
from toys import toy_encoder, toy_tokenizer

from sftbook import artifacts, codegraph, pretraining, zoo
from sftbook.errors import SftbookError, UnknownNameError
from sftbook.tokenization import train_wordpiece

MASK_ID, VOCAB = 4, 1000


@pytest.fixture(scope="module")
def corpus():
    return pretraining.build_corpus()


def test_corpus_is_disjoint_from_every_evaluation_split(corpus):
    keys = pretraining.evaluation_keys()
    assert len(keys) > 4000
    for sentence in corpus.train + corpus.heldout:
        assert pretraining.normalize(sentence) not in keys
    assert corpus.stats["dropped_evaluation"] >= 3534  # 2,546 MR + 988 SUBJ lines are SST dev/test
    assert not set(corpus.train) & set(corpus.heldout)
    assert 0.03 < len(corpus.heldout) / (len(corpus.train) + len(corpus.heldout)) < 0.07


def test_corpus_bad_inputs():
    with pytest.raises(SftbookError, match="No corpus sources"):
        pretraining.build_corpus(sources=())
    with pytest.raises(UnknownNameError, match="corpus source"):
        pretraining.build_corpus(sources=("wikipedia",), exclude=set())
    everything = {pretraining.normalize(t) for t in pretraining._source_sentences("mr")}
    with pytest.raises(SftbookError, match="empty after removing"):
        pretraining.build_corpus(sources=("mr",), exclude=everything)


def _batch(rows=400, width=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (rows, width), generator=g)
    ids[:, 0] = 2  # [CLS]
    lengths = torch.randint(5, width + 1, (rows,), generator=g)
    mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
    ids[torch.arange(rows), lengths - 1] = 3  # [SEP]
    ids[mask == 0] = 0  # [PAD]
    return ids, mask


def test_masking_proportions_follow_bert():
    ids, mask = _batch()
    inputs, labels = pretraining.mask_tokens(ids, mask, MASK_ID, VOCAB, torch.Generator().manual_seed(1))
    eligible = (ids >= 5) & mask.bool()
    chosen = labels != pretraining.IGNORE_INDEX
    n = int(eligible.sum())
    share = chosen.sum().item() / n
    assert abs(share - 0.15) < 4 * (0.15 * 0.85 / n) ** 0.5  # within 4 standard errors
    assert not (chosen & ~eligible).any(), "special or padding tokens were chosen"
    assert torch.equal(labels[chosen], ids[chosen])
    masked = (inputs[chosen] == MASK_ID).float().mean().item()
    kept = (inputs[chosen] == ids[chosen]).float().mean().item()
    replaced = 1 - masked - kept
    k = int(chosen.sum())
    for observed, expected in [(masked, 0.8), (kept, 0.1), (replaced, 0.1)]:
        assert abs(observed - expected) < 4 * (expected * (1 - expected) / k) ** 0.5 + 0.002
    assert torch.equal(inputs[~chosen], ids[~chosen])
    assert (inputs[chosen & (inputs != MASK_ID)] >= 5).all()


def test_masking_is_seeded_and_never_empty():
    ids, mask = _batch(rows=2, width=6)
    first = pretraining.mask_tokens(ids, mask, MASK_ID, VOCAB, torch.Generator().manual_seed(5), probability=1e-6)
    second = pretraining.mask_tokens(ids, mask, MASK_ID, VOCAB, torch.Generator().manual_seed(5), probability=1e-6)
    assert torch.equal(first[1], second[1])
    assert int((first[1] != pretraining.IGNORE_INDEX).sum()) == 1


def test_masking_bad_inputs():
    ids, mask = _batch(rows=2, width=6)
    with pytest.raises(SftbookError, match="differ in shape"):
        pretraining.mask_tokens(ids, mask[:, :3], MASK_ID, VOCAB, torch.Generator())
    with pytest.raises(SftbookError, match="No ordinary token"):
        pretraining.mask_tokens(torch.tensor([[2, 3, 0]]), torch.tensor([[1, 1, 0]]), MASK_ID, VOCAB, torch.Generator())
    with pytest.raises(SftbookError, match="probability"):
        pretraining.mask_tokens(ids, mask, MASK_ID, VOCAB, torch.Generator(), probability=1.5)


def test_masking_agrees_with_transformers_collator_in_distribution():
    from transformers import DataCollatorForLanguageModeling

    tokenizer = train_wordpiece(["a good film", "a bad film", "the plot is thin"] * 3, vocab_size=60)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, return_tensors="pt")
    ids, mask = _batch()
    ids = ids.clamp(max=len(tokenizer) - 1)
    torch.manual_seed(0)
    theirs = collator.torch_mask_tokens(ids.clone(), special_tokens_mask=(ids < 5))[1]
    ours = pretraining.mask_tokens(ids, mask, MASK_ID, len(tokenizer), torch.Generator().manual_seed(0))[1]
    share = lambda labels: (labels != -100).sum().item() / int(((ids >= 5) & mask.bool()).sum())
    assert abs(share(theirs) - share(ours)) < 0.02


@pytest.fixture(scope="module")
def tiny_model():
    from transformers import BertForMaskedLM

    torch.manual_seed(0)
    return BertForMaskedLM(pretraining.bert_config("tiny", VOCAB, 64))


def test_sparse_head_equals_full_logits(tiny_model):
    ids, mask = _batch(rows=8, width=20)
    inputs, labels = pretraining.mask_tokens(ids, mask, MASK_ID, VOCAB, torch.Generator().manual_seed(2))
    tiny_model.eval()
    sparse = pretraining.mlm_loss(tiny_model, inputs, mask, labels, sparse=True)
    full = pretraining.mlm_loss(tiny_model, inputs, mask, labels, sparse=False)
    reference = tiny_model(input_ids=inputs, attention_mask=mask, labels=labels).loss
    assert torch.allclose(sparse, full, atol=1e-6) and torch.allclose(full, reference, atol=1e-6)
    grads = []
    for flag in (True, False):
        tiny_model.zero_grad()
        pretraining.mlm_loss(tiny_model, inputs, mask, labels, sparse=flag).backward()
        grads.append(tiny_model.cls.predictions.transform.dense.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_too_long_sequence_is_a_clear_error(tiny_model):
    ids = torch.full((1, 65), 7)
    with pytest.raises(SftbookError, match="65 tokens exceeds the model's 64 position embeddings"):
        pretraining.mlm_loss(tiny_model, ids, torch.ones_like(ids), ids)


def test_config_bad_inputs():
    with pytest.raises(UnknownNameError, match="micro, mini, nano, tiny"):
        pretraining.PretrainConfig(size="huge")
    with pytest.raises(SftbookError, match="steps must be at least 1"):
        pretraining.PretrainConfig(steps=0)


SMALL_CORPUS = pretraining.Corpus(
    train=[f"sentence {i} about a {'good' if i % 2 else 'bad'} movie with plot {i % 7}" for i in range(64)],
    heldout=["a good movie with plot 3", "a bad movie"],
)


def _small_config(**overrides):
    settings = dict(vocab_size=120, batch_size=8, steps=6, eval_every=3, checkpoint_every=3, max_length=16)
    settings.update(overrides)
    return pretraining.PretrainConfig(**settings)


def test_interrupted_run_resumes_to_the_same_result(tmp_path):
    config = _small_config()
    # One vocabulary for both runs: tokenizers' WordPiece trainer breaks frequency ties in hash order,
    # so two trainings can differ; the checkpoint stores the vocabulary, which is what resuming needs.
    tokenizer = train_wordpiece(SMALL_CORPUS.train, vocab_size=config.vocab_size)
    whole = pretraining.pretrain(config, tmp_path / "whole", corpus=SMALL_CORPUS, tokenizer=tokenizer, progress=False)
    first = pretraining.pretrain(config, tmp_path / "resumed", corpus=SMALL_CORPUS, tokenizer=tokenizer, stop_after=3, progress=False)
    assert len(first.history) == 3 and not (tmp_path / "resumed" / "model.safetensors").exists()
    resumed = pretraining.pretrain(config, tmp_path / "resumed", corpus=SMALL_CORPUS, progress=False)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]
    for (name, a), (_, b) in zip(whole.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.equal(a, b), name
    state = json.loads((tmp_path / "resumed" / "state.json").read_text())
    assert state["complete"] and state["step"] == 6


def test_resuming_with_another_config_is_refused(tmp_path):
    pretraining.pretrain(_small_config(), tmp_path, corpus=SMALL_CORPUS, stop_after=3, progress=False)
    with pytest.raises(SftbookError, match="another configuration"):
        pretraining.pretrain(_small_config(learning_rate=5e-4), tmp_path, corpus=SMALL_CORPUS, progress=False)


def test_training_lowers_the_loss_and_fill_mask_works(tmp_path):
    result = pretraining.pretrain(_small_config(steps=30, learning_rate=3e-3), tmp_path, corpus=SMALL_CORPUS, progress=False)
    losses = [h["loss"] for h in result.history]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    predictions = pretraining.fill_mask(result.model, result.tokenizer, "a good [MASK] with plot 3", top_k=3)
    assert len(predictions) == 3 and all(0 <= p <= 1 for _, p in predictions)
    assert predictions[0][1] >= predictions[1][1]
    with pytest.raises(SftbookError, match="exactly one"):
        pretraining.fill_mask(result.model, result.tokenizer, "no mask here")
    with pytest.raises(SftbookError, match="non-empty"):
        pretraining.fill_mask(result.model, result.tokenizer, "   ")


def test_pretrained_path_follows_the_config_and_a_missing_cache_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SFTBOOK_CACHE", str(tmp_path))
    a, b = zoo.pretrained_path(_small_config()), zoo.pretrained_path(_small_config(seed=1))
    assert a.parent == tmp_path and a != b
    with pytest.raises(SftbookError, match="03_pretraining.ipynb"):
        zoo.load_pretrained(_small_config(), build=False)
    with pytest.raises(SftbookError, match="03_pretraining.ipynb"):
        zoo.checkpoint_fingerprint(_small_config(), build=False)


def test_checkpoint_fingerprint_follows_weights_and_vocabulary(tmp_path, monkeypatch):
    monkeypatch.setenv("SFTBOOK_CACHE", str(tmp_path))
    config = _small_config()
    pretraining.pretrain(config, zoo.pretrained_path(config), corpus=SMALL_CORPUS, progress=False)
    first = zoo.checkpoint_fingerprint(config, build=False)
    assert first == zoo.checkpoint_fingerprint(config, build=False)
    with open(zoo.pretrained_path(config) / "tokenizer.json", "a") as f:
        f.write(" ")
    assert zoo.checkpoint_fingerprint(config, build=False) != first


def test_the_pretraining_key_covers_every_function_a_real_pretraining_run_calls(tmp_path):
    """The cache key hashes the code :data:`zoo.PRETRAINING_CODE` reaches; a traced run must call nothing outside it."""
    run = lambda: pretraining.pretrain(_small_config(), tmp_path / "run", corpus=SMALL_CORPUS, progress=False)
    called = codegraph.called_definitions(run)
    assert ("pretraining", "pretrain") in called and ("artifacts", "save_checkpoint") in called
    assert called - codegraph.reachable([codegraph.entry_point(e) for e in zoo.PRETRAINING_CODE]) == set()


def test_the_classifier_key_covers_every_function_a_real_fine_tuning_calls(tmp_path):
    """The classifier's key hashes the code :data:`zoo.FINETUNING_CODE` reaches; a traced run must call nothing outside it."""
    tokenizer = toy_tokenizer()
    config = zoo.finetune_config("minilm", epochs=1, batch_size=8)
    run = lambda: zoo.train_classifier(toy_encoder(tokenizer), tokenizer, "sst2", "mean", config, 16, tmp_path / "clf")
    called = codegraph.called_definitions(run)
    assert {("data", "load"), ("finetuning", "fine_tune"), ("modeling", "TextClassifier")} <= called
    assert called - codegraph.reachable([codegraph.entry_point(e) for e in zoo.FINETUNING_CODE]) == set()


def test_the_same_classifier_at_the_two_scales_gets_two_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("SFTBOOK_CACHE", str(tmp_path))
    keys = []
    compute_key = artifacts.cache_key
    monkeypatch.setattr(artifacts, "cache_key", lambda *args, **kwargs: keys.append(compute_key(*args, **kwargs)) or keys[-1])
    for scale in ("full", "reduced"):
        monkeypatch.setenv("SFTBOOK_SCALE", scale)
        with pytest.raises(SftbookError, match="No fine-tuned minilm on sst3 in the cache"):
            zoo.finetuned_classifier("minilm", "sst3", epochs=1, build=False)
    assert len(keys) == 2 and keys[0] != keys[1]


def test_reduced_scale_pretrains_for_fewer_steps(monkeypatch):
    assert pretraining.PretrainConfig().steps == 6000
    monkeypatch.setenv("SFTBOOK_SCALE", "reduced")
    config = pretraining.PretrainConfig()
    assert config.steps < 1000 and config.eval_every <= config.steps and config.checkpoint_every <= config.steps
    monkeypatch.setenv("SFTBOOK_SCALE", "huge")
    with pytest.raises(SftbookError, match="SFTBOOK_SCALE='huge' is not a scale; set it to one of full, reduced"):
        pretraining.PretrainConfig()
