import pytest
import torch

from sftbook.decoding import Decoding, decode, next_token_scores
from sftbook.errors import SftbookError

EOS = 0


def scripted(plan: list[list[int]], vocab: int = 5):
    """A next-token function that writes ``plan[row][step]`` and counts its calls in its state."""

    def next_logits(tokens, calls):
        step = tokens.shape[1] - 1
        logits = torch.zeros(len(plan), vocab)
        for row, words in enumerate(plan):
            logits[row, words[min(step, len(words) - 1)]] = 1.0
        return logits, (calls or 0) + 1

    return next_logits


def test_decode_stops_when_every_row_has_ended_and_pads_finished_rows_with_eos():
    start = torch.ones(2, 1, dtype=torch.long)  # (batch, 1)
    new = decode(scripted([[3, EOS, 4, 4], [2, 4, 3, EOS]]), start, max_new_tokens=10, eos_id=EOS)
    assert new.tolist() == [[3, EOS, EOS, EOS], [2, 4, 3, EOS]]  # row 0 would write 4 again, but it has ended


def test_decode_writes_at_most_max_new_tokens_and_threads_the_state():
    seen = []

    def next_logits(tokens, state):
        seen.append(state)
        return torch.tensor([[0.0, 0.0, 1.0]]), (state or 0) + 1

    new = decode(next_logits, torch.ones(1, 3, dtype=torch.long), max_new_tokens=4, eos_id=EOS)
    assert new.tolist() == [[2, 2, 2, 2]] and seen == [None, 1, 2, 3]  # the cache of step k reaches step k + 1
    with pytest.raises(SftbookError, match="max_new_tokens"):
        decode(next_logits, torch.ones(1, 3, dtype=torch.long), max_new_tokens=0, eos_id=EOS)


@pytest.mark.parametrize(
    "settings",
    [
        Decoding(repetition_penalty=1.3),
        Decoding(sample=True, temperature=0.7),
        Decoding(sample=True, top_k=3),
        Decoding(sample=True, top_p=0.6),
        Decoding(sample=True, temperature=1.4, top_k=5, top_p=0.9, repetition_penalty=1.2),
    ],
)
def test_next_token_scores_equal_the_logits_processors_of_generate(settings):
    from transformers.generation import logits_process as hf

    torch.manual_seed(0)
    logits, tokens = torch.randn(4, 11) * 3, torch.randint(0, 11, (4, 6))
    processors = hf.LogitsProcessorList([hf.RepetitionPenaltyLogitsProcessor(settings.repetition_penalty)])  # generate's order
    if settings.sample:
        processors += [
            hf.TemperatureLogitsWarper(settings.temperature),
            hf.TopKLogitsWarper(settings.top_k or 11),
            hf.TopPLogitsWarper(settings.top_p),
        ]
    theirs = processors(tokens, logits.clone())
    assert torch.equal(next_token_scores(logits, tokens, settings), theirs)


def test_top_k_and_top_p_keep_the_most_probable_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    tokens = torch.zeros(1, 1, dtype=torch.long)
    assert torch.isfinite(next_token_scores(logits, tokens, Decoding(sample=True, top_k=2))).tolist() == [[True, True, False, False]]
    assert torch.isfinite(next_token_scores(logits, tokens, Decoding(sample=True, top_p=0.75))).tolist() == [[True, True, False, False]]
    assert torch.isfinite(next_token_scores(logits, tokens, Decoding(sample=True, top_p=0.01))).tolist() == [[True, False, False, False]]


@pytest.mark.parametrize("bad", [dict(temperature=0), dict(top_p=0), dict(top_p=1.5), dict(top_k=-1), dict(repetition_penalty=0)])
def test_invalid_decoding_settings_are_one_clear_error(bad):
    with pytest.raises(SftbookError, match="Invalid decoding settings"):
        Decoding(sample=True, **bad)
