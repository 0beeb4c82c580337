"""Toy data and models shared by the unit tests (a helper module, not a test module)."""

from __future__ import annotations

import ast

import datasets
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

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


# SmolLM2-135M-Instruct's chat template, as its GGUF file stores it (tests need no model download)
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CHAT_TEXTS = ["Translate 三百二十一 into English.", "three hundred twenty one", "Is this review positive or negative?", "positive", "negative"]


def toy_chat_tokenizer():
    """A byte-level BPE tokenizer with SmolLM2's special tokens and chat template, trained in a second."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(
        CHAT_TEXTS * 5 + ["You are a helpful AI assistant named SmolLM, trained by Hugging Face", "system user assistant"], trainer
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>", unk_token="<|endoftext|>"
    )
    wrapped.chat_template = SMOLLM2_CHAT_TEMPLATE
    return wrapped


def toy_llama(tokenizer, layers: int = 2):
    """A randomly initialised Llama of SmolLM2's shape family, small enough for a unit test."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    model = LlamaForCausalLM(config)
    # embeddings (tied to the output layer) of unit scale: with the default 0.02 a frozen head caps every
    # logit near zero and no LoRA update can make the toy model confident
    torch.nn.init.normal_(model.model.embed_tokens.weight, std=1.0)
    return model.eval()


def reworded(source: str) -> str:
    """``source`` with every docstring replaced, a comment added after every line that opens a block, and
    the chapter numbers in comments changed: what a docstring- or comment-only edit looks like."""
    lines = source.splitlines()
    docstrings = [
        node.body[0]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
        and isinstance(node.body[0].value.value, str)
    ]
    for doc in sorted(docstrings, key=lambda d: d.lineno, reverse=True):
        indent = lines[doc.lineno - 1][: doc.col_offset]
        lines[doc.lineno - 1 : doc.end_lineno] = [f'{indent}"""Reworded (chapter 99)."""']
    out = []
    for line in lines:
        out.append(line)
        stripped = line.strip()
        if stripped.startswith(("def ", "class ")) and stripped.endswith(":"):
            out.append(" " * (len(line) - len(line.lstrip()) + 4) + "# an added comment")
    return "\n".join(out) + "\n"
