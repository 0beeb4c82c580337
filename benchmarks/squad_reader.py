"""Chapter 10's reader, trained and measured on SQuAD's held-out articles; the chapter reads
benchmarks/squad_reader.json, with the date and machine of the run.

- **Training**: ``zoo.squad_reader`` — SmolLM2-135M-Instruct, LoRA SFT on SQuAD training questions with their
  paragraph among retrieved distractors (a cached ``zoo`` artifact: the first run trains it, a re-run only scores).
- **Test** (every question of the test articles, never trained on): the zero-shot reader (SmolLM2 as released),
  the span-only baseline (``reading.extractive_answer``: the zero-shot model may only point into the paragraph)
  and the fine-tuned reader, each given the question's own paragraph; and the fine-tuned reader given that
  paragraph among two distractors, as a retriever hands it over. Every answer is stored.
- **Routing** (validation questions): does telling the reader the answer type that chapter 10's TREC classifier
  predicts (a number, a person, a place) help either reader?

    python benchmarks/squad_reader.py [--out benchmarks/squad_reader.json]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import random
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from sftbook import artifacts, data, env, evaluation, llm, reading, retrieval, zoo
from sftbook.status import SQUAD_READER_RESULTS

MAX_NEW_TOKENS = 24  # SQuAD answers are a few words
ROUTING_QUESTIONS = 150  # validation questions for the routing measurement
TYPE_HINTS = {"NUM": "The answer is a number or a date.", "HUM": "The answer is a person or a group.", "LOC": "The answer is a place."}


def generated(model, tokenizer, prompts: list[str]) -> tuple[list[str], float]:
    start = time.perf_counter()
    answers = llm.generate_batch(model, tokenizer, prompts, MAX_NEW_TOKENS)
    return [answer.text for answer in answers], time.perf_counter() - start


def extracted(model, tokenizer, questions: list[data.SquadQuestion]) -> tuple[list[str], float]:
    start = time.perf_counter()
    answers = [reading.extractive_answer(model, tokenizer, q.question, [q.context], MAX_NEW_TOKENS) for q in tqdm(questions, "span-only reader")]
    return answers, time.perf_counter() - start


def question_types(questions: list[data.SquadQuestion]) -> list[str]:
    classifier, tokenizer, _ = zoo.finetuned_classifier("minilm", "trec")
    names = data.load("trec")["train"].features["label"].names
    predicted = evaluation.predict_logits(classifier, tokenizer, [q.question for q in questions]).argmax(-1).tolist()
    return [names[i] for i in predicted]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=SQUAD_READER_RESULTS)
    args = parser.parse_args()
    env.configure_environment()
    env.set_seed(0)
    splits = data.squad()
    base, tokenizer = llm.load_smollm2()
    reader = copy.deepcopy(base)
    training = zoo.squad_reader(reader, tokenizer)
    bf16 = env.bf16_pays_off(base.device)
    precision = torch.autocast(base.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    test = splits.test
    paragraphs = reading.article_paragraphs(test)
    gold_prompts = [retrieval.question_prompt(q.question, [q.context]) for q in test]
    noisy_prompts = [retrieval.question_prompt(q.question, reading.reader_passages(q, paragraphs[q.title], 2, seed=1)) for q in test]
    runs, seconds = {}, {}
    with precision:
        runs["zero-shot"], seconds["zero-shot"] = generated(base, tokenizer, gold_prompts)
        runs["span-only"], seconds["span-only"] = extracted(base, tokenizer, test)
        runs["fine-tuned"], seconds["fine-tuned"] = generated(reader, tokenizer, gold_prompts)
        runs["fine-tuned, 2 distractors"], seconds["fine-tuned, 2 distractors"] = generated(reader, tokenizer, noisy_prompts)
        references = [q.answers for q in test]
        for name, answers in runs.items():
            print(
                name,
                {key: round(value, 1) for key, value in reading.score_summary(answers, references).items()},
                f"{seconds[name]:.0f} s",
                flush=True,
            )

        routed_questions = random.Random(1).sample(splits.validation, ROUTING_QUESTIONS)
        types = question_types(routed_questions)
        plain = [retrieval.question_prompt(q.question, [q.context]) for q in routed_questions]
        hinted = [f"{prompt}\n{TYPE_HINTS[kind]}" if kind in TYPE_HINTS else prompt for prompt, kind in zip(plain, types)]
        routing = {
            name: {"plain": generated(model, tokenizer, plain)[0], "routed": generated(model, tokenizer, hinted)[0]}
            for name, model in (("zero-shot", base), ("fine-tuned", reader))
        }
    record = {
        **env.run_record(),
        "precision": "bf16 autocast" if bf16 else "float32",
        "config": dataclasses.asdict(zoo.reader_sft_config()),
        "training": {"history": training.history, "seconds": training.seconds, "trainable parameters": training.trainable_parameters},
        "validation questions": [q.id for q in zoo.reader_validation()],
        "test questions": [q.id for q in test],
        "test passages, 2 distractors": noisy_prompts,
        "max new tokens": MAX_NEW_TOKENS,
        "test answers": runs,
        "test seconds": seconds,
        "routing": {"questions": [q.id for q in routed_questions], "types": types, "hints": TYPE_HINTS, "answers": routing},
    }
    artifacts.atomic_write_text(args.out, json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
