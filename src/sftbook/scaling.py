"""A scaling study at CPU scale (chapter 11): model width × pretraining steps, cached as JSON."""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

from sftbook import artifacts, batching, data, evaluation, finetuning, modeling, pretraining, tokenization, zoo
from sftbook.env import at_scale, cache_root
from sftbook.errors import SftbookError
from sftbook.landmarks import training_flops


def non_embedding_parameters(model) -> int:
    """Parameters outside the token/position/type embeddings and the MLM output bias — Kaplan et al.'s N."""
    return sum(p.numel() for name, p in model.named_parameters() if "embeddings" not in name and not name.endswith("predictions.bias"))


def mlm_training_flops(model, tokens: float, mlm_probability: float) -> float:
    """Training FLOPs of masked-LM pretraining of a ``BertForMaskedLM`` over ``tokens`` tokens.

    ``6·N·D`` for the encoder with Kaplan et al.'s ``N`` (embedding lookups do no multiply-adds), plus
    ``6·(head weights)·(masked tokens)`` for the prediction head — its transform and the projection onto
    the vocabulary, whose matrix is tied to the embeddings — which the sparse head (chapter 3) runs at the
    masked positions only, ``mlm_probability`` of the tokens. For a small model with a large vocabulary
    the projection is a large share of the arithmetic, which ``6·N·D`` alone leaves out.
    """
    head = model.cls.predictions
    head_weights = sum(p.numel() for p in head.transform.parameters()) + head.decoder.weight.numel()
    encoder_weights = sum(p.numel() for name, p in model.bert.named_parameters() if "embeddings" not in name)
    return training_flops(encoder_weights, tokens) + training_flops(head_weights, mlm_probability * tokens)


def scaling_study(
    sizes: tuple[str, ...] = ("nano", "micro", "tiny"),
    checkpoints: tuple[int, ...] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Pretrain each size for ``max(checkpoints)`` steps; at each checkpoint measure the held-out MLM loss
    and SST-2 linear-probe accuracy; fine-tune every final model on SST-2. Cached as JSON.

    ``checkpoints`` defaults to steps 0, 250, 1,000 and 2,000 (0, 50 and 100 at the reduced scale).
    Every size shares one WordPiece vocabulary and the chapter-3 recipe (:class:`PretrainConfig`), so
    only the width and the number of steps change. Read at the smallest model's final compute, a wider
    model's curve is mid-schedule (its learning rate still high) and interpolated, not a fair comparison;
    so each wider size is also pretrained on a schedule of its own that ends at that budget (warm-up and
    decay to zero included). Returns ``{"rows": [...], "finetuned": [...], "equal_compute": [...]}``.
    """
    checkpoints = checkpoints or at_scale((0, 250, 1000, 2000), (0, 50, 100))
    if min(checkpoints) < 0:
        raise SftbookError(f"checkpoints must be non-negative step counts, got {checkpoints}.")
    steps = max(checkpoints)
    configs = {size: pretraining.PretrainConfig(size=size, steps=max(steps, 1), seed=seed, eval_every=max(steps, 1)) for size in sizes}
    recipe = zoo.finetune_config("tiny", seed=seed)
    settings = [sorted(checkpoints), {k: asdict(v) for k, v in configs.items()}, asdict(recipe), data.expected_checksums()]
    code = (scaling_study,)  # and all it reaches: pretraining, probing, fine-tuning, counting FLOPs
    cached = cache_root() / f"scaling-study-{artifacts.cache_key(settings, code)}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    print(f"No cached scaling study: running it now ({len(sizes)} sizes × {steps:,} steps).")

    corpus = pretraining.build_corpus()
    tokenizer = tokenization.train_wordpiece(corpus.train, vocab_size=configs[sizes[0]].vocab_size)
    heldout = batching.encode_texts(tokenizer, corpus.heldout, configs[sizes[0]].max_length)
    sst2 = data.load("sst2")
    rows, finetuned, equal_compute = [], [], []
    with tempfile.TemporaryDirectory() as scratch:
        for size, config in configs.items():
            run_dir = Path(scratch) / size
            for step in sorted(set(checkpoints)):
                result = pretraining.pretrain(config, run_dir, corpus=corpus, tokenizer=tokenizer, stop_after=step, progress=progress)
                non_embedding = non_embedding_parameters(result.model)
                rows.append(
                    {
                        "size": size,
                        "hidden": result.model.config.hidden_size,
                        "parameters": sum(p.numel() for p in result.model.parameters()),
                        "non_embedding_parameters": non_embedding,
                        "step": step,
                        "tokens": result.tokens_processed,
                        "flops": mlm_training_flops(result.model, result.tokens_processed, config.mlm_probability) if step else 0.0,
                        "heldout_loss": pretraining.evaluate_mlm(result.model, heldout, result.tokenizer),
                        "probe_accuracy": evaluation.linear_probe(result.model.bert, result.tokenizer, sst2, config.max_length)["accuracy"],
                        "seconds": result.seconds,
                    }
                )
            names = sst2["train"].features["label"].names
            classifier = modeling.TextClassifier(result.model.bert, len(names), "mean", label_names=names, seed=seed)
            tuned = finetuning.fine_tune(classifier, result.tokenizer, sst2, recipe, progress=progress)
            finetuned.append(
                {"size": size, "step": steps, **evaluation.evaluate(tuned.model, result.tokenizer, sst2["test"]), "seconds": tuned.seconds}
            )
        final = {row["size"]: row for row in rows if row["step"] == steps}
        for size, config in configs.items() if steps else ():
            # the same batches, fewer of them: a schedule that warms up and decays to zero within the budget
            budget_steps = max(1, round(steps * final[sizes[0]]["flops"] / final[size]["flops"]))
            if budget_steps == steps:  # the smallest model's own run already ends at the budget
                equal_compute.append({"size": size, "steps": steps, "flops": final[size]["flops"], "heldout_loss": final[size]["heldout_loss"]})
                continue
            budget_config = replace(config, steps=budget_steps, eval_every=budget_steps)
            result = pretraining.pretrain(budget_config, Path(scratch) / f"{size}-budget", corpus=corpus, tokenizer=tokenizer, progress=progress)
            equal_compute.append(
                {
                    "size": size,
                    "steps": budget_steps,
                    "flops": mlm_training_flops(result.model, result.tokens_processed, config.mlm_probability),
                    "heldout_loss": pretraining.evaluate_mlm(result.model, heldout, result.tokenizer),
                }
            )
    study = {"rows": rows, "finetuned": finetuned, "equal_compute": equal_compute}
    artifacts.atomic_write_text(cached, json.dumps(study, indent=1))
    return study
