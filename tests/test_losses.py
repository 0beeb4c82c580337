import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from sftbook import losses
from sftbook.errors import SftbookError


def _logits(seed, batch=16, classes=5, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, classes, generator=g, dtype=torch.float64) * scale, torch.randint(0, classes, (batch,), generator=g)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 50.0])
def test_cross_entropy_matches_pytorch_values_and_gradients(reduction, scale):
    logits, targets = _logits(0, scale=scale)
    ours_in, theirs_in = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    ours = losses.cross_entropy(ours_in, targets, reduction)
    theirs = F.cross_entropy(theirs_in, targets, reduction=reduction)
    assert torch.allclose(ours, theirs, atol=1e-12)
    ours.sum().backward()
    theirs.sum().backward()
    assert torch.allclose(ours_in.grad, theirs_in.grad, atol=1e-12)


def test_cross_entropy_gradient_is_p_minus_y():
    logits, targets = _logits(1)
    logits.requires_grad_()
    losses.cross_entropy(logits, targets, "sum").backward()
    expected = logits.detach().softmax(-1) - F.one_hot(targets, 5).double()
    assert torch.allclose(logits.grad, expected, atol=1e-12)


def test_log_softmax_is_stable_where_the_naive_form_is_not():
    logits = torch.tensor([[1000.0, 0.0, -1000.0]])
    assert torch.isnan(losses.naive_log_softmax(logits)).any() or torch.isinf(losses.naive_log_softmax(logits)).any()
    assert torch.allclose(losses.log_softmax(logits), F.log_softmax(logits, -1))
    assert torch.isfinite(losses.cross_entropy(logits, torch.tensor([2]))).all()


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_bce_matches_pytorch_including_edges(reduction):
    probs = torch.tensor([0.0, 1e-12, 0.3, 0.5, 0.9, 1.0, 1.0, 0.0], dtype=torch.float64)
    targets = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    p1, p2 = probs.clone().requires_grad_(), probs.clone().requires_grad_()
    ours, theirs = losses.binary_cross_entropy(p1, targets, reduction), F.binary_cross_entropy(p2, targets, reduction=reduction)
    assert torch.allclose(ours, theirs)
    ours.backward()
    theirs.backward()
    inner = slice(2, 5)  # PyTorch clamps the gradient at p ∈ {0, 1}; compare where both are defined
    assert torch.allclose(p1.grad[inner], p2.grad[inner])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-60, 60), min_size=1, max_size=20), st.data())
def test_bce_with_logits_matches_pytorch(values, data):
    logits = torch.tensor(values, dtype=torch.float64)
    targets = torch.tensor(data.draw(st.lists(st.sampled_from([0.0, 1.0]), min_size=len(values), max_size=len(values))), dtype=torch.float64)
    a, b = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    ours = losses.binary_cross_entropy_with_logits(a, targets, "sum")
    theirs = F.binary_cross_entropy_with_logits(b, targets, reduction="sum")
    assert torch.allclose(ours, theirs, atol=1e-10)
    ours.backward()
    theirs.backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-10)


def test_bce_is_two_class_cross_entropy():
    logits, targets = _logits(2, classes=2)
    p_positive = logits.softmax(-1)[:, 1]
    assert torch.allclose(losses.binary_cross_entropy(p_positive, targets.double()), losses.cross_entropy(logits, targets))


def test_article_bce_is_not_minimised_at_the_true_labels():
    grid = torch.linspace(0.001, 0.999, 999, dtype=torch.float64)
    for target in (0.0, 1.0):
        t = torch.full_like(grid, target)
        correct = losses.binary_cross_entropy(grid, t, "none")
        article = losses.article_bce(grid, t, "none")
        assert abs(grid[correct.argmin()].item() - target) < 0.002
        if target == 0.0:  # the article's loss is lowest at the *wrong* answer
            assert grid[article.argmin()].item() > 0.99


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mse_matches_pytorch(reduction):
    a, b = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    assert torch.allclose(losses.mse(a, b, reduction), F.mse_loss(a, b, reduction=reduction))


def test_label_smoothing_matches_pytorch():
    logits, targets = _logits(3)
    ours = losses.label_smoothing_cross_entropy(logits, targets, 0.1)
    assert torch.allclose(ours, F.cross_entropy(logits, targets, label_smoothing=0.1))
    assert torch.allclose(losses.label_smoothing_cross_entropy(logits, targets, 0.0), losses.cross_entropy(logits, targets))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: losses.cross_entropy(torch.randn(3, 2), torch.tensor([0, 1])), r"targets must be \(batch,\)"),
        (lambda: losses.cross_entropy(torch.randn(3, 2), torch.tensor([0, 1, 2])), r"0\.\.1 for 2 classes"),
        (lambda: losses.cross_entropy(torch.randn(2, 2), torch.tensor([0, -1])), "must lie in"),
        (lambda: losses.cross_entropy(torch.randn(2, 2), torch.tensor([0.0, 1.0])), "integer class indices"),
        (lambda: losses.cross_entropy(torch.randn(0, 2), torch.tensor([], dtype=torch.long)), "empty batch"),
        (lambda: losses.cross_entropy(torch.randn(4), torch.tensor([0])), r"\(batch, classes\)"),
        (lambda: losses.binary_cross_entropy(torch.tensor([1.2]), torch.tensor([1.0])), r"probabilities in \[0, 1\]"),
        (lambda: losses.binary_cross_entropy(torch.tensor([0.2]), torch.tensor([2.0])), "targets must lie"),
        (lambda: losses.binary_cross_entropy(torch.tensor([0.2, 0.3]), torch.tensor([1.0])), "same shape"),
        (lambda: losses.mse(torch.zeros(0), torch.zeros(0)), "empty batch"),
        (lambda: losses.mse(torch.zeros(2), torch.zeros(3)), "same shape"),
        (lambda: losses.cross_entropy(torch.randn(2, 2), torch.tensor([0, 1]), "avg"), "Unknown reduction"),
        (lambda: losses.label_smoothing_cross_entropy(torch.randn(2, 2), torch.tensor([0, 1]), 1.0), "smoothing"),
    ],
)
def test_bad_inputs_are_clear_errors(call, message):
    with pytest.raises(SftbookError, match=message):
        call()
