import pytest

from sftbook import plotting, scale

from conftest import REPO_ROOT


def test_six_n_d():
    assert scale.training_flops(110e6, 1.28e11) == pytest.approx(8.448e19)
    with pytest.raises(ValueError):
        scale.training_flops(0, 1)


def test_every_landmark_is_cited_in_the_bibliography():
    bib = (REPO_ROOT / "book" / "references.bib").read_text(encoding="utf-8")
    for model in scale.LANDMARK_MODELS:
        assert "{" + model.citation + "," in bib, model.name
        assert model.parameters > 1e7 and model.training_tokens > 1e10


def test_figures_draw():
    fig = plotting.scale_plot(scale.LANDMARK_MODELS, highlight={"ours": (1e7, 1e6)})
    assert len(fig.axes) == 2
    assert len(plotting.pipeline_diagram([("a", "b"), ("c", "d")]).axes[0].patches) == 3
    with pytest.raises(ValueError):
        plotting.pipeline_diagram([])
