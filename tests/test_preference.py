"""DPO written out (preference tuning) on a tiny random Llama with SmolLM2's chat template: the loss against
its definition and against TRL's DPOTrainer on the same batch, the reference as the adapter switched off,
a short run that learns held-out preferences, and the bad inputs."""

import copy
import math

import pytest
import torch
from toys import toy_llama

from sftbook import data, lora, preference, sft
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
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    trainer = trl_trainer(trl, datasets, model, copy.deepcopy(model), tokenizer, tmp_path)
    for pair, theirs in zip(PAIRS, trainer.train_dataset):
        ours = preference.preference_features(tokenizer, pair, 128)
        for side in ("chosen", "rejected"):
            assert ours[side]["input_ids"] == theirs["prompt_ids"] + theirs[f"{side}_ids"]
            assert [label != sft.IGNORE_INDEX for label in ours[side]["labels"]] == [False] * len(theirs["prompt_ids"]) + [True] * len(
                theirs[f"{side}_ids"]
            )


def trl_trainer(trl, datasets, policy, reference, tokenizer, tmp_path, beta=0.1):
    rows = preference.trl_rows(PAIRS)
    args = trl.DPOConfig(output_dir=str(tmp_path), beta=beta, report_to="none", bf16=False, max_length=128, disable_dropout=True)
    return trl.DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=datasets.Dataset.from_list(rows), processing_class=tokenizer)


def test_our_dpo_loss_log_probabilities_and_rewards_equal_trl_s_on_the_same_batch(tokenizer, model, tmp_path):
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    # answer log-probabilities of a realistic size (tens of nats): sums near -100 differ in float32 by the
    # summation order alone, more than the 1e-5 this test holds both to
    torch.nn.init.normal_(model.model.embed_tokens.weight, std=0.05)
    reference = copy.deepcopy(model)
    policy = with_random_adapter(model)
    batch = preference.pair_batch([preference.preference_features(tokenizer, pair, 128) for pair in PAIRS], tokenizer.pad_token_id)
    with torch.no_grad():
        ours = preference.dpo_terms(policy, batch, beta=0.1)  # the reference: the policy with its adapter off
        logps = preference.answer_logprobs(policy, batch)
    trainer = trl_trainer(trl, datasets, policy, reference, tokenizer, tmp_path)  # the reference: a separate copy
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
              "completion_mask": (batch["labels"] != sft.IGNORE_INDEX).long()}  # fmt: skip
    trainer.model.train()
    with torch.no_grad():
        theirs = trainer._compute_loss(trainer.model, inputs, return_outputs=False)
    logged = {name: values[-1] for name, values in trainer._metrics["train"].items()}
    chosen_logps, rejected_logps = logps.chunk(2)
    assert abs(ours.loss.item() - theirs.item()) <= 1e-5
    assert abs(chosen_logps.mean().item() - logged["logps/chosen"]) <= 1e-5
    assert abs(rejected_logps.mean().item() - logged["logps/rejected"]) <= 1e-5
    assert abs(ours.chosen_rewards.mean().item() - logged["rewards/chosen"]) <= 1e-5
    assert abs(ours.rejected_rewards.mean().item() - logged["rewards/rejected"]) <= 1e-5
    summary = preference.reward_summary(ours)
    assert abs(summary["reward margin"] - logged["rewards/margins"]) <= 1e-5
    assert summary["reward accuracy"] == pytest.approx(logged["rewards/accuracies"])
    assert ours.loss.item() != pytest.approx(math.log(2), abs=1e-3)  # the adapter moved the policy: not a trivial comparison


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
