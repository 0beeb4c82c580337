"""Machine translation as a controlled toy: Chinese numerals → English words (chapter 10).

No Chinese–English parallel corpus is reachable offline, so the data are generated with labels that are
exactly right: every integer 0 ≤ n < 1,000,000 written in Chinese numerals (``十二万三千零五``) and in
English words (``one hundred twenty three thousand five``). The two languages group digits differently —
Chinese by ten-thousands (万), English by thousands — so a model must reorder, not just substitute.

The model is the encoder–decoder Transformer of Vaswani et al. (2017), built from the book's own
:class:`~sftbook.attention.MultiHeadAttention`: the encoder reads the source with self-attention, the
decoder writes the target with causal self-attention and reads the encoder through cross-attention.
It trains with teacher forcing and cross-entropy, and translates by greedy decoding.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F
from transformers import pipeline

from sftbook.attention import MultiHeadAttention, causal_mask
from sftbook.decoding import decode
from sftbook.env import at_scale, hub_reachable
from sftbook.env import progress as progress_bar
from sftbook.errors import HubUnavailableError, SftbookError
from sftbook.optimization import warmup_schedule

LIMIT = 1_000_000
DIGITS = "零一二三四五六七八九"
SMALL = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen").split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
PAD, BOS, EOS = "<pad>", "<s>", "</s>"
HUB_MODEL = "Helsinki-NLP/opus-mt-zh-en"


def _check_number(n: int) -> None:
    if not isinstance(n, int) or not 0 <= n < LIMIT:
        raise SftbookError(f"The numeral task covers integers 0 ≤ n < {LIMIT:,}; got {n!r}, pick one in that range.")


def chinese_numeral(n: int) -> str:
    """``n`` in Chinese numerals: 10 → 十, 110 → 一百一十, 1005 → 一千零五, 120003 → 十二万零三."""
    _check_number(n)
    if n == 0:
        return DIGITS[0]

    def below_10000(m: int, leading: bool) -> str:
        out, pending_zero = "", False
        for value, unit in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
            digit = m // value % 10
            if digit == 0:
                pending_zero = bool(out)  # a gap inside the number is read as one 零
                continue
            if pending_zero or (not out and not leading and value < 1000):
                out += DIGITS[0]  # 一万零五百: a gap after 万 is read too
            pending_zero = False
            out += ("" if (digit == 1 and value == 10 and not out and leading) else DIGITS[digit]) + unit
        return out

    high, low = divmod(n, 10_000)
    if not high:
        return below_10000(low, leading=True)
    return below_10000(high, leading=True) + "万" + (below_10000(low, leading=False) if low else "")


def english_words(n: int) -> str:
    """``n`` in English words without hyphens or "and": 123003 → one hundred twenty three thousand three."""
    _check_number(n)
    if n == 0:
        return SMALL[0]

    def below_1000(m: int) -> list[str]:
        words = [SMALL[m // 100], "hundred"] if m >= 100 else []
        m %= 100
        if m >= 20:
            words += [TENS[m // 10]] + ([SMALL[m % 10]] if m % 10 else [])
        elif m:
            words.append(SMALL[m])
        return words

    high, low = divmod(n, 1000)
    words = (below_1000(high) + ["thousand"] if high else []) + below_1000(low)
    return " ".join(words)


def numeral_pairs(count: int, seed: int = 0, exclude: set[int] | None = None) -> list[tuple[str, str, int]]:
    """``count`` distinct ``(chinese, english, n)`` triples; each number of digits (1–6) is equally likely."""
    exclude = exclude or set()
    if count > LIMIT // 2 - len(exclude):  # keeps the rejection sampling below fast
        raise SftbookError(f"Asked for {count:,} numbers; draw at most {LIMIT // 2 - len(exclude):,} with these exclusions.")
    rng, chosen = random.Random(seed), set()
    while len(chosen) < count:
        digits = rng.randint(1, 6)
        n = rng.randrange(10 ** (digits - 1) if digits > 1 else 0, 10**digits)
        if n not in exclude:
            chosen.add(n)
    numbers = sorted(chosen, key=lambda _: rng.random())
    return [(chinese_numeral(n), english_words(n), n) for n in numbers]


@dataclass
class Vocabulary:
    """Token ↔ id for one side; ids 0, 1, 2 are padding, begin and end of sentence."""

    tokens: list[str]
    index: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = [PAD, BOS, EOS] + [t for t in self.tokens if t not in (PAD, BOS, EOS)]
        self.index = {t: i for i, t in enumerate(self.tokens)}

    def encode(self, tokens: list[str]) -> list[int]:
        unknown = [t for t in tokens if t not in self.index]
        if unknown:
            raise SftbookError(f"Unknown token {unknown[0]!r}; this toy vocabulary has only {len(self.tokens)} tokens.")
        return [self.index[t] for t in tokens]

    def decode(self, ids: list[int]) -> list[str]:
        return [self.tokens[i] for i in ids if i > 2]


SOURCE_VOCAB = Vocabulary(list(DIGITS + "十百千万"))
TARGET_VOCAB = Vocabulary(SMALL + TENS[2:] + ["hundred", "thousand"])


def source_tokens(text: str) -> list[str]:
    """Chinese numerals are tokenized character by character."""
    if not text or not text.strip():
        raise SftbookError("Nothing to translate: the source text is empty.")
    return list(text.strip())


class PositionalEncoding(nn.Module):
    """The sinusoidal positions of the original Transformer, added to the token embeddings."""

    def __init__(self, d_model: int, max_length: int = 64) -> None:
        super().__init__()
        position = torch.arange(max_length).unsqueeze(1)
        frequency = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10_000.0) / d_model))
        table = torch.zeros(max_length, d_model)
        table[:, 0::2], table[:, 1::2] = torch.sin(position * frequency), torch.cos(position * frequency)
        self.register_buffer("table", table, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, seq, d_model)
        if x.shape[1] > self.table.shape[0]:
            raise SftbookError(f"Sequence of {x.shape[1]} tokens is longer than the {self.table.shape[0]} positions.")
        return x + self.table[: x.shape[1]]


class EncoderLayer(nn.Module):
    """Self-attention, then a feed-forward network; each wrapped in a residual and a (pre-)LayerNorm."""

    def __init__(self, d_model: int, heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.attention, self.norm1, self.norm2 = MultiHeadAttention(d_model, heads), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.feed_forward = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, source_mask: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attention(self.norm1(x), mask=source_mask)[0])
        return x + self.dropout(self.feed_forward(self.norm2(x)))


class DecoderLayer(nn.Module):
    """Causal self-attention over the target so far, cross-attention to the encoder, feed-forward."""

    def __init__(self, d_model: int, heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.self_attention, self.cross_attention = MultiHeadAttention(d_model, heads), MultiHeadAttention(d_model, heads)
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(3))
        self.feed_forward = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))
        self.dropout = nn.Dropout(dropout)

    def forward(self, y: torch.Tensor, memory: torch.Tensor, target_mask: torch.Tensor, source_mask: torch.Tensor) -> torch.Tensor:
        y = y + self.dropout(self.self_attention(self.norms[0](y), mask=target_mask)[0])
        y = y + self.dropout(self.cross_attention(self.norms[1](y), memory=memory, mask=source_mask)[0])
        return y + self.dropout(self.feed_forward(self.norms[2](y)))


class Seq2SeqTransformer(nn.Module):
    """A small encoder–decoder Transformer (pre-LayerNorm) with tied target embedding and output layer."""

    def __init__(self, source_size: int, target_size: int, d_model: int = 128, heads: int = 4, layers: int = 2, dropout: float = 0.1) -> None:
        super().__init__()
        self.d_model = d_model
        self.source_embedding, self.target_embedding = nn.Embedding(source_size, d_model), nn.Embedding(target_size, d_model)
        self.positions = PositionalEncoding(d_model)
        self.encoder = nn.ModuleList(EncoderLayer(d_model, heads, 4 * d_model, dropout) for _ in range(layers))
        self.decoder = nn.ModuleList(DecoderLayer(d_model, heads, 4 * d_model, dropout) for _ in range(layers))
        self.encoder_norm, self.decoder_norm = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        for embedding in (self.source_embedding, self.target_embedding):
            # std d^-1/2, times √d on input: token vectors as large as the positions' sines (±1),
            # and small logits at initialisation through the tied output layer
            nn.init.normal_(embedding.weight, std=d_model**-0.5)

    def encode(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Source ids (batch, src) → memory (batch, src, d_model) and its key mask (batch, 1, 1, src)."""
        source_mask = (source != 0)[:, None, None, :]
        x = self.positions(self.source_embedding(source) * math.sqrt(self.d_model))
        for layer in self.encoder:
            x = layer(x, source_mask)
        return self.encoder_norm(x), source_mask

    def decode(self, target_in: torch.Tensor, memory: torch.Tensor, source_mask: torch.Tensor) -> torch.Tensor:
        """Target ids so far (batch, tgt) → next-token logits at every position (batch, tgt, vocab)."""
        target_mask = causal_mask(target_in.shape[1]).to(target_in.device) & (target_in != 0)[:, None, None, :]
        target_mask = target_mask | torch.eye(target_in.shape[1], dtype=torch.bool, device=target_in.device)  # a pad still sees itself
        y = self.positions(self.target_embedding(target_in) * math.sqrt(self.d_model))
        for layer in self.decoder:
            y = layer(y, memory, target_mask, source_mask)
        return self.decoder_norm(y) @ self.target_embedding.weight.T

    def forward(self, source: torch.Tensor, target_in: torch.Tensor) -> torch.Tensor:
        memory, source_mask = self.encode(source)
        return self.decode(target_in, memory, source_mask)


def _pad(rows: list[list[int]]) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [0] * (width - len(r)) for r in rows])


def make_batch(pairs: list[tuple[str, str, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source ids, decoder input ``<s> y₁ … yₙ`` and target ``y₁ … yₙ </s>`` — teacher forcing."""
    source = _pad([SOURCE_VOCAB.encode(source_tokens(zh)) for zh, _, _ in pairs])
    target = [TARGET_VOCAB.encode(en.split()) for _, en, _ in pairs]
    return source, _pad([[1] + t for t in target]), _pad([t + [2] for t in target])


@dataclass
class TranslationConfig:
    """Settings of the numeral translator; at the reduced scale (make test) 2,000 / 200 numbers, 150 steps."""

    train_size: int = field(default_factory=lambda: at_scale(20_000, 2_000))
    test_size: int = field(default_factory=lambda: at_scale(2_000, 200))
    d_model: int = 128
    heads: int = 4
    layers: int = 2
    dropout: float = 0.1
    batch_size: int = 64
    steps: int = field(default_factory=lambda: at_scale(1_200, 150))  # full: ~100% exact match in about a minute
    learning_rate: float = 1e-3
    seed: int = 0


@dataclass
class TranslationRun:
    model: Seq2SeqTransformer
    train: list[tuple[str, str, int]]
    test: list[tuple[str, str, int]]
    history: list[dict[str, float]]
    seconds: float


def train_translator(config: TranslationConfig | None = None, progress: bool = True, device: torch.device | None = None) -> TranslationRun:
    """Train the numeral translator with teacher forcing, AdamW and warm-up/decay; test numbers never seen."""
    config = config or TranslationConfig()
    device = device or torch.device("cpu")
    train = numeral_pairs(config.train_size, seed=config.seed)  # every 1- and 2-digit number lands here
    test = numeral_pairs(config.test_size, seed=config.seed + 1, exclude={n for _, _, n in train})
    torch.manual_seed(config.seed)
    model = Seq2SeqTransformer(len(SOURCE_VOCAB.tokens), len(TARGET_VOCAB.tokens), config.d_model, config.heads, config.layers, config.dropout).to(
        device
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.01)
    schedule = warmup_schedule(optimizer, config.steps, config.steps // 20)
    generator = torch.Generator().manual_seed(config.seed)
    history, start = [], time.perf_counter()
    bar = progress_bar(config.steps, "training the translator", disable=not progress)
    model.train()
    for step in range(config.steps):
        rows = torch.randint(len(train), (config.batch_size,), generator=generator).tolist()
        source, target_in, target_out = (t.to(device) for t in make_batch([train[i] for i in rows]))
        logits = model(source, target_in)  # (batch, tgt, vocab)
        loss = F.cross_entropy(logits.flatten(0, 1), target_out.flatten(), ignore_index=0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        history.append({"step": step + 1, "loss": loss.item()})
        bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.update(1)
    bar.close()
    return TranslationRun(model.eval(), train, test, history, time.perf_counter() - start)


def translate(model: Seq2SeqTransformer, texts: list[str], max_length: int = 16, batch_size: int = 500) -> list[str]:
    """Translate by greedy decoding (:func:`~sftbook.decoding.decode`): the decoder reads the words
    written so far and the encoded source, and the most probable next word is emitted until ``</s>``."""
    device = next(model.parameters()).device
    model.eval()
    results: list[str] = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            source = _pad([SOURCE_VOCAB.encode(source_tokens(t)) for t in texts[start : start + batch_size]]).to(device)
            memory, source_mask = model.encode(source)

            def next_logits(output, state, memory=memory, source_mask=source_mask):  # output: (batch, target so far)
                return model.decode(output, memory, source_mask)[:, -1], state  # (batch, target vocabulary); nothing cached

            begin = torch.ones(len(source), 1, dtype=torch.long, device=device)  # (batch, 1): <s>
            for row in decode(next_logits, begin, max_length, eos_id=2).tolist():
                row = row[: row.index(2)] if 2 in row else row
                results.append(" ".join(TARGET_VOCAB.decode(row)))
    return results


def exact_match(predictions: list[str], references: list[str]) -> float:
    """Share of translations identical to the reference, word for word."""
    if len(predictions) != len(references) or not references:
        raise SftbookError(f"exact_match needs as many predictions as references (got {len(predictions)} and {len(references)}), at least one.")
    return sum(p == r for p, r in zip(predictions, references)) / len(references)


def hub_translate(texts: list[str], model_id: str = HUB_MODEL) -> list[str]:
    """Translate real Chinese with a pretrained Marian model from the Hugging Face Hub (when reachable)."""
    if not hub_reachable():
        raise HubUnavailableError(f"{model_id} is only on the Hugging Face Hub, which is not reachable here; run this cell where it is (e.g. Colab).")
    translator = pipeline("translation", model=model_id)
    return [row["translation_text"] for row in translator(list(texts))]


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
