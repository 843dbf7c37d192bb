"""The toy pair shipped in py/toy_pair/: real ComfyUI models, a working judge, and conditional samples.

Sampling runs through the stock KSampler node in this process (tests/evaluate_toy_pair.py), on the
weights committed to the repository, so a change that breaks loading, conditioning or the swap shows here.
"""
from __future__ import annotations

import pytest
import torch

from support.inprocess import core


def toy():
    return core("toy_pair")


def test_weights_are_small_and_load_as_comfyui_models():
    import comfy.latent_formats
    import comfy.model_base
    import comfy.model_patcher
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    tp = toy()
    total = sum((tp.WEIGHTS_DIR / f).stat().st_size for f in [*tp.MODEL_FILES.values(), tp.CLASSIFIER_FILE])
    assert total < 8 * 2 ** 20, f"{total / 2 ** 20:.1f} MiB"
    for which in tp.MODEL_FILES:
        patcher = tp.load_toy_model(which)
        assert isinstance(patcher, comfy.model_patcher.ModelPatcher)
        assert type(patcher.model) is comfy.model_base.BaseModel
        assert isinstance(patcher.model.diffusion_model, UNetModel)
        assert isinstance(patcher.model.latent_format, comfy.latent_formats.ChromaRadiance)
        assert patcher.model.model_type == comfy.model_base.ModelType.EPS
    base, finetune = (tp.load_toy_model(w).model.diffusion_model.state_dict() for w in ("base", "finetune"))
    assert any(not torch.equal(base[k], finetune[k]) for k in base), "the fine-tune is the base"


def test_classifier_recognises_held_out_real_shapes():
    tp = toy()
    labels = torch.arange(500) % len(tp.CLASSES)
    images = tp.draw_shapes(labels, torch.Generator().manual_seed(4242))
    with torch.no_grad():
        accuracy = (tp.load_classifier()(images).argmax(1) == labels).float().mean().item()
    assert accuracy > 0.95


def test_frechet_distance_is_zero_for_one_set_and_grows_with_a_shift():
    tp = toy()
    feats = torch.randn(400, 8, generator=torch.Generator().manual_seed(0))
    assert abs(tp.frechet_distance(feats, feats)) < 1e-6
    assert tp.frechet_distance(feats, feats + 1.0) == pytest.approx(8.0, rel=1e-6)  # |Δμ|² = 8, same covariance


def test_unknown_shape_is_a_clear_error():
    tp = toy()
    errors = core("errors")
    with pytest.raises(errors.PriorSwapError, match="Unknown toy shape 'hexagon'.*disk"):
        tp.toy_conditioning("disk, hexagon")


def test_condition_batch_cycles_through_the_list():
    tp = toy()
    (cond, _), = tp.toy_conditioning("ring, empty, ring")
    assert cond.shape == (3, 1, tp.CONTEXT_DIM)
    assert torch.equal(cond[0], cond[2]) and not torch.equal(cond[0], cond[1])


def test_evaluation_through_the_stock_ksampler_follows_the_condition():
    """A small run of the evaluation: both stock CFG and prior swap draw the asked-for shapes."""
    from evaluate_toy_pair import evaluate

    result = evaluate(per_class=3, gammas=(3.0,), steps=12, seed=7, log=lambda _: None)
    rows = {(r["method"], r["gamma"]): r for r in result["rows"]}
    assert result["settings"]["classifier_accuracy_on_real"] > 0.95
    for key in (("stock CFG", 3.0), ("prior swap", 3.0)):
        assert rows[key]["accuracy"] >= 0.6, rows[key]  # chance is 0.1
    assert rows[("∅ only, base", None)]["accuracy"] is None
    assert all(r["fd"] >= 0 for r in result["rows"])
    # Both ∅ branches denoise real shapes: predicting ε = 0 would score 1.0, an untrained UNet about as much.
    assert all(0 < loss < 0.05 for loss in result["uncond_loss"].values()), result["uncond_loss"]
