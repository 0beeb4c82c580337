"""Chapter 9's comparisons that its time budget cannot hold: what preference tuning does, against the SFT model
it starts from and against more SFT at the same extra compute. The chapter reads benchmarks/dpo_numerals.json,
with the date and machine of the run.

Every arm starts from chapter 8's SmolLM2 with its SFT adapter merged, and uses the chapter's on-policy pairs
(``zoo.numeral_preferences``: the SFT model's wrong answers to fresh numbers, the gold words chosen):

- **SFT**: the model as it is;
- **SFT + DPO**: plain DPO (``zoo.plain_dpo_config``), the run whose chosen reward falls;
- **SFT + DPO + NLL**: the chapter's recipe (``zoo.numeral_dpo_config``: DPO with the chosen answers' NLL
  added, RPO) — the same cached adapter the chapter trains — and the same at the higher learning rate it was
  chosen against (on the validation pairs and numbers);
- **more SFT**: LoRA SFT on the gold answers of the numbers the training pairs were drawn from, for as many
  steps as cost the DPO run's compute (a DPO step: 2 × batch conversations forward and backward plus the same
  forward for the reference; an SFT step: batch conversations forward and backward);
- **style**: plain DPO on the polite/impolite pairs (``data.style_preferences``), held-out reward accuracy.

Each arm is scored on chapter 8's 50 test numbers and the pairs' validation and test numbers (exact match, teacher-forced),
the held-out pairs' rewards, SST-2 (200 reviews) and chapter 8's 50 held-out general instructions (stops,
ROUGE-L, words, answer loss). The adapters are cached ``zoo`` artifacts; a re-run only scores them.

    python benchmarks/dpo_numerals.py [--out benchmarks/dpo_numerals.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from sftbook import artifacts, data, env, llm, lora, preference, sft, zoo
from sftbook.status import DPO_NUMERALS_RESULTS

GENERAL_TEST = 50  # chapter 8's held-out general instructions: the first of the test split
MAX_NEW_TOKENS = 48  # as in chapter 8
STYLE_STEPS = 40
CANDIDATE_LEARNING_RATE = 5e-4  # the other learning rate the recipe's was chosen against, on the validation pairs


def sft_model():
    """Chapter 8's SmolLM2 with its SFT adapter merged: the reference of every arm."""
    model, tokenizer = llm.load_smollm2()
    zoo.instruction_tuned_smollm2(model, tokenizer, build=False)
    lora.merge_lora(model)
    return model, tokenizer


def scores(model, tokenizer, tasks: sft.InstructionData, preferences: preference.NumeralPreferences, beta: float) -> dict:
    reviews = [sft.SENTIMENT_PROMPT.format(text=t) for t, _ in tasks.sentiment_test]
    labels = np.array([y for _, y in tasks.sentiment_test])
    sst = sft.sentiment_labels(llm.first_token_scores(model, tokenizer, reviews, sft.SCORED_WORDS)) == labels
    numerals = {
        "test numerals": sft.teacher_forced_exact(model, tokenizer, [(sft.NUMERAL_PROMPT.format(zh=zh), en) for zh, en in tasks.numeral_test]),
        "pair test numerals": sft.teacher_forced_exact(model, tokenizer, list(zip(*preference.numeral_prompts(preferences.numbers["test"])))),
        "validation numerals": sft.teacher_forced_exact(model, tokenizer, list(zip(*preference.numeral_prompts(preferences.numbers["validation"])))),
    }
    general, answers = sft.general_scores(model, tokenizer, data.instructions().test[:GENERAL_TEST], MAX_NEW_TOKENS)
    held_out = preference.held_out_rewards(model, tokenizer, preferences.pairs["test"], beta) if lora.lora_modules(model) else None
    return {
        **{name: float(np.mean(right)) for name, right in numerals.items()},
        **{f"{name} n": len(right) for name, right in numerals.items()},
        "SST-2 accuracy": float(sst.mean()),
        "SST-2 n": len(sst),
        "general": general,
        "general answers": [a.text for a in answers[:8]],
        "held-out rewards": held_out,
    }


def more_sft_steps(config: preference.DPOConfig, sft_batch: int) -> int:
    """SFT steps that cost what ``config``'s DPO run costs: per conversation, forward + backward is taken as
    three forwards, so a DPO step is 2 × batch × (3 + 1) forward-equivalents and an SFT step batch × 3."""
    return round(config.steps * 2 * config.batch_size * 4 / (sft_batch * 3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DPO_NUMERALS_RESULTS)
    args = parser.parse_args()
    env.configure_environment()
    env.set_seed(0)
    tasks = sft.instruction_data()
    model, tokenizer = sft_model()
    preferences = zoo.numeral_preferences(model, tokenizer)
    recipe, plain = zoo.numeral_dpo_config(), zoo.plain_dpo_config()
    arms = {"SFT": {"scores": scores(model, tokenizer, tasks, preferences, recipe.beta)}}
    print("SFT", {k: v for k, v in arms["SFT"]["scores"].items() if "numerals" in k}, flush=True)
    candidate = dataclasses.replace(recipe, learning_rate=CANDIDATE_LEARNING_RATE)
    for name, config in (("SFT + DPO", plain), ("SFT + DPO + NLL", recipe), ("SFT + DPO + NLL, higher learning rate", candidate)):
        model, tokenizer = sft_model()
        result = zoo.numeral_dpo(model, tokenizer, preferences, config)
        arms[name] = {"config": dataclasses.asdict(config), "seconds": result.seconds, "history": result.history,
                      "scores": scores(model, tokenizer, tasks, preferences, config.beta)}  # fmt: skip
        print(name, {k: v for k, v in arms[name]["scores"].items() if "numerals" in k}, flush=True)
    sft_config = dataclasses.replace(sft.SFTConfig(), steps=more_sft_steps(recipe, sft.SFTConfig().batch_size))
    model, tokenizer = sft_model()
    gold = list(zip(*preference.numeral_prompts(preferences.numbers["train"])))
    result = zoo.sft_adapter("smollm2-more-numerals", model, tokenizer, gold, sft_config, chapter="benchmarks/dpo_numerals.py")
    arms["more SFT"] = {"config": dataclasses.asdict(sft_config), "seconds": result.seconds, "history": result.history,
                        "scores": scores(model, tokenizer, tasks, preferences, recipe.beta)}  # fmt: skip
    print("more SFT", {k: v for k, v in arms["more SFT"]["scores"].items() if "numerals" in k}, flush=True)
    model, tokenizer = sft_model()
    style = data.style_preferences()
    style_pairs = {part: [preference.PreferencePair(*row) for row in rows] for part, rows in (("train", style.train), ("test", style.test))}
    style_config = dataclasses.replace(plain, steps=STYLE_STEPS, max_length=256)
    result = zoo.preference_tuned("smollm2-style", model, tokenizer, style_pairs["train"], style_config)
    held_out = preference.held_out_rewards(model, tokenizer, style_pairs["test"], style_config.beta, max_length=256)
    examples = llm.generate_batch(model, tokenizer, [p.prompt for p in style_pairs["test"][:6]], MAX_NEW_TOKENS)
    with lora.switched_off(model):
        before = llm.generate_batch(model, tokenizer, [p.prompt for p in style_pairs["test"][:6]], MAX_NEW_TOKENS)
    style_record = {
        "config": dataclasses.asdict(style_config), "seconds": result.seconds, "history": result.history, "pairs": len(style_pairs["train"]),
        "held-out pairs": len(style_pairs["test"]), "held-out rewards": held_out,
        "examples": [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected, "SFT": b.text, "SFT + DPO": a.text}
                     for p, b, a in zip(style_pairs["test"], before, examples)],
    }  # fmt: skip
    print("style", held_out, flush=True)
    record = {
        **env.run_record(),
        "pairs": {part: len(rows) for part, rows in preferences.pairs.items()},
        "numbers": {part: len(rows) for part, rows in preferences.numbers.items()},
        "general test": GENERAL_TEST,
        "arms": arms,
        "style": style_record,
    }
    artifacts.atomic_write_text(args.out, json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
