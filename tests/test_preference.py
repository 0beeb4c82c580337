"""DPO written out (preference tuning) on a tiny random Llama with SmolLM2's chat template: the loss against
its definition and against TRL's DPOTrainer on the same batch, the reference as the adapter switched off,
a short run that learns held-out preferences, and the bad inputs."""

import copy
import math

import pytest
import torch
from toys import toy_llama

from sftbook import codegraph, data, lora, preference, sft, zoo
from sftbook.artifacts import sha256_file
from sftbook.errors import SftbookError
from sftbook.preference import PreferencePair

PAIRS = [
    PreferencePair("Is this review positive or negative?", "positive", "negative"),
    PreferencePair("Translate 三百二十一 into English.", "three hundred twenty one", "three hundred twenty"),
    PreferencePair("Is this review positive or negative?", "negative", "positive"),
]


def with_random_adapter(model, seed=1):
    """``model`` with a LoRA adapter whose B is not zero, so the adapter changes the outputs."""
    lora.add_lora(model, r=4, alpha=8)
    generator = torch.Generator().manual_seed(seed)
    for module in lora.lora_modules(model).values():
        module.lora_B.data.normal_(0, 0.5, generator=generator)
    return model


def test_the_dpo_loss_is_minus_log_sigmoid_of_beta_times_the_difference_of_log_ratios():
    torch.manual_seed(0)
    policy_chosen, policy_rejected, reference_chosen, reference_rejected = (torch.randn(5) * 3 for _ in range(4))
    terms = preference.dpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta=0.2)
    by_hand = [
        -math.log(1 / (1 + math.exp(-0.2 * ((pc - rc) - (pr - rr)))))
        for pc, pr, rc, rr in zip(policy_chosen.tolist(), policy_rejected.tolist(), reference_chosen.tolist(), reference_rejected.tolist())
    ]
    assert terms.loss.item() == pytest.approx(sum(by_hand) / 5, rel=1e-6)
    assert torch.allclose(terms.chosen_rewards, 0.2 * (policy_chosen - reference_chosen))
    assert torch.allclose(terms.rejected_rewards, 0.2 * (policy_rejected - reference_rejected))
    # a policy equal to its reference is at log 2, and making the chosen answer likelier lowers the loss
    same = preference.dpo_loss(reference_chosen, reference_rejected, reference_chosen, reference_rejected, beta=0.2)
    assert same.loss.item() == pytest.approx(math.log(2))
    better = preference.dpo_loss(reference_chosen + 1, reference_rejected, reference_chosen, reference_rejected, beta=0.2)
    assert better.loss.item() < same.loss.item()


def test_answer_log_probabilities_sum_the_answer_tokens_and_nothing_else(tokenizer, model):
    features = [preference.preference_features(tokenizer, pair, 128) for pair in PAIRS]
    batch = preference.pair_batch(features, tokenizer.pad_token_id)
    with torch.no_grad():
        ours = preference.answer_logprobs(model, batch)
    assert ours.shape == (2 * len(PAIRS),)
    rows = [f["chosen"] for f in features] + [f["rejected"] for f in features]
    for row, feature in enumerate(rows):
        ids = torch.tensor([feature["input_ids"]])
        with torch.no_grad():
            log_probs = torch.log_softmax(model(input_ids=ids).logits[0], dim=-1)  # each row alone, no padding
        labelled = [t for t, label in enumerate(feature["labels"]) if label != sft.IGNORE_INDEX]
        assert labelled == list(range(labelled[0], len(feature["input_ids"])))  # the answer: every token after the prompt
        expected = sum(log_probs[t - 1, feature["input_ids"][t]].item() for t in labelled)
        assert ours[row].item() == pytest.approx(expected, abs=1e-4)


def test_switching_the_adapter_off_gives_the_model_without_it_and_switching_back_restores_it(tokenizer, model):
    ids = torch.tensor([tokenizer("Is this review positive or negative?")["input_ids"]])
    with torch.no_grad():
        original = model(input_ids=ids).logits
        adapted = with_random_adapter(model)(input_ids=ids).logits
        with lora.switched_off(model):
            off = model(input_ids=ids).logits
        back = model(input_ids=ids).logits
    assert not torch.allclose(adapted, original, atol=1e-3)
    assert torch.equal(off, original)
    assert torch.equal(back, adapted)


def test_our_pairs_are_the_token_ids_trl_builds(tokenizer, model, tmp_path):
    trainer = trl_trainer(tokenizer, model, copy.deepcopy(model), tmp_path)
    for pair, theirs in zip(PAIRS, trainer.train_dataset):
        ours = preference.preference_features(tokenizer, pair, 128)
        for side in ("chosen", "rejected"):
            assert ours[side]["input_ids"] == theirs["prompt_ids"] + theirs[f"{side}_ids"]
            assert [label != sft.IGNORE_INDEX for label in ours[side]["labels"]] == [False] * len(theirs["prompt_ids"]) + [True] * len(
                theirs[f"{side}_ids"]
            )


def policy_reference_and_batch(tokenizer, model):
    """A policy (the toy model with a random adapter), its reference (a separate copy without one) and a batch of PAIRS."""
    # answer log-probabilities of a realistic size (tens of nats): sums near -100 differ in float32 by the
    # summation order alone, more than the 1e-5 these comparisons hold both sides to
    torch.nn.init.normal_(model.model.embed_tokens.weight, std=0.05)
    reference = copy.deepcopy(model)
    policy = with_random_adapter(model)
    batch = preference.pair_batch([preference.preference_features(tokenizer, pair, 128) for pair in PAIRS], tokenizer.pad_token_id)
    return policy, reference, batch


def trl_trainer(tokenizer, policy, reference, tmp_path, **losses):
    """TRL 1.16's ``DPOTrainer`` on PAIRS, with ``reference`` as its separate reference model."""
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    args = trl.DPOConfig(output_dir=str(tmp_path), beta=0.1, report_to="none", bf16=False, max_length=128, disable_dropout=True, **losses)
    rows = datasets.Dataset.from_list(preference.trl_rows(PAIRS))
    return trl.DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=rows, processing_class=tokenizer)


def trl_loss(tokenizer, policy, reference, batch, tmp_path, **losses) -> tuple[float, dict[str, float]]:
    """TRL's loss on ``batch`` and the values it logs."""
    trainer = trl_trainer(tokenizer, policy, reference, tmp_path, **losses)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
              "completion_mask": (batch["labels"] != sft.IGNORE_INDEX).long()}  # fmt: skip
    trainer.model.train()
    with torch.no_grad():
        theirs = trainer._compute_loss(trainer.model, inputs, return_outputs=False).item()
    return theirs, {name: values[-1] for name, values in trainer._metrics["train"].items()}


def test_our_dpo_loss_log_probabilities_and_rewards_equal_trl_s_on_the_same_batch(tokenizer, model, tmp_path):
    policy, reference, batch = policy_reference_and_batch(tokenizer, model)
    with torch.no_grad():
        ours = preference.dpo_terms(policy, batch, beta=0.1)  # the reference: the policy with its adapter off
        logps = preference.answer_logprobs(policy, batch)
    theirs, logged = trl_loss(tokenizer, policy, reference, batch, tmp_path)
    chosen_logps, rejected_logps = logps.chunk(2)
    assert abs(ours.loss.item() - theirs) <= 1e-5
    assert abs(chosen_logps.mean().item() - logged["logps/chosen"]) <= 1e-5
    assert abs(rejected_logps.mean().item() - logged["logps/rejected"]) <= 1e-5
    assert abs(ours.chosen_rewards.mean().item() - logged["rewards/chosen"]) <= 1e-5
    assert abs(ours.rejected_rewards.mean().item() - logged["rewards/rejected"]) <= 1e-5
    summary = preference.reward_summary(ours)
    assert abs(summary["reward margin"] - logged["rewards/margins"]) <= 1e-5
    assert summary["reward accuracy"] == pytest.approx(logged["rewards/accuracies"])
    assert ours.loss.item() != pytest.approx(math.log(2), abs=1e-3)  # the adapter moved the policy: not a trivial comparison


def test_our_rpo_loss_equals_trl_s_sigmoid_plus_sft_loss(tokenizer, model, tmp_path):
    policy, reference, batch = policy_reference_and_batch(tokenizer, model)
    with torch.no_grad():
        plain = preference.dpo_terms(policy, batch, beta=0.1)
        rpo = preference.dpo_terms(policy, batch, beta=0.1, nll_weight=0.5)
    theirs, _ = trl_loss(tokenizer, policy, reference, batch, tmp_path, loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.5])
    assert abs(rpo.loss.item() - theirs) <= 1e-5
    assert rpo.loss.item() - plain.loss.item() > 0.1  # the NLL term is there, and positive
    assert torch.equal(rpo.chosen_rewards, plain.chosen_rewards)  # it changes the loss, not the rewards


def test_on_policy_pairs_keep_only_the_model_s_wrong_answers(tokenizer, model):
    prompts, references = ["Is this review positive or negative?", "Say one."], ["positive", "one"]
    pairs, answers = preference.on_policy_pairs(model, tokenizer, prompts, references, max_new_tokens=3)
    assert len(answers) == 2
    expected = [(p, r, a.text) for p, r, a in zip(prompts, references, answers) if a.text.strip() and a.text.strip() != r]
    assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == expected
    right = preference.on_policy_pairs(model, tokenizer, prompts[:1], [answers[0].text], max_new_tokens=3)[0]
    assert right == []  # the model's own answer as the reference: nothing to prefer
    with pytest.raises(SftbookError, match="one reference per prompt"):
        preference.on_policy_pairs(model, tokenizer, prompts, references[:1])


def test_preference_numbers_are_fresh_disjoint_and_survive_a_json_round_trip():
    tasks = sft.instruction_data()
    parts = preference.preference_numbers(tasks, {"train": 300, "validation": 50, "test": 80})
    assert [len(rows) for rows in parts.values()] == [300, 50, 80]
    seen = {zh for zh, _ in tasks.numeral_test + tasks.numeral_validation} | {zh for prompt, _ in tasks.train for zh in [prompt.rsplit(" ", 1)[-1]]}
    every = [zh for rows in parts.values() for zh, _ in rows]
    assert len(set(every)) == len(every) and not set(every) & seen
    prompts, references = preference.numeral_prompts(parts["test"])
    pairs = [PreferencePair(prompts[0], references[0], "one")]
    stored = preference.NumeralPreferences(
        parts, {"train": [], "validation": [], "test": pairs}, {part: [en for _, en in rows] for part, rows in parts.items()}
    )
    again = preference.NumeralPreferences.from_json(stored.to_json())
    assert again == stored and all(again.exact("test"))


def test_a_short_dpo_run_learns_held_out_preferences_and_leaves_its_reference_alone(tokenizer, model):
    ids = torch.tensor([tokenizer("Is this review positive or negative?")["input_ids"]])
    with torch.no_grad():
        before = model(input_ids=ids).logits
    train = [PreferencePair(f"Translate {zh} into English.", "three hundred twenty one", "negative") for zh in ("三百二十一", "三百", "二十一", "三")]
    held_out = [PreferencePair("Translate 三百二十 into English.", "three hundred twenty one", "negative")]
    config = preference.DPOConfig(steps=30, batch_size=4, learning_rate=1e-2, top_layers=2, r=4)
    result = preference.train_dpo(model, tokenizer, train, config, progress=False)
    after = preference.held_out_rewards(model, tokenizer, held_out, config.beta)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert after["reward accuracy"] == 1.0 and after["reward margin"] > 0 and after["loss"] < math.log(2)
    with torch.no_grad(), lora.switched_off(model):
        assert torch.equal(model(input_ids=ids).logits, before)


@pytest.mark.parametrize(
    "pairs, message",
    [
        ([], "No preference pairs"),
        ([PreferencePair("Is this review positive?", "positive", " positive ")], "same text"),
        ([PreferencePair("Is this review positive?", "", "negative")], "empty answer"),
        ([("Is this review positive?", "positive", "negative")], "PreferencePair"),
    ],
)
def test_bad_pairs_are_one_clear_error(tokenizer, model, pairs, message):
    with pytest.raises(SftbookError, match=message):
        preference.train_dpo(model, tokenizer, pairs, preference.DPOConfig(steps=1), progress=False)
    assert not lora.lora_modules(model)  # refused before anything changed


def test_bad_settings_and_a_mismatched_model_are_one_clear_error(tokenizer, model):
    with pytest.raises(SftbookError, match="beta"):
        preference.DPOConfig(beta=0)
    with pytest.raises(SftbookError, match="nll_weight"):
        preference.DPOConfig(nll_weight=-1)
    with pytest.raises(SftbookError, match="merge"):
        preference.train_dpo(with_random_adapter(model), tokenizer, PAIRS, preference.DPOConfig(steps=1), progress=False)
    small = toy_llama(tokenizer)
    small.resize_token_embeddings(len(tokenizer) - 10)
    with pytest.raises(SftbookError, match="tokenizer"):
        preference.train_dpo(small, tokenizer, PAIRS, preference.DPOConfig(steps=1), progress=False)
    with pytest.raises(SftbookError, match="tokenizer"):
        preference.held_out_rewards(small, tokenizer, PAIRS, beta=0.1)


def test_style_preferences_keep_the_instruction_split_and_drop_pairs_with_nothing_to_learn(tmp_path):
    preferences, instructions = data.style_preferences(), data.instructions()
    for ours, theirs in (
        (preferences.train, instructions.train),
        (preferences.validation, instructions.validation),
        (preferences.test, instructions.test),
    ):
        prompts = {p for p, _ in theirs}
        assert {p for p, _, _ in ours} <= prompts and len(ours) >= len(theirs) - 6  # 6 pairs have chosen = rejected
        assert all(chosen != rejected for _, chosen, rejected in ours)
    assert sum(len(split) for split in (preferences.train, preferences.validation, preferences.test)) < 1075
    for name in (data.INSTRUCTIONS_FILE, data.PREFERENCES_FILE):
        (tmp_path / name).write_bytes((data.data_dir() / name).read_bytes())
    (tmp_path / data.PREFERENCES_FILE).write_text('[{"instruction": "Say hi.", "input": ""}]')
    (tmp_path / data.CHECKSUM_FILE).write_text(
        "".join(f"{sha256_file(tmp_path / n)}  {n}\n" for n in (data.INSTRUCTIONS_FILE, data.PREFERENCES_FILE))
    )
    with pytest.raises(SftbookError, match="git checkout -- data/instruction-data-with-preference.json"):
        data.style_preferences(directory=tmp_path)


def test_the_dpo_and_pair_keys_cover_every_function_their_real_runs_call(tokenizer, model, tmp_path):
    """The cache keys of chapter 9's pairs and DPO adapters hash the code :data:`zoo.PAIRS_CODE` and
    :data:`zoo.DPO_CODE` reach; a traced run of each must call nothing outside it."""
    tasks = sft.instruction_data()  # its numbers are in the pairs' key as data

    def make_pairs():
        numbers = preference.preference_numbers(tasks, {"train": 2, "validation": 1, "test": 1})
        preference.on_policy_pairs(model, tokenizer, *preference.numeral_prompts(numbers["train"]), max_new_tokens=3)

    def train_and_save():
        preference.train_dpo(model, tokenizer, PAIRS, preference.DPOConfig(steps=2, batch_size=2, top_layers=1, r=2), progress=False)
        lora.save_adapter(model, tmp_path / "dpo")

    for run, code, expected in ((make_pairs, zoo.PAIRS_CODE, ("llm", "generate_batch")), (train_and_save, zoo.DPO_CODE, ("preference", "dpo_loss"))):
        called = codegraph.called_definitions(run)
        assert expected in called
        assert called - codegraph.reachable([codegraph.entry_point(entry) for entry in code]) == set()
