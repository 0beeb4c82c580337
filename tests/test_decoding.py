import pytest
import torch

from sftbook.decoding import greedy_decode
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


def test_greedy_decode_stops_when_every_row_has_ended_and_pads_finished_rows_with_eos():
    start = torch.ones(2, 1, dtype=torch.long)  # (batch, 1)
    new = greedy_decode(scripted([[3, EOS, 4, 4], [2, 4, 3, EOS]]), start, max_new_tokens=10, eos_id=EOS)
    assert new.tolist() == [[3, EOS, EOS, EOS], [2, 4, 3, EOS]]  # row 0 would write 4 again, but it has ended


def test_greedy_decode_writes_at_most_max_new_tokens_and_threads_the_state():
    seen = []

    def next_logits(tokens, state):
        seen.append(state)
        return torch.tensor([[0.0, 0.0, 1.0]]), (state or 0) + 1

    new = greedy_decode(next_logits, torch.ones(1, 3, dtype=torch.long), max_new_tokens=4, eos_id=EOS)
    assert new.tolist() == [[2, 2, 2, 2]] and seen == [None, 1, 2, 3]  # the cache of step k reaches step k + 1
    with pytest.raises(SftbookError, match="max_new_tokens"):
        greedy_decode(next_logits, torch.ones(1, 3, dtype=torch.long), max_new_tokens=0, eos_id=EOS)
