import shutil

import pytest
import torch

from sftbook import attention, modeling
from sftbook.errors import SftbookError


@pytest.fixture(scope="module")
def minilm():
    return modeling.load_minilm()


def test_minilm_is_the_published_model(minilm):
    model, tokenizer = minilm
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (6, 384)
    assert abs(sum(p.numel() for p in model.parameters()) / 1e6 - 22.7) < 0.1
    assert tokenizer("hello world")["input_ids"][0] == tokenizer.cls_token_id


def test_our_attention_equals_bert_self_attention(minilm):
    model, tokenizer = minilm
    enc = tokenizer(["a gorgeous , witty , seductive movie .", "dull"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**enc, output_hidden_states=True, output_attentions=True)
        for index in (0, 5):
            layer = model.encoder.layer[index]
            context, weights = attention.MultiHeadSelfAttention.from_bert_layer(layer).context(out.hidden_states[index], enc["attention_mask"])
            additive = (1.0 - enc["attention_mask"][:, None, None, :].float()) * torch.finfo(torch.float32).min
            reference, _ = layer.attention.self(out.hidden_states[index], attention_mask=additive)
            real = enc["attention_mask"].bool()
            assert (context - reference)[real].abs().max() < 1e-5
            assert (weights - out.attentions[index]).abs().max() < 1e-5


def test_checksum_mismatch_and_missing_weights_are_refused(tmp_path):
    with pytest.raises(SftbookError, match="Checksum mismatch.*expected sha256 0{64}"):
        modeling.load_minilm(expected_sha256="0" * 64)
    with pytest.raises(SftbookError, match="No model.safetensors"):
        modeling.load_minilm(path=tmp_path)
    copy = tmp_path / "minilm"
    shutil.copytree(modeling.minilm_path(), copy)
    with open(copy / "model.safetensors", "r+b") as f:
        f.seek(-1, 2)
        f.write(b"\x00")
    with pytest.raises(SftbookError, match="Checksum mismatch"):
        modeling.load_minilm(path=copy)
