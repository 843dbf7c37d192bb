"""Every guidance and sampling node of the host with the prior swap (issue #16, docs/compatibility.md).

Each node that composes is run on the real ComfyUI and compared with an independent computation: Euler
written out (support/reference.py) over the raw UNets of the fine-tune and the prior, combined by the node's
own formula — the host's function of that node, called in this process on the raw predictions, with the
*prior's* uncond. Each refusal is checked by its message. The last tests enumerate the host's nodes, from
``/object_info`` and from its source, and fail when one that changes guidance or sampling has no row in
docs/compatibility.md.
"""
from __future__ import annotations

import ast
import copy
import functools
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from support import checkpoints, foreign_models, reference
from support.comfy_env import ROOT, comfy_dir
from support.prompts import NEGATIVE, POSITIVE, graph, read_latent, swap_chain
from support.server import ExecutionError, prior_calls

REL = 1e-5  # float32 on the CPU: batch-1 vs batch-2 forwards round differently at ~1e-6 of the scale
CFG = 5.0
FT, BASE = "sd15_finetune.safetensors", "sd15_base.safetensors"
TABLE = ROOT / "docs" / "compatibility.md"


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max())


def counts(server) -> list[tuple[int, int]]:
    return prior_calls(server.log_text())


def latent(comfy_server, prompt: dict) -> torch.Tensor:
    entry = comfy_server.run(prompt)
    files = comfy_server.output_files(entry, "latents")
    assert len(files) == 1, entry
    return read_latent(files[0])


def refused(comfy_server, prompt: dict) -> str:
    with pytest.raises(ExecutionError) as info:
        comfy_server.run(prompt)
    return str(info.value.info.get("exception_message", info.value))


# -- graphs -----------------------------------------------------------------------------------------------
def build(*, swap: bool = True, before: tuple = (), after: tuple = (), prior: str = "base", cfg: float = CFG,
          sampler: str = "euler", steps: int = 3, seed: int = 7, size: int = 64, batch: int = 1,
          positive_hooks: bool = False, guider: str | None = None, neg_scale: float = 1.0) -> dict:
    """Fine-tune → [before] → PriorSwapCFG → [after] → KSampler (or ``guider`` + SamplerCustomAdvanced).

    ``before``/``after``: (node, inputs) pairs on the MODEL. ``prior``: "base" (Load Prior Checkpoint,
    empty prompt), "same" (Prior From Model: the patched fine-tune with the KSampler's negative — the
    identity), "same_empty" (Prior From Model on the fine-tune's *unpatched* MODEL with its CLIP's empty
    prompt: a prior that shares the fine-tune's BaseModel). ``guider``: "PerpNegGuider" or "BasicGuider".
    """
    g = graph()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=FT)
    pos = g.node("CLIPTextEncode", clip=ckpt.out(1), text=POSITIVE).out(0)
    neg = g.node("CLIPTextEncode", clip=ckpt.out(1), text=NEGATIVE).out(0)
    if positive_hooks:
        hook = g.node("CreateHookLora", lora_name="test_lora.safetensors", strength_model=1.0, strength_clip=1.0)
        pos = g.node("ConditioningSetProperties", cond_NEW=pos, strength=1.0, set_cond_area="default",
                     hooks=hook.out(0)).out(0)
    model = swap_chain(g, ckpt, neg, before=before, after=after, swap=swap, prior=prior, base=BASE)
    image = g.node("EmptyLatentImage", width=size, height=size, batch_size=batch).out(0)
    if guider is None:
        samples = g.node("KSampler", model=model, seed=seed, steps=steps, cfg=cfg, sampler_name=sampler,
                         scheduler="simple", positive=pos, negative=neg, latent_image=image, denoise=1.0).out(0)
    else:
        if guider == "PerpNegGuider":
            empty = g.node("CLIPTextEncode", clip=ckpt.out(1), text="").out(0)
            guide = g.node("PerpNegGuider", model=model, positive=pos, negative=neg, empty_conditioning=empty,
                           cfg=cfg, neg_scale=neg_scale)
        else:
            guide = g.node(guider, model=model, conditioning=pos)
        samples = g.node("SamplerCustomAdvanced", noise=g.node("RandomNoise", noise_seed=seed).out(0),
                         guider=guide.out(0), sampler=g.node("KSamplerSelect", sampler_name=sampler).out(0),
                         sigmas=g.node("BasicScheduler", model=model, scheduler="simple", steps=steps,
                                       denoise=1.0).out(0),
                         latent_image=image).out(0)
    g.node("SaveLatent", samples=samples, filename_prefix="latents/guidance")
    return g.finalize()


# -- the independent side ---------------------------------------------------------------------------------
def eps(net: reference.Net, x: torch.Tensor, sigma: float, context: torch.Tensor, transformer_options=None):
    """ε of a raw UNet, optionally with transformer_options (a host node's patches) in its forward."""
    if not transformer_options:
        return net.eps(x, sigma, context)
    c_in = 1.0 / (sigma ** 2 + 1.0) ** 0.5
    t = torch.full((x.shape[0],), reference.timestep(sigma), dtype=torch.float32)
    options = {**transformer_options, "sigmas": torch.full((x.shape[0],), float(sigma))}  # as _calc_cond_batch
    with torch.no_grad():
        return net.unet(x * c_in, t, context=context.expand(x.shape[0], -1, -1), transformer_options=options).float()


@pytest.fixture(scope="module")
def ref(checkpoint_cache):
    ft_unet, ft_clip = reference.load(str(checkpoint_cache / FT))
    prior_unet, prior_clip = reference.load(str(checkpoint_cache / BASE))
    lora_unet = copy.deepcopy(ft_unet)
    with torch.no_grad():
        lora_unet.out[2].weight += checkpoints.lora_diff()
    return SimpleNamespace(
        ft=reference.Net(ft_unet, "eps"), prior=reference.Net(prior_unet, "eps"), ft_lora=reference.Net(lora_unet, "eps"),
        c=reference.encode(ft_clip, POSITIVE), n=reference.encode(ft_clip, NEGATIVE), e=reference.encode(ft_clip, ""),
        u=reference.encode(prior_clip, ""))


def denoised(net, x, sigma, context, transformer_options=None):
    return x - sigma * eps(net, x, sigma, context, transformer_options)


def sample(ref, combine, shape: tuple, *, seed: int = 7, steps: int = 3) -> torch.Tensor:
    """Euler over ``combine(x, sigma, c, p)``: c the fine-tune's cond, p the prior's ∅ (both denoised)."""
    return reference.euler(lambda x, s: combine(x, s, denoised(ref.ft, x, s, ref.c), denoised(ref.prior, x, s, ref.u)),
                           shape, seed=seed, steps=steps)


def eq7(x, sigma, c, p):
    return p + CFG * (c - p)


@functools.lru_cache(maxsize=1)
def host_patcher(path: str):
    """The fine-tune as the host's own ModelPatcher, in this process: host nodes patch it for the reference."""
    import comfy.sd

    patcher = comfy.sd.load_checkpoint_guess_config(path, output_vae=False, output_clip=False)[0]
    patcher.model.current_patcher = patcher  # as during sampling (TemporalScoreRescaling reads it)
    return patcher


@functools.lru_cache(maxsize=None)
def host_class(node_id: str):
    """The host's class of a node id, imported in this process from the file that defines it."""
    import importlib

    for path in [comfy_dir() / "nodes.py", *sorted((comfy_dir() / "comfy_extras").glob("*.py"))]:
        source = path.read_text(errors="replace")
        if node_id not in source:
            continue
        for cls_name, found in _node_ids(ast.parse(source), source).items():
            if found == node_id:
                module = "nodes" if path.name == "nodes.py" else f"comfy_extras.{path.stem}"
                return getattr(importlib.import_module(module), cls_name)
    raise LookupError(node_id)


def host_node(node_id: str, model, **inputs):
    """Run a host node's function in this process on ``model`` (None: a node without a MODEL input)."""
    cls = host_class(node_id)
    args = () if model is None else (model,)
    if hasattr(cls, "define_schema"):  # V3
        return cls.execute(*args, **inputs).args[0]
    return getattr(cls(), cls.FUNCTION)(*args, **inputs)[0]


def host_cfg(options: dict, base) -> callable:
    """The host's own CFG step (pre-CFG list, cfg_function: sampler_cfg_function + post-CFG list) as ``combine``."""
    import comfy.samplers

    lists = [[{"uuid": "cond"}], [{"uuid": "uncond"}]]  # present, not None: nodes skip None lists

    def combine(x, sigma, c, p):
        sig = torch.full((x.shape[0],), float(sigma))
        out = [c, p]
        for fn in options.get("sampler_pre_cfg_function", []):
            out = fn({"conds": lists, "conds_out": out, "cond_scale": CFG, "timestep": sig, "input": x,
                      "sigma": sig, "model": base, "model_options": options})
        return comfy.samplers.cfg_function(base, out[0], out[1], CFG, x, sig, model_options=options,
                                           cond=lists[0], uncond=lists[1])
    return combine


_PLAIN: dict = {}


def plain_swap(comfy_server, batch: int = 1, **kw) -> torch.Tensor:
    """The swapped result without the node under test (one server run per setting)."""
    key = (batch, tuple(sorted(kw.items())))
    if key not in _PLAIN:
        _PLAIN[key] = latent(comfy_server, build(batch=batch, **kw))
    return _PLAIN[key]


# -- CFG formula, pre-CFG and post-CFG nodes: the host's formula with the prior's uncond ---------------------
FORMULA_NODES = {
    # node: (inputs, latent batch)
    "CFGZeroStar": ({}, 1),
    "TCFG": ({}, 1),
    "Mahiro": ({}, 1),
    "RenormCFG": ({"cfg_trunc": 100.0, "renorm_cfg": 1.0}, 1),
    "FreSca": ({"scale_low": 1.0, "scale_high": 1.5, "freq_cutoff": 2}, 1),
    "Epsilon Scaling": ({"scaling_factor": 1.05}, 1),
    "TemporalScoreRescaling": ({"tsr_k": 0.5, "tsr_sigma": 1.0}, 1),
    "VideoLinearCFGGuidance": ({"min_cfg": 1.0}, 2),
    "VideoTriangleCFGGuidance": ({"min_cfg": 1.0}, 3),
    "LatentApplyOperationCFG": ({"operation": "LatentOperationTonemapReinhard"}, 1),
}


@pytest.mark.parametrize("node", sorted(FORMULA_NODES))
def test_formula_node_applies_to_the_prior_uncond(comfy_server, ref, checkpoint_cache, node):
    inputs, batch = FORMULA_NODES[node]
    server_inputs, host_inputs = dict(inputs), dict(inputs)
    if "operation" in inputs:  # a LATENT_OPERATION made by another node
        server_inputs = {"operation": ["op", 0]}
        host_inputs = {"operation": host_node(inputs["operation"], None, multiplier=1.0)}
    prompt = build(after=((node, server_inputs),), batch=batch)
    if "operation" in inputs:
        prompt["op"] = {"class_type": inputs["operation"], "inputs": {"multiplier": 1.0}}
    result = latent(comfy_server, prompt)
    patcher = host_node(node, host_patcher(str(checkpoint_cache / FT)), **host_inputs)
    expected = sample(ref, host_cfg(patcher.model_options, patcher.model), tuple(result.shape))
    assert rel_err(result, expected) < REL, rel_err(result, expected)
    assert rel_err(result, plain_swap(comfy_server, batch)) > 100 * REL, f"{node} had no effect on the swapped result"


# -- guiders ----------------------------------------------------------------------------------------------
def test_perp_neg_guider_prior_supplies_the_empty_base(comfy_server, ref):
    """PerpNegGuider: the prior's ∅ is perp-neg's base e; the negative *prompt* n stays the fine-tune's."""
    neg_scale = 1.5
    result = latent(comfy_server, build(guider="PerpNegGuider", neg_scale=neg_scale))

    def perp_neg(x, sigma, c, p):
        n = denoised(ref.ft, x, sigma, ref.n)
        pos, neg = c - p, n - p
        perp = neg - ((neg * pos).sum() / torch.norm(pos) ** 2) * pos
        return p + CFG * (pos - neg_scale * perp)

    expected = sample(ref, perp_neg, tuple(result.shape))
    assert rel_err(result, expected) < REL, rel_err(result, expected)
    stock = latent(comfy_server, build(guider="PerpNegGuider", neg_scale=neg_scale, swap=False))
    assert rel_err(result, stock) > 1000 * REL


def test_basic_guider_has_no_uncond_so_the_prior_is_not_used(comfy_server):
    before = len(counts(comfy_server))
    result = latent(comfy_server, build(guider="BasicGuider"))
    assert counts(comfy_server)[before:] == [(0, 3)]
    assert "has no negative/uncond conditioning" in comfy_server.log_text()
    assert torch.equal(result, latent(comfy_server, build(guider="BasicGuider", swap=False)))


def test_cfg_one_with_an_ordinary_sampler_never_runs_the_prior(comfy_server):
    before = len(counts(comfy_server))
    result = latent(comfy_server, build(cfg=1.0, seed=3))
    assert counts(comfy_server)[before:] == [(0, 3)]
    assert torch.equal(result, latent(comfy_server, build(cfg=1.0, seed=3, swap=False)))


def test_cfg_pp_sampler_at_cfg_one_renoises_with_the_prior(comfy_server, ref):
    """CFG++ (euler_cfg_pp) renoises along its uncond even at cfg 1: the prior supplies it at every step."""
    before = len(counts(comfy_server))
    result = latent(comfy_server, build(cfg=1.0, sampler="euler_cfg_pp"))
    assert counts(comfy_server)[before:] == [(3, 3)]
    sigmas = reference.simple_schedule(3)
    x = reference.initial_noise(tuple(result.shape), 7) * (1.0 + sigmas[0] ** 2) ** 0.5
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        c, p = denoised(ref.ft, x, sigma, ref.c), denoised(ref.prior, x, sigma, ref.u)
        x = c if sigma_next == 0 else c + sigma_next * (x - p) / sigma  # cfg 1: denoised = c; d = (x − p)/σ
    expected = x / reference.SD15_SCALE
    assert rel_err(result, expected) < REL, rel_err(result, expected)
    stock = latent(comfy_server, build(cfg=1.0, sampler="euler_cfg_pp", swap=False))
    assert rel_err(result, stock) > 1000 * REL


@pytest.mark.parametrize("sampler", ["dpmpp_2m_cfg_pp", "res_multistep_cfg_pp"])
def test_cfg_pp_samplers_identity_prior_equals_stock(comfy_server, sampler):
    """With the fine-tune as its own prior (same negative) the CFG++ samplers give their stock result at cfg 1."""
    same = latent(comfy_server, build(cfg=1.0, sampler=sampler, prior="same"))
    stock = latent(comfy_server, build(cfg=1.0, sampler=sampler, swap=False))
    assert rel_err(same, stock) < REL, rel_err(same, stock)
    assert rel_err(latent(comfy_server, build(cfg=1.0, sampler=sampler)), stock) > 1000 * REL


# -- refusals ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["before", "after"])
def test_self_attention_guidance_is_refused_before_sampling(comfy_server, where):
    sag = (("SelfAttentionGuidance", {"scale": 0.5, "blur_sigma": 2.0}),)
    message = refused(comfy_server, build(**{where: sag}))
    assert "Self-Attention Guidance cannot be combined with Prior Swap CFG" in message, message
    assert "Remove Self-Attention Guidance" in message
    assert "AttributeError" not in message


@pytest.mark.parametrize("where", ["before", "after"])
def test_deprecated_perp_neg_node_is_refused_pointing_to_perp_neg_guider(comfy_server, where):
    # PerpNeg takes its own empty conditioning: a node added to the built prompt.
    prompt = build(**{where: (("PerpNeg", {"empty_conditioning": ["empty", 0], "neg_scale": 1.0}),)})
    ckpt = next(k for k, v in prompt.items() if v["class_type"] == "CheckpointLoaderSimple")
    prompt["empty"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": [ckpt, 1], "text": ""}}
    message = refused(comfy_server, prompt)
    assert "The deprecated Perp-Neg node (PerpNeg) cannot be combined with Prior Swap CFG" in message, message
    assert "Use PerpNegGuider" in message


def test_insight_into_guider_without_negative_is_refused(comfy_server):
    g = graph()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=FT)
    pos = g.node("CLIPTextEncode", clip=ckpt.out(1), text=POSITIVE)
    prior = g.node("PriorCheckpointLoader", ckpt_name=BASE, negative_prompt="")
    swapped_model = g.node("PriorSwapCFG", model=ckpt.out(0), prior=prior.out(0), prior_weight=1.0,
                           start_percent=0.0, end_percent=1.0)
    measured = g.node("PriorSwapInsight", model=swapped_model.out(0))
    guide = g.node("PriorSwapGuider", model=measured.out(0), prior=prior.out(0), positive=pos.out(0), cfg=CFG,
                   prior_weight=1.0, start_percent=0.0, end_percent=1.0)
    samples = g.node("SamplerCustomAdvanced", noise=g.node("RandomNoise", noise_seed=1).out(0), guider=guide.out(0),
                     sampler=g.node("KSamplerSelect", sampler_name="euler").out(0),
                     sigmas=g.node("BasicScheduler", model=ckpt.out(0), scheduler="simple", steps=2, denoise=1.0).out(0),
                     latent_image=g.node("EmptyLatentImage", width=64, height=64, batch_size=1).out(0))
    g.node("SaveLatent", samples=samples.out(0), filename_prefix="latents/guidance")
    message = refused(comfy_server, g.finalize())
    assert "PriorSwapGuider: the model comes from Prior Swap Insight" in message, message
    assert "connect 'negative'" in message


# -- extra forwards ----------------------------------------------------------------------------------------
def test_perturbed_attention_guidance_stays_on_the_fine_tune(comfy_server, ref):
    """PAG: p + s(c − p) + scale·(c − c_pag), c_pag = the fine-tune's cond with middle self-attention = v."""
    scale = 2.0
    result = latent(comfy_server, build(after=(("PerturbedAttentionGuidance", {"scale": scale}),)))
    pag_options = {"patches_replace": {"attn1": {("middle", 0): lambda q, k, v, extra_options, mask=None: v}}}

    def pag(x, sigma, c, p):
        return p + CFG * (c - p) + scale * (c - denoised(ref.ft, x, sigma, ref.c, pag_options))

    expected = sample(ref, pag, tuple(result.shape))
    assert rel_err(result, expected) < REL, rel_err(result, expected)


UNET_PATCHES = {
    "FreeU": {"b1": 1.3, "b2": 1.4, "s1": 0.9, "s2": 0.2},
    "FreeU_V2": {"b1": 1.3, "b2": 1.4, "s1": 0.9, "s2": 0.2},
    "PatchModelAddDownscale": {"block_number": 1, "downscale_factor": 2.0, "start_percent": 0.0, "end_percent": 1.0,
                               "downscale_after_skip": True, "downscale_method": "bicubic",
                               "upscale_method": "bicubic"},
}


@pytest.mark.parametrize("node", sorted(UNET_PATCHES))
def test_unet_patch_acts_on_the_fine_tune_only(comfy_server, ref, checkpoint_cache, node):
    """A MODEL patch belongs to the model it patched: the fine-tune's cond gets it, the prior does not."""
    inputs = UNET_PATCHES[node]
    result = latent(comfy_server, build(before=((node, inputs),)))
    patcher = host_node(node, host_patcher(str(checkpoint_cache / FT)), **inputs)
    options = patcher.model_options["transformer_options"]

    def freeu(x, sigma, c, p):
        return p + CFG * (denoised(ref.ft, x, sigma, ref.c, options) - p)

    expected = sample(ref, freeu, tuple(result.shape))
    assert rel_err(result, expected) < REL, rel_err(result, expected)
    assert rel_err(result, plain_swap(comfy_server)) > 100 * REL, f"{node} had no effect"


# -- hooks -------------------------------------------------------------------------------------------------
def test_positive_hook_lora_does_not_leak_into_a_prior_sharing_the_base_model(comfy_server, ref):
    """Prior From Model on the fine-tune's own MODEL (same BaseModel) + a LoRA hook on the positive only."""
    result = latent(comfy_server, build(positive_hooks=True, prior="same_empty"))

    def combine(x, sigma, c, p):
        cond = denoised(ref.ft_lora, x, sigma, ref.c)
        unhooked = denoised(ref.ft, x, sigma, ref.e)
        return unhooked + CFG * (cond - unhooked)

    expected = sample(ref, combine, tuple(result.shape))
    assert rel_err(result, expected) < REL, rel_err(result, expected)


# -- ControlNet -------------------------------------------------------------------------------------------
CONTROLNET = "sd15_controlnet_standin.safetensors"


def _write_controlnet(path: Path) -> Path:
    """A ControlNet with the stand-in UNet's config (random weights, zero convs included), in the .pth layout
    (``control_model.`` keys) from which ComfyUI's loader detects an SD1.5 ControlNet."""
    if path.exists():
        return path
    import comfy.ops
    from comfy.cldm.cldm import ControlNet
    from safetensors.torch import save_file

    config = checkpoints.unet_config(4, [1, 2])
    config.pop("out_channels")
    with torch.device("meta"):
        net = ControlNet(hint_channels=3, **config, operations=comfy.ops.disable_weight_init)
    weights = checkpoints._random({k: tuple(v.shape) for k, v in net.state_dict().items()}, 400, "control_model.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(weights, str(tmp))
    tmp.replace(path)
    return path


@pytest.fixture(scope="module")
def controlnet(comfy_server, checkpoint_cache):
    # Not in checkpoint_cache: every file there is linked into the checkpoints folder.
    target = _write_controlnet(ROOT / ".host" / "cache" / f"controlnet-{checkpoints.cache_key()}" / CONTROLNET)
    link = comfy_server.base / "models" / "controlnet" / CONTROLNET
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(target)
    return CONTROLNET


def controlnet_build(name: str, *, swap: bool, negative_controlled: bool) -> dict:
    """ControlNetApplyAdvanced on the positive (and, if ``negative_controlled``, the negative) of the fine-tune."""
    g = graph()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=FT)
    pos = g.node("CLIPTextEncode", clip=ckpt.out(1), text=POSITIVE).out(0)
    neg = g.node("CLIPTextEncode", clip=ckpt.out(1), text=NEGATIVE).out(0)
    hint = g.node("EmptyImage", width=64, height=64, batch_size=1, color=0x80C040).out(0)
    control = g.node("ControlNetApplyAdvanced", positive=pos, negative=neg,
                     control_net=g.node("ControlNetLoader", control_net_name=name).out(0), image=hint,
                     strength=1.0, start_percent=0.0, end_percent=1.0)
    model = ckpt.out(0)
    if swap:
        prior = g.node("PriorFromModel", model=ckpt.out(0), negative=neg).out(0)
        model = g.node("PriorSwapCFG", model=model, prior=prior, prior_weight=1.0, start_percent=0.0,
                       end_percent=1.0).out(0)
    image = g.node("EmptyLatentImage", width=64, height=64, batch_size=1).out(0)
    samples = g.node("KSampler", model=model, seed=7, steps=3, cfg=CFG, sampler_name="euler", scheduler="simple",
                     positive=control.out(0), negative=control.out(1) if negative_controlled else neg,
                     latent_image=image, denoise=1.0).out(0)
    g.node("SaveLatent", samples=samples, filename_prefix="latents/guidance")
    return g.finalize()


def test_controlnet_acts_on_the_fine_tune_cond_only(comfy_server, controlnet):
    """The prior runs its own conditioning, without the fine-tune's ControlNet: with the fine-tune as its own
    prior, the swap equals stock CFG with the control on the positive only (the negative uncontrolled)."""
    swapped_both = latent(comfy_server, controlnet_build(controlnet, swap=True, negative_controlled=True))
    stock_positive_only = latent(comfy_server, controlnet_build(controlnet, swap=False, negative_controlled=False))
    assert rel_err(swapped_both, stock_positive_only) < REL, rel_err(swapped_both, stock_positive_only)
    stock_both = latent(comfy_server, controlnet_build(controlnet, swap=False, negative_controlled=True))
    assert rel_err(stock_both, stock_positive_only) > 1000 * REL  # the control acts on the uncond in stock


# -- context windows ---------------------------------------------------------------------------------------
WINDOWS = {"context_length": 2, "context_overlap": 1, "context_schedule": "standard_static", "context_stride": 1,
           "closed_loop": False, "fuse_method": "pyramid"}


def test_context_windows_evaluate_the_prior_per_window(comfy_server, ref):
    """Batch 4 in windows of 2: each window's prior uncond is fused with the same weights as the fine-tune's.

    The SD1.5 UNet treats batch items independently, so the fused result equals Eq. 7 on the whole batch.
    """
    before = len(counts(comfy_server))
    result = latent(comfy_server, build(batch=4, after=(("ContextWindowsManual", {**WINDOWS, "dim": 0}),)))
    prior_calls, calls = counts(comfy_server)[before:][0]
    assert prior_calls == calls > 3, (prior_calls, calls)  # one per window and step
    expected = sample(ref, eq7, tuple(result.shape))
    assert rel_err(result, expected) < REL, rel_err(result, expected)
    stock = latent(comfy_server, build(batch=4, swap=False, after=(("ContextWindowsManual", {**WINDOWS, "dim": 0}),)))
    assert rel_err(result, stock) > 1000 * REL


def test_wan_context_windows_identity_prior_equals_stock(comfy_server):
    """WanContextWindowsManual (windows along dim 2): the fine-tune as its own prior gives the stock windows."""
    wan = (("WanContextWindowsManual", {k: v for k, v in {**WINDOWS, "context_length": 5, "context_overlap": 1}.items()}),)
    same = latent(comfy_server, build(after=wan, prior="same"))
    stock = latent(comfy_server, build(after=wan, swap=False))
    assert rel_err(same, stock) < REL, rel_err(same, stock)
    assert rel_err(stock, latent(comfy_server, build(swap=False))) > 1000 * REL  # the windows act


# -- caches ------------------------------------------------------------------------------------------------
def test_lazy_cache_identity_prior_equals_stock(comfy_server):
    cache = (("LazyCache", {"reuse_threshold": 2.0, "start_percent": 0.0, "end_percent": 1.0, "verbose": True}),)
    same = latent(comfy_server, build(after=cache, prior="same", steps=6))
    stock = latent(comfy_server, build(after=cache, swap=False, steps=6))
    assert rel_err(same, stock) < REL, rel_err(same, stock)
    assert rel_err(stock, latent(comfy_server, build(swap=False, steps=6))) > 1000 * REL  # the cache skipped steps


def test_easy_cache_caches_the_fine_tune_and_evaluates_the_prior_exactly(comfy_server):
    cache = (("EasyCache", {"reuse_threshold": 2.0, "start_percent": 0.0, "end_percent": 1.0, "verbose": True}),)
    before = len(counts(comfy_server))
    cached = latent(comfy_server, build(after=cache, steps=6))
    prior_calls, calls = counts(comfy_server)[before:][0]
    assert prior_calls == calls == 6
    assert rel_err(cached, plain_swap(comfy_server, steps=6)) > 1000 * REL  # the fine-tune's cond was cached


# -- DiT nodes on the SD3 stand-in ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sd3(comfy_server):
    paths = foreign_models.write_all(ROOT / ".host" / "cache" / f"foreign-{foreign_models.cache_key()}")
    link = comfy_server.base / "models" / "diffusion_models" / "sd3_tiny.safetensors"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(paths["sd3_tiny"])
    comfy_server.post("/object_info")  # nothing cached: UNETLoader lists the folder per request
    return "sd3_tiny.safetensors"


def sd3_build(sd3: str, *, swap: bool, patch: tuple = ()) -> dict:
    """SD3 stand-in (16-channel flow MMDiT, depth 2) with the SD1.5 stand-in's text encoder (768 wide)."""
    g = graph()
    clip = g.node("CheckpointLoaderSimple", ckpt_name=FT).out(1)
    pos = g.node("CLIPTextEncode", clip=clip, text=POSITIVE).out(0)
    neg = g.node("CLIPTextEncode", clip=clip, text=NEGATIVE).out(0)
    model = base = g.node("UNETLoader", unet_name=sd3, weight_dtype="default").out(0)
    for node, inputs in patch:
        model = g.node(node, model=model, **inputs).out(0)
    if swap:
        prior = g.node("PriorFromModel", model=base, negative=neg).out(0)
        model = g.node("PriorSwapCFG", model=model, prior=prior, prior_weight=1.0, start_percent=0.0,
                       end_percent=1.0).out(0)
    image = g.node("EmptySD3LatentImage", width=64, height=64, batch_size=1).out(0)
    samples = g.node("KSampler", model=model, seed=5, steps=3, cfg=CFG, sampler_name="euler", scheduler="simple",
                     positive=pos, negative=neg, latent_image=image, denoise=1.0).out(0)
    g.node("SaveLatent", samples=samples, filename_prefix="latents/guidance")
    return g.finalize()


SLG_SIMPLE = ("SkipLayerGuidanceDiTSimple", {"double_layers": "1", "single_layers": "", "start_percent": 0.0,
                                             "end_percent": 1.0})
SLG = ("SkipLayerGuidanceDiT", {"double_layers": "1", "single_layers": "", "scale": 3.0, "start_percent": 0.0,
                                "end_percent": 1.0, "rescaling_scale": 0.0})


@pytest.mark.parametrize("node", [SLG_SIMPLE, SLG, ("SkipLayerGuidanceSD3", {"layers": "1", "scale": 3.0,
                                                                              "start_percent": 0.0, "end_percent": 1.0})],
                         ids=lambda n: n[0])
def test_skip_layer_guidance_identity_prior_keeps_its_effect(comfy_server, sd3, node):
    """The fine-tune as its own prior: SLG Simple's skipped blocks are skipped in the prior's uncond too, and
    SLG / SLG SD3 stay on the fine-tune's cond; both equal stock SLG, which differs from no SLG."""
    same = latent(comfy_server, sd3_build(sd3, swap=True, patch=(node,)))
    stock = latent(comfy_server, sd3_build(sd3, swap=False, patch=(node,)))
    assert rel_err(same, stock) < REL, rel_err(same, stock)
    assert rel_err(stock, latent(comfy_server, sd3_build(sd3, swap=False))) > 1000 * REL


def test_slg_simple_with_a_prior_of_another_architecture_is_refused(checkpoint_cache):
    """check_run on the host's own objects: SLG Simple on an MMDiT, a UNet prior (no such blocks)."""
    import comfy.sd
    import comfy.samplers

    from support.comfy_env import pack_module

    composition = pack_module("py.composition")
    errors = pack_module("py.errors")
    paths = foreign_models.write_all(ROOT / ".host" / "cache" / f"foreign-{foreign_models.cache_key()}")
    dit = comfy.sd.load_diffusion_model(str(paths["sd3_tiny"]))
    patched = host_node("SkipLayerGuidanceDiTSimple", dit, double_layers="1", single_layers="", start_percent=0.0,
                        end_percent=1.0)
    guider = comfy.samplers.CFGGuider(patched)
    guider.conds = {"positive": [{}], "negative": [{}]}
    with pytest.raises(errors.PriorSwapError) as info:
        composition.check_run(guider, host_patcher(str(checkpoint_cache / FT)), 1.0)
    message = str(info.value)
    assert "SkipLayerGuidanceDiTSimple cannot be combined with this prior" in message
    assert "another architecture (UNetModel) than the model (" in message and "MMDIT" in message.upper()
    composition.check_run(guider, dit, 1.0)  # the same family is accepted


# -- the table cannot drift -------------------------------------------------------------------------------------
def table_rows() -> dict[str, str]:
    """docs/compatibility.md: node id (first column, in backticks) → the row's text."""
    rows = {}
    for line in TABLE.read_text().splitlines():
        if not line.startswith("| `"):
            continue
        first = line.split("|")[1]
        for name in re.findall(r"`([^`]+)`", first):
            rows[name] = line
    return rows


# What makes a host node a guidance/sampling node (issue 16 item 2): the model_options keys read while
# sampling, the wrapper and patch APIs, guiders and the uncond-reading sampler hooks.
MARKERS = (
    "sampler_cfg_function", "sampler_pre_cfg_function", "post_cfg_function", "cfg_pp",
    "sampler_calc_cond_batch_function", "disable_cfg1_optimization", "model_function_wrapper",
    "set_model_unet_function_wrapper", "denoise_mask_function", "context_handler", "create_prepare_sampling_wrapper",
    "add_wrapper", "WrappersMP", "set_torch_compile_wrapper", "CFGGuider", "Guider_", "predict_noise",
    "patches_replace", "set_model_attn1_replace", "set_model_attn2_replace", "set_model_patch_replace",
    "set_model_attn1_patch", "set_model_attn2_patch", "set_model_attn1_output_patch", "set_model_attn2_output_patch",
    "set_model_input_block_patch", "set_model_output_block_patch", "set_model_double_block_patch",
    "set_model_post_input_patch", "set_model_emb_patch", "set_model_forward_timestep_embed_patch",
    "set_model_input_block_patch_after_skip", "calc_cond_batch", "set_hooks_for_conditioning", "comfy.hooks",
    "easycache", "control_apply_to_uncond", "set_cond_hint", "reference_latents",
    "add_object_patch(\"model_sampling\"", "add_object_patch('model_sampling'",
)
SOURCE_FILES = ("nodes.py", "comfy_extras/*.py")


def _node_ids(tree: ast.Module, source: str) -> dict[str, str]:
    """class name → node id: V3 (``node_id="…"``), the hook nodes' ``NodeId = "…"``, V1 NODE_CLASS_MAPPINGS."""
    ids: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            segment = ast.get_source_segment(source, node) or ""
            found = re.search(r'(?:node_id|NodeId)\s*=\s*["\']([^"\']+)["\']', segment)
            if found:
                ids[node.name] = found.group(1)
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "NODE_CLASS_MAPPINGS" for t in node.targets):
            if isinstance(node.value, ast.Dict):
                for k, v in zip(node.value.keys, node.value.values):
                    if isinstance(k, ast.Constant) and isinstance(v, ast.Name):
                        ids.setdefault(v.id, k.value)
    return ids


@functools.lru_cache(maxsize=1)
def host_sources() -> list[tuple[Path, str, ast.Module]]:
    host = comfy_dir()
    out = []
    for pattern in SOURCE_FILES:
        for path in sorted(host.glob(pattern)):
            source = path.read_text(errors="replace")
            out.append((path, source, ast.parse(source)))
    return out


def _flagged_source(name: str, classes: dict, functions: dict, seen: set) -> str:
    """A class's source plus its base classes' (in any host file) and the module functions it calls."""
    cls, source = classes[name]
    text = ast.get_source_segment(source, cls) or ""
    for base in cls.bases:
        base_name = getattr(base, "attr", None) or getattr(base, "id", None)
        if base_name in classes and base_name not in seen:
            seen.add(base_name)
            text += _flagged_source(base_name, classes, functions, seen)
    for call in re.findall(r"\b([A-Za-z_][A-Za-z0-9_]*)\(", text):
        if call in seen:
            continue
        if call in functions:
            seen.add(call)
            text += ast.get_source_segment(functions[call][1], functions[call][0]) or ""
        elif call in classes:  # another node class it runs, e.g. SkipLayerGuidanceDiT().execute(...)
            seen.add(call)
            text += _flagged_source(call, classes, functions, seen)
    return text


@functools.lru_cache(maxsize=1)
def guidance_nodes_in_source() -> dict[str, str]:
    """node id → the marker that makes it a guidance/sampling node, read from the host's source."""
    classes, functions = {}, {}
    for _path, source, tree in host_sources():
        for n in ast.walk(tree):
            if isinstance(n, ast.ClassDef):
                classes.setdefault(n.name, (n, source))
        for n in tree.body:
            if isinstance(n, ast.FunctionDef):
                functions.setdefault(n.name, (n, source))
    found: dict[str, str] = {}
    for _path, source, tree in host_sources():
        for cls_name, node_id in _node_ids(tree, source).items():
            if classes.get(cls_name, (None, None))[1] is not source:
                continue
            text = _flagged_source(cls_name, classes, functions, {cls_name})
            hit = next((m for m in MARKERS if m in text), None)
            if hit:
                found[node_id] = hit
    return found


def cfg_pp_samplers() -> list[str]:
    import comfy.samplers

    return [name for name in comfy.samplers.KSAMPLER_NAMES if "cfg_pp" in name]


def test_every_guidance_node_of_the_host_has_a_row(comfy_server):
    """Nodes the server lists that change guidance or sampling (by their source) or output a GUIDER, and every
    CFG++ sampler name: each must have a row in docs/compatibility.md."""
    info = comfy_server.get("/object_info", timeout=120)
    rows = table_rows()
    flagged = guidance_nodes_in_source()
    guiders = {name for name, spec in info.items() if "GUIDER" in (spec.get("output") or [])
               and not spec.get("python_module", "").startswith("custom_nodes")}
    required = ({name for name in flagged if name in info} | guiders | set(cfg_pp_samplers()))
    missing = sorted(required - set(rows))
    assert not missing, f"host nodes without a row in {TABLE.name}: {missing} (markers: " \
                        f"{ {m: flagged.get(m) for m in missing} })"
    # Host nodes the issue names must be in the server's list (a row for a node that no longer exists is stale).
    host_rows = {name for name, line in rows.items() if "(pack)" not in line}
    stale = sorted(n for n in host_rows if n not in info and n not in cfg_pp_samplers() and n != "sample_euler_pp")
    assert not stale, f"rows for nodes the host does not have: {stale}"


def test_every_guider_class_and_predict_noise_override_is_known():
    """A new CFGGuider subclass or predict_noise override in the host must get a row too."""
    host = comfy_dir()
    overrides = set()
    for path in [host / "comfy" / "samplers.py", *sorted((host / "comfy_extras").glob("*.py"))]:
        tree = ast.parse(path.read_text(errors="replace"))
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            bases = {getattr(b, "attr", getattr(b, "id", "")) for b in cls.bases}
            methods = {f.name for f in cls.body if isinstance(f, ast.FunctionDef)}
            if "CFGGuider" in bases or ("predict_noise" in methods and cls.name != "CFGGuider"):
                overrides.add(cls.name)
    known = {"Guider_Basic", "Guider_DualCFG", "Guider_PerpNeg"}
    assert overrides == known, f"guider classes changed: {sorted(overrides ^ known)}: add rows to {TABLE.name}"


def test_every_wrapper_type_and_model_option_is_accounted_for():
    """The host's wrapper types and the model_options keys sampling reads: a new one means a new way to hook in."""
    import comfy.patcher_extension

    wrappers = sorted(v for k, v in vars(comfy.patcher_extension.WrappersMP).items() if k.isupper())
    text = TABLE.read_text()
    assert not [w for w in wrappers if w not in text], [w for w in wrappers if w not in text]
    samplers = (comfy_dir() / "comfy" / "samplers.py").read_text()
    keys = sorted(set(re.findall(r'model_options(?:\.get\(|\[)\s*["\']([a-z_0-9]+)["\']', samplers)))
    assert not [k for k in keys if k not in text], [k for k in keys if k not in text]
