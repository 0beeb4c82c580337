"""A first measurement for preference tuning: DPO on the SFT model's own numeral mistakes.

Chapter 8's SmolLM2 with its SFT adapter merged (the reference) writes greedy answers to fresh Chinese numerals
(never trained on, none of the test or validation numbers); each wrong answer becomes a pair — the gold English
words chosen, the model's own answer rejected (on-policy pairs). The first ``--numbers`` numbers give the
training pairs, the rest held-out pairs. ``preference.train_dpo`` then runs with a new LoRA adapter; the
held-out reward accuracy, margin and each side's reward are read every few steps, and the exact match on the
chapter's 50 test numbers and on the held-out numbers before and after. Writes benchmarks/dpo_numerals.json.

    python benchmarks/dpo_numerals.py [--numbers 700] [--held-out 300] [--steps 40] [--learning-rate 5e-4] [--beta 0.1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from sftbook import artifacts, env, llm, lora, preference, sft, translation, zoo

OUT = Path(__file__).with_name("dpo_numerals.json")


def on_policy_pairs(model, tokenizer, numbers: list[tuple[str, str]]) -> list[preference.PreferencePair]:
    """The model's wrong greedy answers to ``numbers``, each paired with the right one."""
    prompts = [sft.NUMERAL_PROMPT.format(zh=zh) for zh, _ in numbers]
    answers = llm.generate_batch(model, tokenizer, prompts, max_new_tokens=24)
    return [
        preference.PreferencePair(prompt, english, answer.text)
        for prompt, (_, english), answer in zip(prompts, numbers, answers)
        if answer.text.strip() and answer.text.strip() != english
    ]


def exact(model, tokenizer, tasks: sft.InstructionData, held_out: list[tuple[str, str]]) -> dict[str, float]:
    return {
        "test numerals exact": sft.numeral_exact_match(model, tokenizer, tasks.numeral_test)["numeral exact match"],
        "held-out numerals exact": sft.numeral_exact_match(model, tokenizer, held_out)["numeral exact match"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--numbers", type=int, default=700)
    parser.add_argument("--held-out", type=int, default=300)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    env.configure_environment()
    env.set_seed(0)
    tasks = sft.instruction_data()
    model, tokenizer = llm.load_smollm2()
    zoo.instruction_tuned_smollm2(model, tokenizer, build=False)
    lora.merge_lora(model)  # the SFT model: DPO's reference
    unseen = {zh for zh, _ in tasks.numeral_test + tasks.numeral_validation}
    drawn = translation.numeral_pairs(args.numbers + args.held_out, seed=10, exclude=tasks.numbers_seen)
    fresh = [(zh, en) for zh, en, _ in drawn if zh not in unseen]
    train_numbers, held_numbers = fresh[: args.numbers], fresh[args.numbers :]
    start = time.perf_counter()
    train_pairs, held_pairs = on_policy_pairs(model, tokenizer, train_numbers), on_policy_pairs(model, tokenizer, held_numbers)
    generation_seconds = time.perf_counter() - start
    print(f"{len(train_pairs)} training pairs from {len(train_numbers)} numbers, {len(held_pairs)} held out from {len(held_numbers)}", flush=True)
    before = exact(model, tokenizer, tasks, held_numbers)
    config = preference.DPOConfig(steps=args.steps, learning_rate=args.learning_rate, beta=args.beta)

    def evaluate(model) -> dict[str, float]:
        return {f"held-out {key}": value for key, value in preference.held_out_rewards(model, tokenizer, held_pairs, config.beta).items()}

    result = preference.train_dpo(model, tokenizer, train_pairs, config, evaluate=evaluate, evaluate_every=max(1, args.steps // 4))
    after = exact(model, tokenizer, tasks, held_numbers)
    print({"SFT": before, "SFT + DPO": after}, flush=True)
    record = {
        **env.run_record(),
        "config": dataclasses.asdict(config),
        "pairs": {"train": len(train_pairs), "held out": len(held_pairs), "examples": [dataclasses.asdict(p) for p in train_pairs[:5]]},
        "generation seconds": generation_seconds,
        "training seconds": result.seconds,
        "history": result.history,
        "SFT": before,
        "SFT + DPO": after,
    }
    artifacts.atomic_write_text(args.out, json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
