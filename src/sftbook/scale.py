"""What "large" means: landmark models' sizes and training data (chapter 1), compute (chapters 3 and 9),
and a scaling study at CPU scale (chapter 9).

Every figure comes from the paper cited by its ``citation`` key in ``book/references.bib``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LandmarkModel:
    name: str
    year: int
    parameters: float
    training_tokens: float  # tokens processed during pretraining (steps × batch × sequence)
    citation: str
    note: str = ""


LANDMARK_MODELS: tuple[LandmarkModel, ...] = (
    LandmarkModel("BERT-base", 2019, 110e6, 1.28e11, "devlin2019bert", "1M steps × 256 × 512 tokens"),
    LandmarkModel("BERT-large", 2019, 340e6, 1.28e11, "devlin2019bert", "1M steps × 256 × 512 tokens"),
    LandmarkModel("RoBERTa-large", 2019, 355e6, 2.1e12, "liu2019roberta", "500K steps × 8K × 512 tokens"),
    LandmarkModel("T5-11B", 2020, 11e9, 1.0e12, "raffel2020t5", "~1T tokens of C4"),
    LandmarkModel("GPT-3", 2020, 175e9, 3.0e11, "brown2020gpt3", "300B tokens"),
    LandmarkModel("Chinchilla", 2022, 70e9, 1.4e12, "hoffmann2022chinchilla", "1.4T tokens"),
    LandmarkModel("LLaMA-65B", 2023, 65e9, 1.4e12, "touvron2023llama", "1.4T tokens"),
    LandmarkModel("Llama 3 405B", 2024, 405e9, 1.56e13, "grattafiori2024llama3", "15.6T tokens"),
)


def training_flops(parameters: float, tokens: float) -> float:
    """Approximate training compute, ``6·N·D`` FLOPs (Kaplan et al., 2020): 2 forward + 4 backward per
    parameter per token."""
    if parameters <= 0 or tokens <= 0:
        raise ValueError("parameters and tokens must be positive.")
    return 6.0 * parameters * tokens


# ----------------------------------------------------------------------------- chapter 9: a scaling study

def non_embedding_parameters(model) -> int:
    """Parameters outside the token/position/type embeddings and the MLM output bias — Kaplan et al.'s N."""
    return sum(p.numel() for name, p in model.named_parameters() if "embeddings" not in name and not name.endswith("predictions.bias"))


def scaling_study(
    sizes: tuple[str, ...] = ("nano", "micro", "tiny"),
    checkpoints: tuple[int, ...] = (0, 250, 1000, 2000),
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Pretrain each size for ``max(checkpoints)`` steps; at each checkpoint measure the held-out MLM loss
    and SST-2 linear-probe accuracy; fine-tune every final model on SST-2. Cached as JSON.

    Every size shares one WordPiece vocabulary and the chapter-3 recipe (:class:`PretrainConfig`), so
    only the width and the number of steps change. Returns ``{"rows": [...], "finetuned": [...]}``.
    """
    import hashlib
    import inspect
    import json
    import tempfile
    from dataclasses import asdict
    from pathlib import Path

    from sftbook import data, evaluation, modeling, pretraining, training
    from sftbook.env import cache_root

    if not checkpoints or min(checkpoints) < 0:
        raise ValueError("checkpoints must be non-negative step counts, at least one.")
    steps = max(checkpoints)
    configs = {size: pretraining.PretrainConfig(size=size, steps=max(steps, 1), seed=seed, eval_every=max(steps, 1)) for size in sizes}
    digest = hashlib.sha256(json.dumps([sorted(checkpoints), {k: asdict(v) for k, v in configs.items()}], sort_keys=True).encode())
    digest.update(json.dumps(data.expected_checksums(), sort_keys=True).encode())
    for module in (pretraining, training, evaluation, modeling, inspect.getmodule(scaling_study)):
        digest.update(inspect.getsource(module).encode())
    cached = cache_root() / f"scaling-study-{digest.hexdigest()[:12]}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    print(f"No cached scaling study at {cached}: running it now ({len(sizes)} sizes × {steps:,} steps).")

    corpus = pretraining.build_corpus()
    tokenizer = pretraining.train_wordpiece(corpus.train, vocab_size=configs[sizes[0]].vocab_size)
    heldout = pretraining._encode(tokenizer, corpus.heldout, configs[sizes[0]].max_length)
    sst2 = data.load("sst2")
    rows, finetuned = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for size, config in configs.items():
            run_dir = Path(scratch) / size
            for step in sorted(set(checkpoints)):
                result = pretraining.pretrain(config, run_dir, corpus=corpus, tokenizer=tokenizer, stop_after=step, progress=progress)
                encoder = result.model.bert
                parameters = sum(p.numel() for p in result.model.parameters())
                non_embedding = non_embedding_parameters(result.model)
                probe = evaluation.linear_probe(encoder, result.tokenizer, sst2, config.max_length)
                rows.append({
                    "size": size,
                    "hidden": result.model.config.hidden_size,
                    "parameters": parameters,
                    "non_embedding_parameters": non_embedding,
                    "step": step,
                    "tokens": result.tokens_processed,
                    # Kaplan et al.'s N: embedding lookups do no multiply-adds, and the sparse MLM head
                    # (chapter 3) multiplies by the vocabulary at masked positions only
                    "flops": training_flops(non_embedding, result.tokens_processed) if step else 0.0,
                    "heldout_loss": pretraining.evaluate_mlm(result.model, heldout, result.tokenizer),
                    "probe_accuracy": probe["accuracy"],
                    "seconds": result.seconds,
                })
            names = sst2["train"].features["label"].names
            classifier = modeling.TextClassifier(result.model.bert, len(names), "mean", label_names=names, seed=seed)
            tuned = training.fine_tune(classifier, result.tokenizer, sst2, training.FineTuneConfig(**training.FINETUNE_DEFAULTS["tiny"], seed=seed), progress=progress)
            finetuned.append({"size": size, "step": steps, **evaluation.evaluate(tuned.model, result.tokenizer, sst2["test"]), "seconds": tuned.seconds})
    study = {"rows": rows, "finetuned": finetuned}
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp")
    tmp.write_text(json.dumps(study, indent=1))
    tmp.replace(cached)
    return study
