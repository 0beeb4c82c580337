"""Fine-tunes a toy classifier with sftbook.finetuning.fine_tune; run by test_distributed.py, once alone
and once under `torchrun --nproc_per_node=2` (CPU, gloo). Writes what it ended with to a JSON file."""

import json
import sys
from pathlib import Path

import datasets
import torch
from accelerate import Accelerator, DataLoaderConfiguration
from transformers import BertConfig, BertModel, BertTokenizer

from sftbook import finetuning, modeling

out_dir = Path(sys.argv[1])
good = ["a good film", "a great movie", "good acting and a great plot", "great fun"]
bad = ["a bad film", "a dull movie", "bad acting and a dull plot", "dull stuff"]
# A fixed word vocabulary, not a trained one: WordPiece training breaks frequency ties in hash order,
# which gave every run a slightly different toy problem.
words = sorted({word for sentence in good + bad for word in sentence.split()})
tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])})
features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])})
split = datasets.Dataset.from_dict({"text": (bad + good) * 2, "label": ([0] * 4 + [1] * 4) * 2}, features=features)
dataset = datasets.DatasetDict({"train": split, "validation": split})

torch.manual_seed(0)
config = BertConfig(
    vocab_size=len(tokenizer),
    hidden_size=16,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=32,
    max_position_embeddings=32,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)
model = modeling.TextClassifier(BertModel(config, add_pooling_layer=False), 2, "mean", dropout=0.0)
# split_batches: each global batch of 8 is cut into one slice per process, so two processes see
# exactly the batches one process sees, and the averaged gradient is the same.
# float32: bf16 autocast rounds differently for a slice of a batch than for the whole batch
accelerator = Accelerator(cpu=True, dataloader_config=DataLoaderConfiguration(split_batches=True))
result = finetuning.fine_tune(
    model,
    tokenizer,
    dataset,
    finetuning.FineTuneConfig(epochs=1, batch_size=8, learning_rate=1e-2, precision="fp32"),
    progress=False,
    accelerator=accelerator,
)
parameters = torch.cat([p.detach().flatten() for p in result.model.parameters()])
record = {
    "world_size": accelerator.num_processes,
    "rank": accelerator.process_index,
    "train_loss": result.history[0]["train_loss"],
    "parameters": parameters.tolist(),
}
(out_dir / f"rank{accelerator.process_index}-of-{accelerator.num_processes}.json").write_text(json.dumps(record))
