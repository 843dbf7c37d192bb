"""The py/ core on real ComfyUI objects in this process: clear errors before sampling, no mutation."""
from __future__ import annotations

import copy

import pytest
import torch

from support.inprocess import core
from support.inprocess import empty_prior as _prior

pytestmark = pytest.mark.fast  # no server: see pytest.ini


def test_sdxl_latent_prior_refused_before_sampling(sd15):
    import comfy.latent_formats

    routing = core("routing")
    errors = core("errors")
    model, clip = sd15
    sdxl_like = model.clone()
    sdxl_like.add_object_patch("latent_format", comfy.latent_formats.SDXL())
    with pytest.raises(errors.PriorSwapError, match="another latent space.*SDXL"):
        routing.apply_prior_swap(model, _prior(sdxl_like, clip), routing.SwapSchedule())
    with pytest.raises(errors.PriorSwapError, match="another latent space"):
        routing.apply_prior_swap(sdxl_like, _prior(model, clip), routing.SwapSchedule())


def test_conditioning_from_another_text_encoder_refused(sd15):
    errors = core("errors")
    prior_mod = core("prior")
    model, _clip = sd15
    wide = [[torch.zeros(1, 77, 1024), {}]]  # an SD2.x (OpenCLIP-H) width
    with pytest.raises(errors.PriorSwapError, match="1024 wide but the prior model expects 768"):
        prior_mod.make_prior(model, wide)


def test_start_after_end_refused(sd15):
    routing = core("routing")
    errors = core("errors")
    model, clip = sd15
    with pytest.raises(errors.PriorSwapError, match="start_percent .* is after end_percent"):
        routing.apply_prior_swap(model, _prior(model, clip), routing.SwapSchedule(start_percent=0.8, end_percent=0.2))


def test_input_model_not_mutated(sd15):
    import comfy.patcher_extension

    routing = core("routing")
    model, clip = sd15
    prior = _prior(model, clip)
    options, wrappers = copy.deepcopy(model.model_options), copy.deepcopy(model.wrappers)
    patched = routing.apply_prior_swap(model, prior, routing.SwapSchedule())
    assert patched is not model
    assert model.model_options == options and model.wrappers == wrappers
    assert model.get_additional_models() == []
    assert patched.get_additional_models_with_key(routing.KEY) == [prior.model]
    outer = comfy.patcher_extension.WrappersMP.OUTER_SAMPLE
    assert len(patched.get_wrappers(outer, routing.KEY)) == 1
    # A second PriorSwapCFG on the patched model replaces the first instead of stacking.
    again = routing.apply_prior_swap(patched, prior, routing.SwapSchedule(prior_weight=0.5))
    assert len(again.get_wrappers(outer, routing.KEY)) == 1


def test_to_prior_space_flow_bridge_is_a_change_of_variables():
    """x = x0 + σε seen by a flow prior: x_f = x/(1+σ) = (1−σ_f)·x0 + σ_f·ε with σ_f = σ/(1+σ)."""
    import comfy.model_sampling

    guidance = core("guidance")
    eps_ms, flow_ms = comfy.model_sampling.EPS(), comfy.model_sampling.CONST()
    x0, noise = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    sigma = torch.tensor([3.0, 0.5])
    x = x0 + sigma.view(-1, 1, 1, 1) * noise
    x_f, sigma_f = guidance.to_prior_space(x, sigma, eps_ms, flow_ms)
    s = sigma_f.view(-1, 1, 1, 1)
    assert torch.allclose(x_f, (1 - s) * x0 + s * noise, atol=1e-6)
    back, sigma_back = guidance.to_prior_space(x_f, sigma_f, flow_ms, eps_ms)
    assert torch.allclose(back, x, atol=1e-5) and torch.allclose(sigma_back, sigma, atol=1e-5)
    same_x, same_sigma = guidance.to_prior_space(x, sigma, eps_ms, comfy.model_sampling.V_PREDICTION())
    assert same_x is x and same_sigma is sigma


def test_same_checkpoint_with_other_patches_refused(sd15):
    """One loaded checkpoint cannot hold two sets of patches: a clear error, not silently wrong weights."""
    import comfy.model_sampling

    routing, errors = core("routing"), core("errors")
    model, clip = sd15
    v_pred = model.clone()
    v_pred.add_object_patch("model_sampling", comfy.model_sampling.ModelSamplingDiscrete())
    with pytest.raises(errors.PriorSwapError, match="same loaded checkpoint"):
        routing.apply_prior_swap(model, _prior(v_pred, clip), routing.SwapSchedule())
    lora_like = model.clone()
    key = next(k for k in lora_like.model_state_dict() if k.endswith("out.2.weight"))
    lora_like.add_patches({key: (torch.zeros_like(lora_like.model_state_dict()[key]),)}, 1.0)
    with pytest.raises(errors.PriorSwapError, match="same loaded checkpoint"):
        routing.apply_prior_swap(lora_like, _prior(model, clip), routing.SwapSchedule())
    # An unpatched clone shares weights legitimately (the identity case).
    routing.apply_prior_swap(model.clone(), _prior(model, clip), routing.SwapSchedule())


def test_dual_guider_refuses_prior_of_another_latent_space(sd15):
    import comfy.latent_formats

    guiders, routing, errors = core("guiders"), core("routing"), core("errors")
    model, clip = sd15
    sdxl_like = model.clone()
    sdxl_like.add_object_patch("latent_format", comfy.latent_formats.SDXL())
    cond = core("prior").encode_text(clip, "")
    with pytest.raises(errors.PriorSwapError, match="PriorSwapDualCFGGuider: the prior works in another latent space"):
        guiders.prior_swap_dual_guider(model, _prior(sdxl_like, clip), cond, cond, cond, 7.5, 1.5, "regular",
                                       routing.SwapSchedule())
