"""Chapter 10's translation toy: the labels are exactly right, and the encoder–decoder really learns."""

import pytest
import torch

from sftbook import translation as T
from sftbook.errors import HubUnavailableError, SftbookError


@pytest.mark.parametrize(
    "n, chinese, english",
    [
        (0, "零", "zero"),
        (10, "十", "ten"),
        (15, "十五", "fifteen"),
        (101, "一百零一", "one hundred one"),
        (110, "一百一十", "one hundred ten"),
        (1005, "一千零五", "one thousand five"),
        (1050, "一千零五十", "one thousand fifty"),
        (10010, "一万零一十", "ten thousand ten"),
        (100500, "十万零五百", "one hundred thousand five hundred"),
        (120003, "十二万零三", "one hundred twenty thousand three"),
        (999999, "九十九万九千九百九十九", "nine hundred ninety nine thousand nine hundred ninety nine"),
    ],
)
def test_numerals_in_both_languages(n, chinese, english):
    assert T.chinese_numeral(n) == chinese
    assert T.english_words(n) == english


def chinese_to_int(text: str) -> int:
    """An independent reader of Chinese numerals, to check the writer on many numbers."""
    digits = {c: i for i, c in enumerate(T.DIGITS)}
    total, section, number = 0, 0, 0
    for char in text:
        if char in digits:
            number = digits[char]
        elif char == "万":
            total += (section + number) * 10_000
            section = number = 0
        else:
            section += (number or 1) * {"十": 10, "百": 100, "千": 1000}[char]
            number = 0
    return total + section + number


def test_chinese_numerals_read_back_for_every_thousandth_number():
    for n in list(range(1000)) + list(range(0, T.LIMIT, 997)):
        assert chinese_to_int(T.chinese_numeral(n)) == n


def test_pairs_are_distinct_seeded_and_respect_exclusions():
    a, b = T.numeral_pairs(300, seed=3), T.numeral_pairs(300, seed=3)
    assert a == b and len({n for _, _, n in a}) == 300
    excluded = {n for _, _, n in a}
    assert not excluded & {n for _, _, n in T.numeral_pairs(300, seed=4, exclude=excluded)}


@pytest.mark.parametrize("bad", [-1, T.LIMIT, 2.5])
def test_out_of_range_numbers_are_refused(bad):
    with pytest.raises(SftbookError, match="0 ≤ n < 1,000,000"):
        T.chinese_numeral(bad)


def test_teacher_forcing_shifts_the_target_by_one():
    source, target_in, target_out = T.make_batch([("十一", "eleven", 11), ("一百零一", "one hundred one", 101)])
    assert source.shape == (2, 4) and target_in.shape == target_out.shape == (2, 4)
    assert target_in[:, 0].tolist() == [1, 1]  # <s>
    assert target_in[1, 1:].tolist() == target_out[1, :-1].tolist()
    assert target_out[0].tolist()[:2] == [T.TARGET_VOCAB.index["eleven"], 2]  # word, </s>, then padding


def test_decoder_is_causal_a_later_word_does_not_change_earlier_logits():
    torch.manual_seed(0)
    model = T.Seq2SeqTransformer(len(T.SOURCE_VOCAB.tokens), len(T.TARGET_VOCAB.tokens), d_model=16, heads=2, layers=1).eval()
    source = torch.tensor([[4, 5, 6]])
    memory, mask = model.encode(source)
    a = model.decode(torch.tensor([[1, 7, 8]]), memory, mask)
    b = model.decode(torch.tensor([[1, 7, 9]]), memory, mask)
    assert torch.allclose(a[:, :2], b[:, :2], atol=1e-6) and not torch.allclose(a[:, 2], b[:, 2])


@pytest.mark.slow
def test_a_short_run_learns_and_greedy_decoding_beats_chance():
    run = T.train_translator(
        T.TranslationConfig(train_size=2000, test_size=100, d_model=32, heads=2, layers=1, steps=300, batch_size=32), progress=False
    )
    assert run.history[-1]["loss"] < 0.5 * run.history[0]["loss"]
    predictions = T.translate(run.model, [zh for zh, _, _ in run.test])
    assert len(predictions) == 100 and all(isinstance(p, str) for p in predictions)
    words = [w for p in predictions for w in p.split()]
    assert words and set(words) <= set(T.TARGET_VOCAB.tokens)
    references = [en for _, en, _ in run.test]
    right = sum(a == b for p, r in zip(predictions, references) for a, b in zip(p.split(), r.split()))
    chance = 1 / len(T.TARGET_VOCAB.tokens)  # guessing each word uniformly
    assert right / sum(len(r.split()) for r in references) > 5 * chance


def test_bad_inputs_to_the_translator():
    with pytest.raises(SftbookError, match="empty"):
        T.source_tokens("  ")
    with pytest.raises(SftbookError, match="Unknown token 'x'"):
        T.SOURCE_VOCAB.encode(["x"])
    with pytest.raises(SftbookError, match="as many predictions"):
        T.exact_match(["one"], [])


def test_hub_translation_offline_is_one_clear_sentence(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnavailableError, match="not reachable here"):
        T.hub_translate(["你好"])
