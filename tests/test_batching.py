import pytest
import torch

from sftbook import batching
from sftbook.errors import SftbookError


def test_length_grouped_batches_cover_every_index_once_and_group_lengths():
    lengths = [int(x) for x in torch.randint(1, 60, (1000,), generator=torch.Generator().manual_seed(0))]
    batches = batching.length_grouped_batches(lengths, 16, torch.Generator().manual_seed(1))
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(1000))
    assert all(1 <= len(b) <= 16 for b in batches)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    random_batches = [list(range(s, min(s + 16, 1000))) for s in range(0, 1000, 16)]
    padded_random = sum(len(b) * max(lengths[i] for i in b) for b in random_batches)
    assert padded < 0.75 * padded_random  # grouping saves most of the padding


def test_length_grouped_batches_depend_only_on_the_generator():
    lengths = list(range(100))
    first = batching.length_grouped_batches(lengths, 8, torch.Generator().manual_seed(3))
    second = batching.length_grouped_batches(lengths, 8, torch.Generator().manual_seed(3))
    other = batching.length_grouped_batches(lengths, 8, torch.Generator().manual_seed(4))
    assert first == second and first != other
    with pytest.raises(SftbookError):
        batching.length_grouped_batches(lengths, 0, torch.Generator())


def test_pad_batch_pads_on_the_right_and_labels_padding_with_the_ignore_index():
    batch = batching.pad_batch([[5, 6, 7], [8]], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert "labels" not in batch
    labelled = batching.pad_batch([[5, 6, 7], [8]], pad_id=0, labels=[[-100, 6, 7], [8]])
    assert labelled["labels"].tolist() == [[-100, 6, 7], [8, batching.IGNORE_INDEX, batching.IGNORE_INDEX]]
    with pytest.raises(SftbookError, match="empty batch"):
        batching.pad_batch([], 0)
    with pytest.raises(SftbookError, match="labels of its own length"):
        batching.pad_batch([[5, 6, 7], [8]], 0, labels=[[5, 6], [8]])


def test_epoch_batches_differ_by_epoch_and_seed_and_repeat_exactly():
    lengths = [3, 9, 4, 7, 1, 8, 2, 6] * 10
    first = batching.epoch_batches(lengths, 8, seed=0, epoch=0)
    assert first == batching.epoch_batches(lengths, 8, seed=0, epoch=0)
    assert first != batching.epoch_batches(lengths, 8, seed=0, epoch=1)
    assert first != batching.epoch_batches(lengths, 8, seed=1, epoch=0)
    sampler = batching.LengthGroupedBatchSampler(lengths, 8, seed=0)
    sampler.set_epoch(1)
    assert list(sampler) == batching.epoch_batches(lengths, 8, seed=0, epoch=1) and len(sampler) == 10


def test_encode_texts_truncates_and_refuses_blank_texts():
    from toys import toy_tokenizer

    tokenizer = toy_tokenizer()
    ids = batching.encode_texts(tokenizer, ["a good film " * 20, "dull"], max_length=6)
    assert [len(row) for row in ids] == [6, 3]
    with pytest.raises(SftbookError, match="Text #1 is empty"):
        batching.encode_texts(tokenizer, ["fine", "   "], 8)
    assert batching.by_length(ids) == [1, 0]
