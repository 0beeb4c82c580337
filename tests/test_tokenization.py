import subprocess
import sys

import pytest

from sftbook import tokenization
from sftbook.errors import SftbookError

CORPUS = [
    "the movie was good .",
    "the movie was bad .",
    "a good film , a good cast .",
    "the film was not good .",
] * 5


def test_whitespace_and_character_tokenizers():
    assert tokenization.whitespace_tokenize(" a  good\tfilm ") == ["a", "good", "film"]
    assert tokenization.char_tokenize("ab c") == ["a", "b", " ", "c"]


@pytest.fixture(scope="module")
def wordpiece():
    return tokenization.train_wordpiece(CORPUS, vocab_size=60)


def test_wordpiece_special_tokens_come_first(wordpiece):
    ids = [wordpiece.convert_tokens_to_ids(t) for t in tokenization.SPECIAL_TOKENS]
    assert ids == [0, 1, 2, 3, 4]
    assert wordpiece.pad_token_id == 0 and wordpiece.mask_token_id == 4


def test_wordpiece_encodes_with_cls_sep_and_round_trips(wordpiece):
    encoded = wordpiece("the movie was good .")
    assert encoded["input_ids"][0] == wordpiece.cls_token_id
    assert encoded["input_ids"][-1] == wordpiece.sep_token_id
    tokens = wordpiece.convert_ids_to_tokens(encoded["input_ids"])
    assert tokens == ["[CLS]", "the", "movie", "was", "good", ".", "[SEP]"]
    assert wordpiece.decode(wordpiece("a good film")["input_ids"], skip_special_tokens=True) == "a good film"
    assert wordpiece.unk_token_id not in encoded["input_ids"]


def test_wordpiece_spells_unseen_words_from_pieces(wordpiece):
    tokens = wordpiece.tokenize("goodmovie")
    assert len(tokens) > 1 and tokens[1].startswith("##")
    assert "[UNK]" not in tokens


def test_wordpiece_save_and_reload(wordpiece, tmp_path):
    from transformers import AutoTokenizer

    wordpiece.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded("a bad cast")["input_ids"] == wordpiece("a bad cast")["input_ids"]


def test_wordpiece_rejects_empty_corpus():
    with pytest.raises(SftbookError, match="empty corpus"):
        tokenization.train_wordpiece(["", "   "], vocab_size=100)


def test_wordpiece_rejects_too_small_vocabulary():
    with pytest.raises(SftbookError, match=r"vocab_size >= \d+"):
        tokenization.train_wordpiece(CORPUS, vocab_size=10)


def test_vocabulary_stats_by_hand():
    stats = tokenization.vocabulary_stats("ws", tokenization.whitespace_tokenize, ["a b b", "c"], ["a d", "b b e f"])
    # vocab {a, b, c} + unknown; held-out: 6 tokens, 3 unknown (d, e, f), 3 per sentence
    assert (stats.vocab_size, stats.mean_tokens, stats.unknown_rate) == (4, 3.0, 0.5)
    rare = tokenization.vocabulary_stats("ws2", tokenization.whitespace_tokenize, ["a b b", "c"], ["a b"], min_count=2)
    assert rare.vocab_size == 2 and rare.unknown_rate == 0.5


def test_stats_reject_empty_inputs(wordpiece):
    with pytest.raises(SftbookError):
        tokenization.vocabulary_stats("ws", tokenization.whitespace_tokenize, [], ["a"])
    with pytest.raises(SftbookError):
        tokenization.wordpiece_stats(wordpiece, [])


def test_wordpiece_stats_count_unknown_characters(wordpiece):
    stats = tokenization.wordpiece_stats(wordpiece, ["good €"])
    assert stats.unknown_rate == 0.5 and stats.mean_tokens == 2.0


def test_wordpiece_ids_are_the_same_in_every_process():
    # the trainer numbers its entries in hash order, which changes per process: only fresh processes show it
    script = (
        "from sftbook import data, tokenization\n"
        "tok = tokenization.train_wordpiece(data.load('sst2')['train']['text'], vocab_size=4000)\n"
        "print(sorted(tok.get_vocab().items(), key=lambda kv: kv[1]))"
    )
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout for _ in range(2)]
    assert runs[0] == runs[1] and runs[0].startswith("[('[PAD]', 0), ('[UNK]', 1), ('[CLS]', 2), ('[SEP]', 3), ('[MASK]', 4)")
