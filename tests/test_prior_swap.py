"""PriorSwapCFG and PriorSwapGuider on the real ComfyUI, against an independent reference (Eq. 7)."""
from __future__ import annotations

import copy

import pytest
import torch

from support import checkpoints, prompts, reference
from support.prompts import NEGATIVE, POSITIVE, run_latent, text2img
from support.server import prior_calls

REL = 1e-5  # float32 on the CPU: batch-1 vs batch-2 forwards round differently at ~1e-6 of the scale


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest deviation relative to the largest magnitude (latents of random models are large)."""
    return float((actual - expected).abs().max() / expected.abs().max())


def _counts(server) -> list[tuple[int, int]]:
    return prior_calls(server.log_text())


def eq7_latent(ft: reference.Net, prior: reference.Net, shape: tuple, seed: int = 7, scale: float = 5.0,
               cfg_fn=None) -> torch.Tensor:
    """Reference latent: Euler over Eq. 7 with the fine-tune's cond and the prior's empty-prompt uncond."""
    c, u = reference.encode(ft.clip, POSITIVE), reference.encode(prior.clip, "")

    def denoise(x, sigma):
        cond_d = x - sigma * ft.eps(x, sigma, c)
        uncond_d = x - sigma * prior.eps(x, sigma, u)
        return (cfg_fn or (lambda x, c_, u_: u_ + scale * (c_ - u_)))(x, cond_d, uncond_d)

    return reference.euler(denoise, shape, seed=seed, steps=3)


def net(checkpoint_cache, name: str, parameterization: str = "eps") -> reference.Net:
    unet, clip = reference.load(str(checkpoint_cache / name))
    return reference.Net(unet, parameterization, clip=clip)


@pytest.fixture(scope="module")
def stock(comfy_server):
    return run_latent(comfy_server, text2img(swap=False))


def test_swap_changes_result_and_matches_eq7_reference(comfy_server, stock, checkpoint_cache):
    """eps fine-tune + eps prior (different weights): the KSampler latent is Eq. 7 sampled by Euler."""
    swapped = run_latent(comfy_server, text2img())
    expected = eq7_latent(net(checkpoint_cache, "sd15_finetune.safetensors"),
                          net(checkpoint_cache, "sd15_base.safetensors", "eps"), tuple(swapped.shape), seed=7)
    assert rel_err(swapped, expected) < REL, rel_err(swapped, expected)
    # The swap must matter: stock CFG differs far beyond the tolerance.
    assert rel_err(stock, swapped) > 1000 * REL


def test_identity_same_model_same_negative_equals_stock(comfy_server, stock):
    same = run_latent(comfy_server, text2img(prior_from_model="same"))
    assert rel_err(same, stock) < REL, rel_err(same, stock)


def test_identity_same_checkpoint_loaded_as_prior_equals_stock(comfy_server, stock):
    loaded = run_latent(comfy_server, text2img(prior="sd15_finetune.safetensors", prior_negative=NEGATIVE))
    assert rel_err(loaded, stock) < REL, rel_err(loaded, stock)


def test_prior_weight_zero_is_stock_bit_exact(comfy_server, stock):
    assert torch.equal(run_latent(comfy_server, text2img(prior_weight=0.0)), stock)


def test_cfg_one_never_runs_prior(comfy_server):
    before = len(_counts(comfy_server))
    run_latent(comfy_server, text2img(cfg=1.0))
    counts = _counts(comfy_server)[before:]
    assert counts == [(0, 3)], counts


def test_prior_runs_once_per_step_at_full_weight(comfy_server):
    before = len(_counts(comfy_server))
    run_latent(comfy_server, text2img(seed=11))
    assert _counts(comfy_server)[before:] == [(3, 3)]


def test_v_prediction_prior_matches_reference(comfy_server, checkpoint_cache):
    """eps fine-tune + v-prediction prior (ModelSamplingDiscrete): combined in denoised space."""
    swapped = run_latent(comfy_server, text2img(v_prior=True))
    expected = eq7_latent(net(checkpoint_cache, "sd15_finetune.safetensors"),
                          net(checkpoint_cache, "sd15_base.safetensors", "v"), tuple(swapped.shape), seed=7)
    assert rel_err(swapped, expected) < REL, rel_err(swapped, expected)
    eps_prior = run_latent(comfy_server, text2img())
    assert rel_err(eps_prior, swapped) > 1000 * REL


def test_prior_of_another_architecture_matches_reference(comfy_server, checkpoint_cache):
    """A deeper UNet (three levels, not two) sharing the latent space and text encoder."""
    swapped = run_latent(comfy_server, text2img(prior="sd15_deep_prior.safetensors"))
    expected = eq7_latent(net(checkpoint_cache, "sd15_finetune.safetensors"),
                          net(checkpoint_cache, "sd15_deep_prior.safetensors", "eps"), tuple(swapped.shape), seed=7)
    assert rel_err(swapped, expected) < REL, rel_err(swapped, expected)


def test_ksampler_and_sampler_custom_advanced_agree(comfy_server):
    ksampler = run_latent(comfy_server, text2img(seed=3))
    custom = run_latent(comfy_server, text2img(seed=3, sampler="custom"))
    assert torch.equal(ksampler, custom)


def test_batch_of_two_matches_reference(comfy_server, checkpoint_cache):
    swapped = run_latent(comfy_server, text2img(batch=2, seed=5))
    assert swapped.shape[0] == 2
    expected = eq7_latent(net(checkpoint_cache, "sd15_finetune.safetensors"),
                          net(checkpoint_cache, "sd15_base.safetensors", "eps"), tuple(swapped.shape), seed=5)
    assert rel_err(swapped, expected) < REL, rel_err(swapped, expected)
    assert (swapped[0] - swapped[1]).abs().max() > 0.1


def test_post_cfg_patch_sees_prior_uncond(comfy_server, checkpoint_cache):
    """CFGZeroStar (a post-CFG patch) applied after PriorSwapCFG works on the prior's uncond."""
    patched = run_latent(comfy_server, text2img(post_cfg="CFGZeroStar"))
    plain = run_latent(comfy_server, text2img())
    def cfg_zero_star(x, cond_d, uncond_d):
        out = uncond_d + 5.0 * (cond_d - uncond_d)
        # CFG-Zero*: alpha = <x − cond, x − uncond> / ‖x − uncond‖² per sample
        a, b = (x - cond_d).flatten(1), (x - uncond_d).flatten(1)
        alpha = ((a * b).sum(1) / ((b * b).sum(1) + 1e-8)).reshape(-1, 1, 1, 1)
        return out + uncond_d * (alpha - 1.0) + 5.0 * uncond_d * (1.0 - alpha)

    expected = eq7_latent(net(checkpoint_cache, "sd15_finetune.safetensors"),
                          net(checkpoint_cache, "sd15_base.safetensors"), tuple(patched.shape), cfg_fn=cfg_zero_star)
    assert rel_err(patched, expected) < REL, rel_err(patched, expected)
    assert rel_err(patched, plain) > 1000 * REL


def test_blend_and_schedule_use_both_unconds(comfy_server, stock):
    full = run_latent(comfy_server, text2img())
    half = run_latent(comfy_server, text2img(prior_weight=0.5))
    late = run_latent(comfy_server, text2img(start_percent=0.5))
    for result in (half, late):
        assert rel_err(result, stock) > 1000 * REL and rel_err(result, full) > 1000 * REL


def _lora_graph(prior_kind: str) -> dict:
    """Fine-tune with a LoRA; prior = the same checkpoint without it, loaded separately or shared."""
    g = prompts.graph()
    ckpt, pos, neg = prompts.fine_tune(g)
    lora = g.node("LoraLoaderModelOnly", model=ckpt.out(0), lora_name="test_lora.safetensors", strength_model=1.0)
    if prior_kind == "own_loader":
        prior = g.node("PriorCheckpointLoader", ckpt_name="sd15_finetune.safetensors", negative_prompt="")
    else:  # the LoRA-free MODEL of the very same loader
        empty = g.node("CLIPTextEncode", clip=ckpt.out(1), text="")
        prior = g.node("PriorFromModel", model=ckpt.out(0), negative=empty.out(0))
    model = g.node("PriorSwapCFG", model=lora.out(0), prior=prior.out(0), prior_weight=1.0,
                   start_percent=0.0, end_percent=1.0)
    return prompts.sample_latent(g, model.out(0), pos, neg, seed=7, prefix="latents/lora")


def test_same_checkpoint_with_and_without_lora_keep_their_own_weights(comfy_server, checkpoint_cache):
    """Fine-tune + LoRA, prior = the same checkpoint loaded by its own loader, without the LoRA."""
    swapped = run_latent(comfy_server, _lora_graph("own_loader"))
    prior = net(checkpoint_cache, "sd15_finetune.safetensors")
    lora_unet = copy.deepcopy(prior.unet)
    with torch.no_grad():
        lora_unet.out[2].weight += checkpoints.lora_diff()
    ft = reference.Net(lora_unet, "eps", clip=prior.clip)
    expected = eq7_latent(ft, prior, tuple(swapped.shape))
    assert rel_err(swapped, expected) < REL, rel_err(swapped, expected)


def test_same_loaded_checkpoint_with_other_patches_is_refused_before_sampling(comfy_server):
    from support.server import ExecutionError

    with pytest.raises(ExecutionError) as err:
        run_latent(comfy_server, _lora_graph("shared"))
    assert "same loaded checkpoint" in str(err.value) and "PriorSwapCFG" in str(err.value)


def test_sigma_beyond_prior_range_warns_once_and_stays_finite(comfy_server):
    """A zero-terminal-SNR fine-tune samples sigmas far above the prior's range: nearest timestep, one warning."""
    g = prompts.graph()
    ckpt, pos, neg = prompts.fine_tune(g)
    zsnr = g.node("ModelSamplingDiscrete", model=ckpt.out(0), sampling="eps", zsnr=True)
    prior = g.node("PriorCheckpointLoader", ckpt_name="sd15_base.safetensors", negative_prompt="")
    model = g.node("PriorSwapCFG", model=zsnr.out(0), prior=prior.out(0), prior_weight=1.0,
                   start_percent=0.0, end_percent=1.0)
    prompt = prompts.sample_latent(g, model.out(0), pos, neg, seed=1, prefix="latents/zsnr")
    warning = "lies outside the prior's range"
    before = comfy_server.log_text().count(warning)
    latent_out = run_latent(comfy_server, prompt)
    assert comfy_server.log_text().count(warning) == before + 1
    assert torch.isfinite(latent_out).all()
