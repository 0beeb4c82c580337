import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from sftbook import attention
from sftbook.errors import SftbookError


def _qkv(seed, batch=2, heads=3, n_q=5, n_k=7, d_k=8, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    shape = lambda n: (batch, heads, n, d_k)
    return (scale * torch.randn(shape(n_q), generator=g), scale * torch.randn(shape(n_k), generator=g), torch.randn(shape(n_k), generator=g))


def test_as_printed_and_stable_forms_equal_pytorch_sdpa():
    q, k, v = _qkv(0)
    reference = F.scaled_dot_product_attention(q, k, v)
    assert torch.allclose(attention.attention_as_printed(q, k, v)[0], reference, atol=1e-6)
    assert torch.allclose(attention.scaled_dot_product_attention(q, k, v)[0], reference, atol=1e-6)


def test_only_the_stable_form_survives_large_scores():
    q, k, v = _qkv(1, scale=40.0)
    printed = attention.attention_as_printed(q, k, v)[0]
    stable = attention.scaled_dot_product_attention(q, k, v)[0]
    assert not torch.isfinite(printed).all()
    exact = F.scaled_dot_product_attention(q.double(), k.double(), v.double())  # float64 reference
    assert (stable.double() - exact).abs().max() < 1e-4


def test_global_normalizer_breaks_the_row_sums():
    q, k, v = _qkv(2)
    weights = attention.attention_global_normalizer(q, k, v)[1]
    assert torch.allclose(weights.sum(dim=(-2, -1)), torch.ones(2, 3))
    assert not torch.allclose(weights.sum(-1), torch.ones(2, 3, 5))


def test_mask_matches_sdpa_and_zeroes_masked_keys():
    q, k, v = _qkv(3)
    mask = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    mask[0, ..., 4:] = False
    out, weights = attention.scaled_dot_product_attention(q, k, v, mask)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-6)
    assert (weights[0, ..., 4:] == 0).all()


@settings(max_examples=40, deadline=None)
@given(n_q=st.integers(1, 6), n_k=st.integers(1, 6), d_k=st.integers(1, 16), seed=st.integers(0, 10_000), data=st.data())
def test_attention_properties(n_q, n_k, d_k, seed, data):
    g = torch.Generator().manual_seed(seed)
    q, k, v = torch.randn(1, n_q, d_k, generator=g), torch.randn(1, n_k, d_k, generator=g), torch.randn(1, n_k, 3, generator=g)
    keep = torch.tensor(data.draw(st.lists(st.booleans(), min_size=n_k, max_size=n_k)))
    if not keep.any():
        keep[0] = True
    out, weights = attention.scaled_dot_product_attention(q, k, v, keep[None, None, :])
    assert torch.allclose(weights.sum(-1), torch.ones(1, n_q), atol=1e-5)  # rows sum to 1
    assert (weights[..., ~keep] == 0).all()  # masked keys get nothing
    perm = torch.randperm(n_k, generator=g)
    out_perm, _ = attention.scaled_dot_product_attention(q, k[:, perm], v[:, perm], keep[perm][None, None, :])
    assert torch.allclose(out, out_perm, atol=1e-5)  # permuting keys and values together changes nothing


def test_split_and_merge_heads_round_trip():
    x = torch.randn(2, 5, 12)
    heads = attention.split_heads(x, 3)
    assert heads.shape == (2, 3, 5, 4)
    assert torch.equal(attention.merge_heads(heads), x)


def torch_twin(ours: attention.MultiHeadAttention) -> torch.nn.MultiheadAttention:
    """PyTorch's own multi-head attention holding the same weights as ours."""
    theirs = torch.nn.MultiheadAttention(ours.query.in_features, ours.num_heads, batch_first=True)
    with torch.no_grad():
        theirs.in_proj_weight.copy_(torch.cat([ours.query.weight, ours.key.weight, ours.value.weight]))
        theirs.in_proj_bias.copy_(torch.cat([ours.query.bias, ours.key.bias, ours.value.bias]))
        theirs.out_proj.weight.copy_(ours.output.weight)
        theirs.out_proj.bias.copy_(ours.output.bias)
    return theirs


def test_multi_head_matches_torch_multihead_attention():
    torch.manual_seed(0)
    ours = attention.MultiHeadSelfAttention(16, 4)
    theirs = torch_twin(ours)
    x = torch.randn(2, 6, 16)
    keep = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    out, weights = ours(x, keep)
    ref_out, ref_weights = theirs(x, x, x, key_padding_mask=~keep.bool(), average_attn_weights=False)
    assert torch.allclose(out, ref_out, atol=1e-6) and torch.allclose(weights, ref_weights, atol=1e-6)


def test_cross_attention_and_causal_mask_match_torch():
    torch.manual_seed(0)
    ours = attention.MultiHeadAttention(16, 4)
    theirs = torch_twin(ours)
    x, memory = torch.randn(2, 3, 16), torch.randn(2, 5, 16)
    out, weights = ours(x, memory=memory)
    ref_out, _ = theirs(x, memory, memory)
    assert weights.shape == (2, 4, 3, 5) and torch.allclose(out, ref_out, atol=1e-6)
    causal = attention.causal_mask(3)
    assert causal.shape == (1, 1, 3, 3) and causal[0, 0].tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    out, weights = ours(x, mask=causal)
    ref_out, _ = theirs(x, x, x, attn_mask=~causal[0, 0])
    assert torch.allclose(out, ref_out, atol=1e-6) and torch.all(weights[..., 0, 1:] == 0)
    with pytest.raises(SftbookError, match="either attention_mask"):
        ours(x, torch.ones(2, 3), mask=causal)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: attention.scaled_dot_product_attention(torch.randn(2, 3, 4), torch.randn(2, 3, 5), torch.randn(2, 3, 5)), "d_k"),
        (
            lambda: attention.scaled_dot_product_attention(torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.randn(2, 2, 4)),
            "same number of positions",
        ),
        (
            lambda: attention.scaled_dot_product_attention(
                torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.ones(2, 3, 5, dtype=torch.bool)
            ),
            "does not broadcast",
        ),
        (
            lambda: attention.scaled_dot_product_attention(torch.randn(1, 2, 4), torch.randn(1, 2, 4), torch.randn(1, 2, 4), torch.ones(1, 2, 2)),
            "boolean",
        ),
        (
            lambda: attention.scaled_dot_product_attention(
                torch.randn(1, 2, 4), torch.randn(1, 2, 4), torch.randn(1, 2, 4), torch.zeros(1, 2, 2, dtype=torch.bool)
            ),
            "every key masked",
        ),
        (lambda: attention.scaled_dot_product_attention(torch.randn(1, 0, 4), torch.randn(1, 2, 4), torch.randn(1, 2, 4)), "at least one"),
        (lambda: attention.padding_mask(torch.ones(2, 3, 4)), r"\(batch, seq\)"),
        (lambda: attention.split_heads(torch.randn(1, 2, 10), 3), "not divisible"),
        (lambda: attention.MultiHeadSelfAttention(10, 3), "not divisible"),
        (lambda: attention.MultiHeadSelfAttention(8, 2)(torch.randn(3, 8)), r"\(batch, seq, d_model\)"),
    ],
)
def test_bad_inputs_are_clear_errors(call, message):
    with pytest.raises(SftbookError, match=message):
        call()
