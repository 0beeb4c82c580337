import pytest
from conftest import REPO_ROOT
from transformers import BertForMaskedLM

from sftbook import landmarks, plotting, pretraining, scaling, zoo
from sftbook.errors import SftbookError


def test_six_n_d():
    assert landmarks.training_flops(110e6, 1.28e11) == pytest.approx(8.448e19)
    with pytest.raises(SftbookError):
        landmarks.training_flops(0, 1)


def test_every_landmark_is_cited_in_the_bibliography():
    bib = (REPO_ROOT / "book" / "references.bib").read_text(encoding="utf-8")
    for model in landmarks.LANDMARK_MODELS:
        assert "{" + model.citation + "," in bib, model.name
        assert model.parameters > 1e7 and model.training_tokens > 1e10


def test_figures_draw():
    fig = plotting.scale_plot(landmarks.LANDMARK_MODELS, highlight={"ours": (1e7, 1e6)})
    assert len(fig.axes) == 2
    assert len(plotting.pipeline_diagram([("a", "b"), ("c", "d")]).axes[0].patches) == 3
    with pytest.raises(SftbookError):
        plotting.pipeline_diagram([])


@pytest.mark.slow
def test_scaling_study_measures_every_checkpoint_adds_runs_that_end_at_the_smallest_budget_and_is_cached(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SFTBOOK_CACHE", str(tmp_path))
    monkeypatch.setitem(zoo.FINETUNE_DEFAULTS, "tiny", {"learning_rate": 3e-4, "epochs": 1})
    study = scaling.scaling_study(sizes=("nano", "micro"), checkpoints=(0, 20), progress=False)
    assert "running it now" in capsys.readouterr().out
    rows = [r for r in study["rows"] if r["size"] == "nano"]
    assert [r["step"] for r in rows] == [0, 20] and rows[0]["flops"] == 0 and rows[1]["tokens"] > 0
    assert rows[1]["heldout_loss"] < rows[0]["heldout_loss"]  # twenty steps already help
    assert rows[0]["non_embedding_parameters"] < rows[0]["parameters"]
    assert all(0.4 < run["accuracy"] <= 1 for run in study["finetuned"])

    budget = {r["size"]: r for r in study["equal_compute"]}
    assert budget["nano"]["steps"] == 20 and budget["nano"]["flops"] == rows[1]["flops"]  # nano's own run ends there
    assert 1 <= budget["micro"]["steps"] < 20  # the wider model affords fewer steps of its own schedule
    # whole steps, and batches of different lengths: over a few steps the compute matches only roughly
    assert budget["micro"]["flops"] == pytest.approx(rows[1]["flops"], rel=0.3)
    assert budget["micro"]["heldout_loss"] < next(r["heldout_loss"] for r in study["rows"] if r["size"] == "micro" and r["step"] == 0)

    assert scaling.scaling_study(sizes=("nano", "micro"), checkpoints=(0, 20), progress=False) == study
    assert "running it now" not in capsys.readouterr().out
    with pytest.raises(SftbookError, match="non-negative"):
        scaling.scaling_study(sizes=("nano",), checkpoints=(-1, 20), progress=False)


def test_mlm_flops_count_the_vocabulary_projection_at_masked_tokens_only():
    model = BertForMaskedLM(pretraining.bert_config("nano", vocab_size=8000, max_length=64))
    hidden, vocabulary, tokens = 32, 8000, 1_000_000
    head = hidden * hidden + 3 * hidden + hidden * vocabulary  # transform (dense, bias, LayerNorm) + the tied projection
    encoder = sum(p.numel() for name, p in model.bert.named_parameters() if "embeddings" not in name)
    flops = scaling.mlm_training_flops(model, tokens, 0.15)
    assert flops == pytest.approx(6 * encoder * tokens + 6 * head * 0.15 * tokens)
    assert flops > 2 * landmarks.training_flops(encoder, tokens)  # for nano the head is most of the arithmetic


def test_scale_plot_writes_every_name_without_overlapping_another():
    fig = plotting.scale_plot(landmarks.LANDMARK_MODELS, highlight={"this chapter": (6e6, 1.5e6)})
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        boxes = [text.get_window_extent(renderer) for text in ax.texts]
        assert len(boxes) >= len(landmarks.LANDMARK_MODELS)
        assert not [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :] if a.overlaps(b)]
    fig.clf()
