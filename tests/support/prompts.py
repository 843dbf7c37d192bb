"""API-format prompts for the tests, built with ComfyUI's own GraphBuilder."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

POSITIVE = "a watercolor fox in the snow"
NEGATIVE = "blurry"


def graph():
    from comfy_execution.graph_utils import GraphBuilder

    return GraphBuilder()


def swap_chain(g, ckpt, negative, *, before: tuple = (), after: tuple = (), swap: bool = True, prior: str = "base",
               prior_weight: float = 1.0, base: str = "sd15_base.safetensors"):
    """The checkpoint's MODEL → [before] → PriorSwapCFG → [after]: the MODEL output a sampler takes.

    ``before``/``after``: (node, inputs) pairs applied to the MODEL. ``prior``: "base" (Load Prior Checkpoint of
    ``base``, empty prompt), "same" (Prior From Model: the patched fine-tune with ``negative``, the sampler's
    own: the identity), "same_empty" (Prior From Model on the checkpoint's *unpatched* MODEL with its CLIP's
    empty prompt: a prior that shares the fine-tune's BaseModel). ``swap`` False: no PriorSwapCFG.
    """
    model = ckpt.out(0)
    for node, inputs in before:
        model = g.node(node, model=model, **inputs).out(0)
    if swap:
        if prior == "same":
            prior_out = g.node("PriorFromModel", model=model, negative=negative).out(0)
        elif prior == "same_empty":
            empty = g.node("CLIPTextEncode", clip=ckpt.out(1), text="").out(0)
            prior_out = g.node("PriorFromModel", model=ckpt.out(0), negative=empty).out(0)
        else:
            prior_out = g.node("PriorCheckpointLoader", ckpt_name=base, negative_prompt="").out(0)
        model = g.node("PriorSwapCFG", model=model, prior=prior_out, prior_weight=prior_weight, start_percent=0.0,
                       end_percent=1.0).out(0)
    for node, inputs in after:
        model = g.node(node, model=model, **inputs).out(0)
    return model

def text2img(ft: str = "sd15_finetune.safetensors", prior: str | None = "sd15_base.safetensors", *,
             cfg: float = 5.0, steps: int = 3, seed: int = 7, batch: int = 1, size: int = 64,
             prior_weight: float = 1.0, start_percent: float = 0.0, end_percent: float = 1.0,
             prior_negative: str = "", v_prior: bool = False, prior_from_model: str | None = None,
             post_cfg: str | None = None, sampler: str = "ksampler", swap: bool = True) -> dict:
    """Text-to-image with the stock KSampler (or SamplerCustomAdvanced) saving the latent.

    ``prior_from_model``: "same" makes the prior from the fine-tune's own MODEL and negative.
    ``post_cfg``: a host node patching the sampled model after the swap (e.g. "CFGZeroStar").
    ``swap`` False gives the stock CFG run of the same graph.
    """
    g = graph()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=ft)
    pos = g.node("CLIPTextEncode", clip=ckpt.out(1), text=POSITIVE)
    neg = g.node("CLIPTextEncode", clip=ckpt.out(1), text=NEGATIVE)
    latent = g.node("EmptyLatentImage", width=size, height=size, batch_size=batch)
    model = ckpt.out(0)
    prior_node = None
    if swap:
        if prior_from_model == "same":
            prior_node = g.node("PriorFromModel", model=ckpt.out(0), negative=neg.out(0))
        elif v_prior:
            base = g.node("CheckpointLoaderSimple", ckpt_name=prior)
            vmodel = g.node("ModelSamplingDiscrete", model=base.out(0), sampling="v_prediction", zsnr=False)
            empty = g.node("CLIPTextEncode", clip=base.out(1), text=prior_negative)
            prior_node = g.node("PriorFromModel", model=vmodel.out(0), negative=empty.out(0))
        else:
            prior_node = g.node("PriorCheckpointLoader", ckpt_name=prior, negative_prompt=prior_negative)
        if sampler == "ksampler":
            model = g.node("PriorSwapCFG", model=model, prior=prior_node.out(0), prior_weight=prior_weight,
                           start_percent=start_percent, end_percent=end_percent).out(0)
    if post_cfg:
        model = g.node(post_cfg, model=model).out(0)
    if sampler == "ksampler":
        samples = g.node("KSampler", model=model, seed=seed, steps=steps, cfg=cfg, sampler_name="euler",
                         scheduler="simple", positive=pos.out(0), negative=neg.out(0),
                         latent_image=latent.out(0), denoise=1.0).out(0)
    else:
        if swap:
            guider = g.node("PriorSwapGuider", model=model, prior=prior_node.out(0), positive=pos.out(0), cfg=cfg,
                            prior_weight=prior_weight, start_percent=start_percent, end_percent=end_percent,
                            negative=neg.out(0))
        else:
            guider = g.node("CFGGuider", model=model, positive=pos.out(0), negative=neg.out(0), cfg=cfg)
        noise = g.node("RandomNoise", noise_seed=seed)
        sampler_node = g.node("KSamplerSelect", sampler_name="euler")
        sigmas = g.node("BasicScheduler", model=model, scheduler="simple", steps=steps, denoise=1.0)
        samples = g.node("SamplerCustomAdvanced", noise=noise.out(0), guider=guider.out(0),
                         sampler=sampler_node.out(0), sigmas=sigmas.out(0), latent_image=latent.out(0)).out(0)
    g.node("SaveLatent", samples=samples, filename_prefix="latents/test")
    return g.finalize()


def read_latent(path: Path) -> torch.Tensor:
    return load_file(str(path))["latent_tensor"].float()


def run_latent(server, prompt: dict) -> torch.Tensor:
    """Run a prompt on the server and return the one latent it saved."""
    entry = server.run(prompt)
    files = server.output_files(entry, "latents")
    assert len(files) == 1, entry
    return read_latent(files[0])


EDIT = "make it snowy"
EDIT_IMAGE = "ip2p_input.png"


def ip2p(prior: str | None = "sd15_base.safetensors", *, prior_from_model: str | None = None, swap: bool = True,
         cfg_conds: float = 7.5, cfg_cond2_negative: float = 1.5, style: str = "regular", seed: int = 3,
         steps: int = 3, prior_weight: float = 1.0) -> dict:
    """InstructPix2Pix editing with (PriorSwap)DualCFGGuider and SamplerCustomAdvanced, saving the latent.

    ``prior_from_model="same"``: the fine-tune is its own prior (with the guider's own negative).
    """
    g = graph()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name="ip2p_finetune.safetensors")
    image = g.node("LoadImage", image=EDIT_IMAGE)
    pos = g.node("CLIPTextEncode", clip=ckpt.out(1), text=EDIT)
    neg = g.node("CLIPTextEncode", clip=ckpt.out(1), text="")
    cond = g.node("InstructPixToPixConditioning", positive=pos.out(0), negative=neg.out(0), vae=ckpt.out(2),
                  pixels=image.out(0))
    common = dict(model=ckpt.out(0), cond1=cond.out(0), cond2=cond.out(1), negative=neg.out(0),
                  cfg_conds=cfg_conds, cfg_cond2_negative=cfg_cond2_negative, style=style)
    if not swap:
        guider = g.node("DualCFGGuider", **common)
    else:
        if prior_from_model == "same":
            prior_node = g.node("PriorFromModel", model=ckpt.out(0), negative=neg.out(0))
        else:
            prior_node = g.node("PriorCheckpointLoader", ckpt_name=prior, negative_prompt="")
        guider = g.node("PriorSwapDualCFGGuider", prior=prior_node.out(0), prior_weight=prior_weight,
                        start_percent=0.0, end_percent=1.0, **common)
    noise = g.node("RandomNoise", noise_seed=seed)
    sampler_node = g.node("KSamplerSelect", sampler_name="euler")
    sigmas = g.node("BasicScheduler", model=ckpt.out(0), scheduler="simple", steps=steps, denoise=1.0)
    samples = g.node("SamplerCustomAdvanced", noise=noise.out(0), guider=guider.out(0), sampler=sampler_node.out(0),
                     sigmas=sigmas.out(0), latent_image=cond.out(2)).out(0)
    g.node("SaveLatent", samples=samples, filename_prefix="latents/ip2p")
    return g.finalize()


def fine_tune(g, name: str = "sd15_finetune.safetensors"):
    """Load a checkpoint and encode the test prompts with its CLIP: (checkpoint, positive, negative) nodes."""
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=name)
    pos = g.node("CLIPTextEncode", clip=ckpt.out(1), text=POSITIVE)
    neg = g.node("CLIPTextEncode", clip=ckpt.out(1), text=NEGATIVE)
    return ckpt, pos, neg


def sample_latent(g, model, pos, neg, *, seed: int = 1, steps: int = 3, prefix: str = "latents/test") -> dict:
    """Finish a graph: a 64² KSampler (euler/simple, cfg 5) on ``model`` saving its latent; returns the prompt."""
    latent = g.node("EmptyLatentImage", width=64, height=64, batch_size=1)
    samples = g.node("KSampler", model=model, seed=seed, steps=steps, cfg=5.0, sampler_name="euler",
                     scheduler="simple", positive=pos.out(0), negative=neg.out(0), latent_image=latent.out(0),
                     denoise=1.0)
    g.node("SaveLatent", samples=samples.out(0), filename_prefix=prefix)
    return g.finalize()
