"""Toy data and models shared by the unit tests (a helper module, not a test module)."""

from __future__ import annotations

import datasets
import torch
from transformers import BertConfig, BertModel

from sftbook.tokenization import train_wordpiece

GOOD = ["a good film", "a great movie", "good acting and a great plot", "great fun"]
BAD = ["a bad film", "a dull movie", "bad acting and a dull plot", "dull stuff"]


def toy_tokenizer():
    """A WordPiece vocabulary trained on the toy sentences (vocabulary ids may vary; the tests use none)."""
    return train_wordpiece((GOOD + BAD) * 3, vocab_size=80)


def toy_encoder(tokenizer, pooler=False):
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, max_position_embeddings=32
    )
    return BertModel(config, add_pooling_layer=pooler)


def toy_dataset(n=8):
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["negative", "positive"])})
    texts = (BAD + GOOD) * (n // 8 or 1)
    labels = ([0] * len(BAD) + [1] * len(GOOD)) * (n // 8 or 1)
    split = datasets.Dataset.from_dict({"text": texts, "label": labels}, features=features)
    return datasets.DatasetDict({"train": split, "validation": split, "test": split})
