"""The toy pair shipped in py/toy_pair/: real ComfyUI models, a working judge, and conditional samples.

Sampling runs through the host's own nodes in this process (tests/support/toy_eval.py, which the evaluation
tool uses too), on the weights committed to the repository, so a change that breaks loading, conditioning,
the swap or the dual guider shows here.
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
    shipped = [*tp.WEIGHTS_DIR.glob("*.safetensors"), *tp.EVIDENCE_DIR.glob("*.safetensors")]
    total = sum(f.stat().st_size for f in shipped)
    assert total < 16 * 2 ** 20, f"{total / 2 ** 20:.1f} MiB"  # #19: every shipped pair, 16 MB in all
    for path in tp.EVIDENCE_DIR.glob("*.safetensors"):
        assert type(tp.load_toy_model("", path).model.diffusion_model) is UNetModel, path
    for which in tp.MODEL_FILES:
        patcher = tp.load_toy_model(which)
        assert isinstance(patcher, comfy.model_patcher.ModelPatcher)
        assert isinstance(patcher.model.diffusion_model, UNetModel)
        assert isinstance(patcher.model.latent_format, comfy.latent_formats.ChromaRadiance)
        assert patcher.model.model_type == comfy.model_base.ModelType.EPS
        # the edit model is the host's own InstructPix2Pix class: it concatenates InstructPixToPixConditioning's image
        expected = comfy.model_base.SD15_instructpix2pix if which == "edit" else comfy.model_base.BaseModel
        assert type(patcher.model) is expected, which
        assert patcher.model.diffusion_model.in_channels == (tp.EDIT_IN_CHANNELS if which == "edit" else 3)
    base, finetune = (tp.load_toy_model(w).model.diffusion_model.state_dict() for w in ("base", "finetune"))
    assert any(not torch.equal(base[k], finetune[k]) for k in base), "the fine-tune is the base"


@pytest.mark.parametrize("weight_dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_toy_model_stored_in_fp8_is_the_fp16_weights_rounded_and_cast_at_use(weight_dtype):
    """load_toy_model's weight_dtype (tools/evaluate_fp8_prior.py): stored as UNETLoader stores an fp8 model."""
    tp = toy()
    shipped = tp.load_toy_model("base").model
    fp8 = tp.load_toy_model("base", weight_dtype=weight_dtype).model
    assert fp8.manual_cast_dtype == torch.float32  # the CPU computes in fp32, the weights cast at each layer
    stored = dict(shipped.diffusion_model.named_parameters())
    for name, p in fp8.diffusion_model.named_parameters():
        assert p.dtype == weight_dtype, name
        assert torch.equal(p, stored[name].to(weight_dtype)), name


def test_edit_pairs_keep_everything_but_the_shape():
    tp = toy()
    source, target, labels = tp.draw_edits(64, torch.Generator().manual_seed(3))
    classifier = tp.load_classifier()
    with torch.no_grad():
        source_class, target_class = classifier(source).argmax(1), classifier(target).argmax(1)
    assert (target_class == labels).float().mean() > 0.95
    assert (source_class != labels).all()
    # the same drawing parameters: the background (a corner no shape reaches) is the same in each pair
    assert torch.allclose(source[:, :, 0, 0], target[:, :, 0, 0], atol=1e-5)
    assert (source - target).abs().amax(dim=(1, 2, 3)).min() > 0.1  # and the shape did change


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


def test_class_samples_through_the_stock_ksampler_follow_the_condition():
    """Both stock CFG and prior swap (prior = the base) draw the asked-for shapes; ∅ branches denoise real shapes."""
    from support.toy_eval import ClassSampler, Judge, toy_and_nodes, uncond_errors

    tp, node_classes = toy_and_nodes()
    judge = Judge(tp, real_count=500)
    sampler = ClassSampler(tp, per_class=3, steps=12, seed=7)
    finetune, base = tp.load_toy_model("finetune"), tp.load_toy_model("base")
    empty = node_classes["PriorSwapToyCondition"].execute(tp.EMPTY)[0]
    prior = node_classes["PriorFromModel"].execute(base, empty)[0]
    swapped = node_classes["PriorSwapCFG"].execute(finetune, prior, 1.0, 0.0, 1.0)[0]
    assert judge.accuracy_on_real > 0.95
    for model in (finetune, swapped):
        accuracy = float(judge.judge(sampler.sample(model, 3.0), sampler.labels).correct.float().mean())
        assert accuracy >= 0.6, accuracy  # chance is 0.1
    # Both ∅ branches denoise real shapes: predicting ε = 0 would score 1.0, an untrained UNet about as much.
    for model in (finetune, base):
        assert 0 < float(uncond_errors(model, tp, judge.real[:200]).mean()) < 0.05


def test_edits_through_both_dual_guiders_follow_the_instruction():
    """The edit model through ComfyUI's DualCFGGuider and through PriorSwapDualCFGGuider: the judge sees the
    instructed shape far above chance, and the swapped result differs from the stock one."""
    from support.toy_eval import EditSampler, Judge, toy_and_nodes

    tp, node_classes = toy_and_nodes()
    judge = Judge(tp, real_count=200)
    sampler = EditSampler(tp, node_classes, count=30, steps=12, seed=7)
    edit = tp.load_toy_model("edit")
    prior = node_classes["PriorFromModel"].execute(tp.load_toy_model("base"),
                                                   node_classes["PriorSwapToyCondition"].execute(tp.EMPTY)[0])[0]
    stock = sampler.sample(edit, None, 7.5, 1.5)
    swapped = sampler.sample(edit, prior, 7.5, 1.5)
    for images in (stock, swapped):
        accuracy = float(judge.judge(images, sampler.labels).correct.float().mean())
        assert accuracy >= 0.5, accuracy  # chance is 0.1
    assert float((stock - swapped).abs().max()) > 1e-2


@pytest.mark.fast
def test_bootstrap_pairs_settings_and_finds_only_real_differences():
    """Identical settings differ by exactly 0; a clear shift is a difference whose interval excludes 0."""
    from support.toy_eval import Samples, bootstrap

    gen = torch.Generator().manual_seed(0)
    real = torch.randn(500, 4, generator=gen)

    def runs(shift: float, hit_rate: float) -> list:
        out = []
        for seed in range(3):
            g = torch.Generator().manual_seed(seed)
            out.append(Samples(torch.rand(200, generator=g) < hit_rate, torch.randn(200, 4, generator=g) + shift))
        return out

    settings = {"a": runs(0.0, 0.5), "same": runs(0.0, 0.5), "shifted": runs(1.0, 0.9)}
    table = bootstrap(settings, real, replicates=100, pairs=[("same", "a"), ("shifted", "a")])
    assert table["same − a"]["accuracy"] == {"value": 0.0, "low": 0.0, "high": 0.0}
    assert table["same − a"]["fd"]["low"] == table["same − a"]["fd"]["high"] == 0.0
    assert table["shifted − a"]["accuracy"]["low"] > 0.3 and table["shifted − a"]["fd"]["low"] > 2.0
    for cell in (table["a"]["accuracy"], table["a"]["fd"]):
        assert cell["low"] <= cell["value"] <= cell["high"]
