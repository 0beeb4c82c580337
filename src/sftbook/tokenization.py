"""Tokenization compared (chapter 2) and the WordPiece vocabulary the book's own BERT uses (chapter 3).

Whitespace and character tokenizers are the two extremes; WordPiece sits between them: a vocabulary
of frequent words and word pieces (``##ing``) that spells any word without an unknown token.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from sftbook.errors import SftbookError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def whitespace_tokenize(text: str) -> list[str]:
    """Split on runs of whitespace (the benchmark files already separate punctuation)."""
    return text.split()


def char_tokenize(text: str) -> list[str]:
    """Every character is a token, spaces included (they carry the word boundaries)."""
    return list(text)


def train_wordpiece(texts: Iterable[str], vocab_size: int, min_frequency: int = 2, lowercase: bool = True):
    """Train a BERT-style WordPiece vocabulary and wrap it as a transformers fast tokenizer.

    The result encodes ``[CLS] text [SEP]``, pads with ``[PAD]`` and can be saved with
    ``save_pretrained``. The trainer numbers its entries in hash order, which changes from process to
    process, so they are renumbered canonically — the special tokens as ids 0-4, then the rest sorted.
    The entries themselves can still differ when merges tie at the size cut-off (seen on small corpora),
    and between tokenizers releases: save a vocabulary to reuse it exactly.
    """
    corpus = [t for t in texts if t and t.strip()]
    if not corpus:
        raise SftbookError("Cannot train a WordPiece vocabulary on an empty corpus; pass non-empty texts.")
    alphabet = {ch for t in corpus for ch in (t.lower() if lowercase else t) if not ch.isspace()}
    minimum = len(SPECIAL_TOKENS) + len(alphabet)
    if vocab_size < minimum:
        raise SftbookError(
            f"vocab_size={vocab_size} cannot hold the {len(SPECIAL_TOKENS)} special tokens and the "
            f"{len(alphabet)} characters of this corpus; use vocab_size >= {minimum}."
        )
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    entries = sorted(set(tokenizer.get_vocab()) - set(SPECIAL_TOKENS))
    tokenizer.model = models.WordPiece({token: i for i, token in enumerate([*SPECIAL_TOKENS, *entries])}, unk_token="[UNK]")
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


@dataclass(frozen=True)
class TokenizationStats:
    """How one tokenizer trades vocabulary size against sequence length and unknown tokens."""

    scheme: str
    vocab_size: int
    mean_tokens: float  # per held-out sentence
    unknown_rate: float  # share of held-out tokens that are unknown


def vocabulary_stats(
    scheme: str,
    tokenize: Callable[[str], list[str]],
    train_texts: Sequence[str],
    heldout_texts: Sequence[str],
    min_count: int = 1,
) -> TokenizationStats:
    """Stats of a closed vocabulary: every unit seen ``min_count`` times in training, the rest unknown."""
    if not train_texts or not heldout_texts:
        raise SftbookError("Both train_texts and heldout_texts must be non-empty.")
    counts = Counter(tok for text in train_texts for tok in tokenize(text))
    vocab = {tok for tok, c in counts.items() if c >= min_count}
    heldout = [tokenize(text) for text in heldout_texts]
    total = sum(len(toks) for toks in heldout)
    unknown = sum(tok not in vocab for toks in heldout for tok in toks)
    # +1: the unknown token itself is part of the vocabulary a model must embed.
    return TokenizationStats(scheme, len(vocab) + 1, total / len(heldout), unknown / max(total, 1))


def wordpiece_stats(tokenizer, heldout_texts: Sequence[str], scheme: str = "WordPiece") -> TokenizationStats:
    """Stats of a trained WordPiece tokenizer on held-out text, special tokens excluded."""
    if not heldout_texts:
        raise SftbookError("heldout_texts must be non-empty.")
    encoded = tokenizer(list(heldout_texts), add_special_tokens=False)["input_ids"]
    total = sum(len(ids) for ids in encoded)
    unknown = sum(i == tokenizer.unk_token_id for ids in encoded for i in ids)
    return TokenizationStats(scheme, len(tokenizer), total / len(encoded), unknown / max(total, 1))
