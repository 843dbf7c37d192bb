"""Other patches users stack, and the inputs the pack must leave alone, on the real ComfyUI.

Each pairing is run with and without the other patch: it must keep its effect (the result changes) and,
where the patch is a formula, equal an independent computation of Eq. 7 with that formula applied to the
prior's uncond. RescaleCFG (sampler_cfg_function), CFGNorm (a post-CFG guidance limiter), APG (a pre-CFG
patch), FreeU_V2 (a UNet output-block patch) and ComfyUI's hook nodes (a LoRA scheduled on one
conditioning) are the host's own nodes; LoRA on the fine-tune alone is in test_prior_swap.py.
"""
from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from support import checkpoints, reference
from support.prompts import NEGATIVE, POSITIVE, graph, read_latent, swap_chain

REL = 1e-5
CFG = 5.0


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max())


def build(*, swap: bool = True, before: tuple = (), after: tuple = (), prior: str = "base",
          positive_hooks: str | None = None, negative_hooks: str | None = None, clip_hooks: bool = False,
          prior_weight: float = 1.0, seed: int = 7, steps: int = 3) -> dict:
    """Fine-tune → [before patches] → PriorSwapCFG → [after patches] → KSampler; returns the API prompt.

    ``before``/``after``: (node, inputs) pairs applied to the MODEL. ``prior``: "base" (Load Prior
    Checkpoint) or "same" (the patched fine-tune MODEL itself with the KSampler's negative: the identity).
    ``positive_hooks``/``negative_hooks``: "props" puts a LoRA hook on that conditioning with
    ConditioningSetProperties; ``clip_hooks`` encodes the positive with SetClipHooks instead.
    """
    g = graph()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name="sd15_finetune.safetensors")
    hook = g.node("CreateHookLora", lora_name="test_lora.safetensors", strength_model=1.0, strength_clip=1.0)
    pos_clip = ckpt.out(1)
    if clip_hooks:
        pos_clip = g.node("SetClipHooks", clip=pos_clip, apply_to_conds=True, schedule_clip=False,
                          hooks=hook.out(0)).out(0)
    pos = g.node("CLIPTextEncode", clip=pos_clip, text=POSITIVE).out(0)
    neg = g.node("CLIPTextEncode", clip=ckpt.out(1), text=NEGATIVE).out(0)
    if positive_hooks:
        pos = g.node("ConditioningSetProperties", cond_NEW=pos, strength=1.0, set_cond_area="default",
                     hooks=hook.out(0)).out(0)
    if negative_hooks:
        neg = g.node("ConditioningSetProperties", cond_NEW=neg, strength=1.0, set_cond_area="default",
                     hooks=hook.out(0)).out(0)
    model = swap_chain(g, ckpt, neg, before=before, after=after, swap=swap, prior=prior, prior_weight=prior_weight)
    latent = g.node("EmptyLatentImage", width=64, height=64, batch_size=1)
    samples = g.node("KSampler", model=model, seed=seed, steps=steps, cfg=CFG, sampler_name="euler",
                     scheduler="simple", positive=pos, negative=neg, latent_image=latent.out(0), denoise=1.0)
    g.node("SaveLatent", samples=samples.out(0), filename_prefix="latents/compose")
    return g.finalize()


def latent(comfy_server, prompt: dict) -> torch.Tensor:
    entry = comfy_server.run(prompt)
    files = comfy_server.output_files(entry, "latents")
    assert len(files) == 1, entry
    return read_latent(files[0])


@pytest.fixture(scope="module")
def ref(checkpoint_cache):
    """Raw UNets and encodings for the reference (fine-tune, fine-tune + the test LoRA, base prior)."""
    ft_unet, ft_clip = reference.load(str(checkpoint_cache / "sd15_finetune.safetensors"))
    prior_unet, prior_clip = reference.load(str(checkpoint_cache / "sd15_base.safetensors"))
    lora_unet = copy.deepcopy(ft_unet)
    with torch.no_grad():
        lora_unet.out[2].weight += checkpoints.lora_diff()
    return SimpleNamespace(
        ft=reference.Net(ft_unet, "eps"), ft_lora=reference.Net(lora_unet, "eps"),
        prior=reference.Net(prior_unet, "eps"),
        c=reference.encode(ft_clip, POSITIVE), n=reference.encode(ft_clip, NEGATIVE), u=reference.encode(prior_clip, ""))


def guided(ref, combine, shape: tuple, *, cond_net=None, uncond=None, seed: int = 7, steps: int = 3) -> torch.Tensor:
    """Euler over ``combine(x, sigma, cond_x0, uncond_x0)``; uncond defaults to the prior's (Eq. 7)."""
    def denoise(x, sigma):
        cond = x - sigma * (cond_net or ref.ft).eps(x, sigma, ref.c)
        u = uncond(x, sigma) if uncond else x - sigma * ref.prior.eps(x, sigma, ref.u)
        return combine(x, sigma, cond, u)

    return reference.euler(denoise, shape, seed=seed, steps=steps)


def plain_cfg(x, sigma, c, u):
    return u + CFG * (c - u)


@pytest.fixture(scope="module")
def swapped(comfy_server):
    return latent(comfy_server, build())


# -- inputs are not mutated -------------------------------------------------------------------------------

def _one_workflow(order: str) -> dict:
    """One workflow: the fine-tune and the base model each sampled stock AND used by the pack.

    ``order`` fixes which branch runs first: a later branch takes its (empty) latent from LatentMultiply(×0)
    of the earlier branch's result, which is all zeros like EmptyLatentImage.
    """
    g = graph()
    ft = g.node("CheckpointLoaderSimple", ckpt_name="sd15_finetune.safetensors")
    base = g.node("CheckpointLoaderSimple", ckpt_name="sd15_base.safetensors")
    pos = g.node("CLIPTextEncode", clip=ft.out(1), text=POSITIVE)
    neg = g.node("CLIPTextEncode", clip=ft.out(1), text=NEGATIVE)
    empty = g.node("CLIPTextEncode", clip=base.out(1), text="")
    prior = g.node("PriorFromModel", model=base.out(0), negative=empty.out(0))
    branches = {
        "swap": g.node("PriorSwapCFG", model=ft.out(0), prior=prior.out(0), prior_weight=1.0, start_percent=0.0,
                       end_percent=1.0).out(0),
        "stock_ft": ft.out(0),
        "stock_base": base.out(0),
    }
    first = g.node("EmptyLatentImage", width=64, height=64, batch_size=1).out(0)
    names = ["swap", "stock_ft", "stock_base"] if order == "swap_first" else ["stock_ft", "stock_base", "swap"]
    previous = None
    for name in names:
        lat = first if previous is None else g.node("LatentMultiply", samples=previous, multiplier=0.0).out(0)
        previous = g.node("KSampler", model=branches[name], seed=7, steps=3, cfg=CFG, sampler_name="euler",
                          scheduler="simple", positive=pos.out(0), negative=neg.out(0), latent_image=lat,
                          denoise=1.0).out(0)
        g.node("SaveLatent", samples=previous, filename_prefix=f"latents/mutation_{order}_{name}")
    return g.finalize()


def _stock_alone(comfy_server) -> dict[str, torch.Tensor]:
    """The same two stock samplings in a workflow without the pack."""
    g = graph()
    ft = g.node("CheckpointLoaderSimple", ckpt_name="sd15_finetune.safetensors")
    base = g.node("CheckpointLoaderSimple", ckpt_name="sd15_base.safetensors")
    pos = g.node("CLIPTextEncode", clip=ft.out(1), text=POSITIVE)
    neg = g.node("CLIPTextEncode", clip=ft.out(1), text=NEGATIVE)
    empty = g.node("EmptyLatentImage", width=64, height=64, batch_size=1)
    empty = g.node("RepeatLatentBatch", samples=empty.out(0), amount=1)  # not the cached sampler of the workflow
    for name, model in (("stock_ft", ft.out(0)), ("stock_base", base.out(0))):
        samples = g.node("KSampler", model=model, seed=7, steps=3, cfg=CFG, sampler_name="euler", scheduler="simple",
                         positive=pos.out(0), negative=neg.out(0), latent_image=empty.out(0), denoise=1.0)
        g.node("SaveLatent", samples=samples.out(0), filename_prefix=f"latents/alone_{name}")
    entry = comfy_server.run(g.finalize())
    return {path.name.split("alone_", 1)[1].rsplit("_", 2)[0]: read_latent(path)
            for path in comfy_server.output_files(entry, "latents")}


@pytest.mark.parametrize("order", ["swap_first", "swap_last"])
def test_models_and_conditioning_used_with_and_without_the_pack_keep_the_stock_result(comfy_server, ref, order):
    entry = comfy_server.run(_one_workflow(order))
    results = {}
    for path in comfy_server.output_files(entry, "latents"):
        name = path.name.split(f"mutation_{order}_", 1)[1].rsplit("_", 2)[0]
        results[name] = read_latent(path)
    assert sorted(results) == ["stock_base", "stock_ft", "swap"]
    alone = _stock_alone(comfy_server)
    assert sorted(alone) == ["stock_base", "stock_ft"]
    assert torch.equal(results["stock_ft"], alone["stock_ft"])
    assert torch.equal(results["stock_base"], alone["stock_base"])
    expected = guided(ref, plain_cfg, tuple(results["swap"].shape))
    assert rel_err(results["swap"], expected) < REL
    assert rel_err(results["stock_ft"], expected) > 1000 * REL


# -- patches on the sampled model -----------------------------------------------------------------------

def rescale_cfg(multiplier: float):
    """RescaleCFG's formula (Lin et al. 2023): CFG on v-prediction, rescaled to the conditional's std.

    For x = x0 + σε: α = 1/√(σ²+1), s = σ/√(σ²+1), v = (x/(σ²+1) − x0)/s and x0 = x/(σ²+1) − s·v.
    """
    def combine(x, sigma, c, u):
        s = sigma / (sigma ** 2 + 1.0) ** 0.5
        v_c, v_u = (x / (sigma ** 2 + 1.0) - c) / s, (x / (sigma ** 2 + 1.0) - u) / s
        v_cfg = v_u + CFG * (v_c - v_u)
        rescaled = v_cfg * (v_c.std(dim=(1, 2, 3), keepdim=True) / v_cfg.std(dim=(1, 2, 3), keepdim=True))
        v = multiplier * rescaled + (1.0 - multiplier) * v_cfg
        return x / (sigma ** 2 + 1.0) - s * v
    return combine


@pytest.mark.parametrize("where", ["after", "before"])
def test_rescale_cfg_applies_to_the_prior_uncond(comfy_server, ref, swapped, where):
    patch = (("RescaleCFG", {"multiplier": 0.7}),)
    result = latent(comfy_server, build(**{where: patch}))
    expected = guided(ref, rescale_cfg(0.7), tuple(result.shape))
    assert rel_err(result, expected) < REL, rel_err(result, expected)
    assert rel_err(result, swapped) > 1000 * REL


def test_cfg_norm_limiter_applies_to_the_prior_guidance(comfy_server, ref, swapped):
    result = latent(comfy_server, build(after=(("CFGNorm", {"strength": 1.0}),)))

    def cfg_norm(x, sigma, c, u):
        pred = u + CFG * (c - u)
        scale = (c.norm(dim=1, keepdim=True) / (pred.norm(dim=1, keepdim=True) + 1e-8)).clamp(0.0, 1.0)
        return pred * scale

    expected = guided(ref, cfg_norm, tuple(result.shape))
    assert rel_err(result, expected) < REL, rel_err(result, expected)
    assert rel_err(result, swapped) > 1000 * REL


def test_apg_pre_cfg_patch_sees_the_prior_uncond(comfy_server, ref, swapped):
    eta, threshold = 0.5, 1.0
    result = latent(comfy_server, build(after=(("APG", {"eta": eta, "norm_threshold": threshold, "momentum": 0.0}),)))

    def apg(x, sigma, c, u):
        guidance = c - u
        norm = guidance.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
        guidance = guidance * torch.clamp(threshold / norm, max=1.0)
        unit = c / c.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
        parallel = (guidance * unit).sum(dim=(1, 2, 3), keepdim=True) * unit
        modified_cond = u + (guidance - parallel) + eta * parallel + (c - u) / CFG
        return u + CFG * (modified_cond - u)

    expected = guided(ref, apg, tuple(result.shape))
    assert rel_err(result, expected) < REL, rel_err(result, expected)
    assert rel_err(result, swapped) > 1000 * REL


def test_freeu_v2_keeps_its_effect(comfy_server, swapped):
    """FreeU changes the fine-tune's UNet; with the patched model as its own prior the result is stock FreeU."""
    freeu = (("FreeU_V2", {"b1": 1.3, "b2": 1.4, "s1": 0.9, "s2": 0.2}),)
    with_freeu = latent(comfy_server, build(before=freeu))
    assert rel_err(with_freeu, swapped) > 1000 * REL
    identity = latent(comfy_server, build(before=freeu, prior="same"))
    stock_freeu = latent(comfy_server, build(before=freeu, swap=False))
    assert rel_err(identity, stock_freeu) < REL, rel_err(identity, stock_freeu)
    assert rel_err(stock_freeu, latent(comfy_server, build(swap=False))) > 1000 * REL


# -- ComfyUI's hooks (a LoRA on one conditioning) ---------------------------------------------------------

def test_lora_hook_on_the_positive_reaches_the_fine_tune_only(comfy_server, ref, swapped):
    result = latent(comfy_server, build(positive_hooks="props"))
    expected = guided(ref, plain_cfg, tuple(result.shape), cond_net=ref.ft_lora)
    assert rel_err(result, expected) < REL, rel_err(result, expected)
    assert rel_err(result, swapped) > 1000 * REL
    # The same hook set on the CLIP (SetClipHooks → CLIPTextEncode) gives the same conditioning.
    via_clip = latent(comfy_server, build(clip_hooks=True))
    assert rel_err(via_clip, result) < REL, rel_err(via_clip, result)


def test_lora_hook_on_the_negative_is_blended_with_the_prior(comfy_server, ref):
    """prior_weight 0.5: the fine-tune's own uncond (evaluated with the hooked LoRA) mixed with the prior's."""
    result = latent(comfy_server, build(negative_hooks="props", prior_weight=0.5))
    without = latent(comfy_server, build(prior_weight=0.5))

    def uncond(x, sigma):
        own = x - sigma * ref.ft_lora.eps(x, sigma, ref.n)
        prior = x - sigma * ref.prior.eps(x, sigma, ref.u)
        return own + 0.5 * (prior - own)

    expected = guided(ref, plain_cfg, tuple(result.shape), uncond=uncond)
    assert rel_err(result, expected) < REL, rel_err(result, expected)
    assert rel_err(result, without) > 1000 * REL
