"""The shared UI-format workflows in ``workflows/``, defined in code (one per pairing of the pack's README).

``build_all`` builds every workflow with ``ui_workflow.UIGraph`` from a server's ``/object_info`` (input order,
widgets); ``dumps`` writes one as the frontend exports it (indent 2). ``tools/make_workflows.py`` writes the
files; ``tests/test_workflows.py`` fails when a committed file differs from what these definitions build, so
edit the definitions here, not the JSON.
"""
from __future__ import annotations

import json
from typing import Callable

from .ui_workflow import UIGraph

# The checkpoint files users have (models/checkpoints); the tests map them to stand-ins.
SD15_FINETUNE = "dreamshaper_8.safetensors"
SD15_BASE = "v1-5-pruned-emaonly.safetensors"
IP2P = "instruct-pix2pix-00-22000.safetensors"
SD21_V = "v2-1_768-ema-pruned.safetensors"
ZERO123 = "stable_zero123.ckpt"
SDXL_BASE = "sd_xl_base_1.0.safetensors"
SDXL_FINETUNE = "sdxl_finetune.safetensors"  # a placeholder: users pick their SDXL fine-tune in the loader
# Models of the other families, in the folders ComfyUI's own templates use (diffusion_models, text_encoders,
# clip_vision, vae); the names are those of the Comfy-Org repackaged files, or the original release.
WAN_I2V = "wan2.1_i2v_480p_14B_fp16.safetensors"
WAN_T2V = "wan2.1_t2v_14B_fp16.safetensors"
WAN_TEXT_ENCODER = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
WAN_CLIP_VISION = "clip_vision_h.safetensors"
WAN_VAE = "wan_2.1_vae.safetensors"
WAN_NEGATIVE = ("色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，"
                "丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，"
                "杂乱的背景，三条腿，背景人很多，倒着走")  # the host's Wan templates' negative prompt
QWEN_EDIT = "qwen_image_edit_fp8_e4m3fn.safetensors"
QWEN_IMAGE = "qwen_image_fp8_e4m3fn.safetensors"
QWEN_TEXT_ENCODER = "qwen_2.5_vl_7b_fp8_scaled.safetensors"
QWEN_VAE = "qwen_image_vae.safetensors"
PIXART_ALPHA = "PixArt-XL-2-1024-MS.pth"
T5XXL = "t5xxl_fp16.safetensors"
COSXL_EDIT = "cosxl_edit.safetensors"

POSITIVE = "a lighthouse on a cliff at sunset, oil painting"
EQ7 = "`eps = eps_prior(x, ∅) + γ · (eps_ft(x, c) − eps_prior(x, ∅))`"
PAPER = "*Unconditional Priors Matter!* (arXiv 2503.20240)"
PRIOR_GROUP_COLOR = "#7a4dbf"  # the pack's PRIOR link colour family (js/prior_swap.js)

GAMMA_SWEEP = (3.0, 5.0, 7.5)
INSIGHT_PLOT_SIZE = (640, 480)  # PriorSwapInsightPlot width, height


def _sd15_text2img(g: UIGraph, *, prior_col: int = 0):
    """Fine-tune loader, prompts, latent and the prior loader shared by the SD1.5 workflows."""
    ckpt = g.add("CheckpointLoaderSimple", col=0, title="Fine-tune (SD1.5)", ckpt_name=SD15_FINETUNE)
    prior = g.add("PriorCheckpointLoader", col=prior_col, title="Prior: SD1.5 base", ckpt_name=SD15_BASE,
                  negative_prompt="")
    pos = g.add("CLIPTextEncode", col=1, title="Positive", clip=ckpt[1], text=POSITIVE)
    neg = g.add("CLIPTextEncode", col=1, title="Negative (the fine-tune's own)", clip=ckpt[1], text="")
    latent = g.add("EmptyLatentImage", col=1, width=512, height=512, batch_size=1)
    return ckpt, prior, pos, neg, latent


def _prior_swap(g: UIGraph, model, prior, *, col: int):
    """Prior Swap CFG on ``model`` with the paper's settings: prior_weight 1 over the whole schedule."""
    return g.add("PriorSwapCFG", col=col, model=model, prior=prior[0], prior_weight=1.0, start_percent=0.0,
                 end_percent=1.0)


def _ksample_decode(g: UIGraph, model, positive, negative, latent, vae, *, col: int, decode_col: int,
                    title: str | None = None, steps: int, cfg: float, sampler_name: str, scheduler: str):
    """The stock KSampler (seed 42) on ``model`` and VAEDecode of its output; returns the decode."""
    sampler = g.add("KSampler", col=col, title=title, model=model, seed=42, steps=steps, cfg=cfg,
                    sampler_name=sampler_name, scheduler=scheduler, positive=positive, negative=negative,
                    latent_image=latent, denoise=1.0)
    return g.add("VAEDecode", col=decode_col, samples=sampler[0], vae=vae)


def _ip2p_conditioning(g: UIGraph, ckpt):
    """The image to edit and the instruction through InstructPixToPixConditioning; returns (empty text, its node)."""
    image = g.add("LoadImage", col=1, title="Image to edit", image="example.png")
    g.skip(1, 240)  # LoadImage grows a preview of the picture
    instruction = g.add("CLIPTextEncode", col=1, title="Edit instruction", clip=ckpt[1],
                        text="make it a winter scene")
    empty = g.add("CLIPTextEncode", col=1, title="Empty text", clip=ckpt[1], text="")
    cond = g.add("InstructPixToPixConditioning", col=2, positive=instruction[0], negative=empty[0], vae=ckpt[2],
                 pixels=image[0])
    return empty, cond


def _sample_with_guider(g: UIGraph, guider, ckpt, latent, *, steps: int, prefix: str, noise_col: int,
                        model=None, vae=None, scheduler: str = "normal", col: int = 3) -> None:
    """SamplerCustomAdvanced with ``guider`` (euler), decoded and saved.

    The schedule is computed from ``model`` and the image decoded by ``vae`` (default: the checkpoint's)."""
    noise = g.add("RandomNoise", col=noise_col, noise_seed=42)
    select = g.add("KSamplerSelect", col=col, sampler_name="euler")
    sigmas = g.add("BasicScheduler", col=col, model=model or ckpt[0], scheduler=scheduler, steps=steps, denoise=1.0)
    sample = g.add("SamplerCustomAdvanced", col=col, noise=noise[0], guider=guider[0], sampler=select[0],
                   sigmas=sigmas[0], latent_image=latent)
    decode = g.add("VAEDecode", col=col + 1, samples=sample[0], vae=vae or ckpt[2])
    g.add("SaveImage", col=col + 1, images=decode[0], filename_prefix=prefix)


def sd15_ksampler(g: UIGraph) -> None:
    g.note(f"""## Prior Swap CFG: SD1.5 fine-tune + SD1.5 base, stock KSampler

CFG's unconditional branch comes from the **base model** (the *prior*) instead of the fine-tune,
{PAPER}, Eq. 7:

{EQ7}

**Checkpoints** (`models/checkpoints`):
- `{SD15_FINETUNE}`: the SD1.5 fine-tune you sample (any SD1.5 fine-tune works)
- `{SD15_BASE}`: the prior, Stable Diffusion 1.5 base

*Prior Swap CFG* patches the MODEL, so the **stock KSampler** samples it: its `cfg` is γ.
`prior_weight` 1 is the paper, 0 is stock CFG; `start_percent`/`end_percent` say where in sampling the
prior is used (outside, the KSampler's negative). To compare with stock CFG, bypass *Prior Swap CFG* (Ctrl+B).""",
           size=(440, 420))
    ckpt, prior, pos, neg, latent = _sd15_text2img(g)
    swap = _prior_swap(g, ckpt[0], prior, col=2)
    decode = _ksample_decode(g, swap[0], pos[0], neg[0], latent[0], ckpt[2], col=2, decode_col=3, steps=25, cfg=7.5,
                             sampler_name="euler", scheduler="normal")
    g.add("SaveImage", col=3, images=decode[0], filename_prefix="prior_swap/sd15")


def ip2p_sd15(g: UIGraph) -> None:
    g.note(f"""## Prior Swap: InstructPix2Pix + SD1.5 prior (dual guidance, paper Eq. 9)

Edits an image by an instruction. The fully unconditional term ε(x, ∅, ∅) of InstructPix2Pix's dual CFG
comes from SD1.5 (the prior); the image and text terms stay the fine-tune's:

`prior(∅) + γ_I·(ft(img, ∅) − prior(∅)) + γ_T·(ft(img, txt) − ft(img, ∅))`

Paper defaults: **cfg_conds = γ_T = 7.5**, **cfg_cond2_negative = γ_I = 1.5** (the paper samples 100 DDIM
steps; 30 Euler steps here).

**Checkpoints** (`models/checkpoints`):
- `{IP2P}`: InstructPix2Pix (timbrooks/instruct-pix2pix)
- `{SD15_BASE}`: the prior, Stable Diffusion 1.5 base

Pick your picture in *Image to edit* and write the edit in *Edit instruction*. With `prior_weight` 0 the
guider is ComfyUI's DualCFGGuider.""", size=(440, 440))
    ckpt = g.add("CheckpointLoaderSimple", col=0, title="InstructPix2Pix (fine-tune)", ckpt_name=IP2P)
    prior = g.add("PriorCheckpointLoader", col=0, title="Prior: SD1.5 base", ckpt_name=SD15_BASE, negative_prompt="")
    empty, cond = _ip2p_conditioning(g, ckpt)
    guider = g.add("PriorSwapDualCFGGuider", col=2, title="Prior Swap Dual CFG (paper: γ_T 7.5, γ_I 1.5)", node_width=360,
                   model=ckpt[0], prior=prior[0], cond1=cond[0], cond2=cond[1], negative=empty[0], cfg_conds=7.5,
                   cfg_cond2_negative=1.5, style="regular", prior_weight=1.0, start_percent=0.0, end_percent=1.0)
    _sample_with_guider(g, guider, ckpt, cond[2], steps=30, prefix="prior_swap/ip2p", noise_col=3)


def zero123_sd21(g: UIGraph) -> None:
    g.note(f"""## Prior Swap: Stable Zero123 + SD2.1 v-prediction prior (γ 5)

Novel view synthesis: Stable Zero123 renders the object in *Object image* from another viewpoint
(`elevation`, `azimuth` in degrees). A fine-tune this far from its base has a poor unconditional
prediction; here it comes from **SD2.1 768-v**, a v-prediction model of the same latent space
({PAPER}: Zero-1-to-3 with γ 5, 50 DDIM steps).

**Checkpoints** (`models/checkpoints`):
- `{ZERO123}`: Stable Zero123 (stabilityai/stable-zero123). *Image Only Checkpoint Loader* also reads
  the CLIP vision encoder stored in this file, so no separate CLIP vision model is needed.
- `{SD21_V}`: the prior, Stable Diffusion 2.1 768-v

*ModelSamplingDiscrete* (v_prediction) states the prior's parameterization; the prior's empty prompt ∅ is
encoded by SD2.1's own CLIP. The KSampler's `cfg` is γ = 5. Use a square picture of one object on a white
background.""", size=(440, 460))
    zero123 = g.add("ImageOnlyCheckpointLoader", col=0, title="Stable Zero123 (fine-tune)", ckpt_name=ZERO123)
    base = g.add("CheckpointLoaderSimple", col=0, title="Prior: SD2.1 768-v", ckpt_name=SD21_V)
    image = g.add("LoadImage", col=1, title="Object image", image="example.png")
    g.skip(1, 240)
    cond = g.add("StableZero123_Conditioning", col=1, clip_vision=zero123[1], init_image=image[0], vae=zero123[2],
                 width=256, height=256, batch_size=1, elevation=10.0, azimuth=142.0)
    vpred = g.add("ModelSamplingDiscrete", col=2, title="SD2.1 is v-prediction", model=base[0],
                  sampling="v_prediction", zsnr=False)
    empty = g.add("CLIPTextEncode", col=2, title="Prior's empty prompt ∅", clip=base[1], text="")
    prior = g.add("PriorFromModel", col=2, title="Prior: SD2.1 (v)", model=vpred[0], negative=empty[0])
    swap = _prior_swap(g, zero123[0], prior, col=3)
    decode = _ksample_decode(g, swap[0], cond[0], cond[1], cond[2], zero123[2], col=3, decode_col=4,
                             title="KSampler (cfg = γ = 5)", steps=50, cfg=5.0, sampler_name="ddim",
                             scheduler="ddim_uniform")
    g.add("SaveImage", col=4, images=decode[0], filename_prefix="prior_swap/zero123")


def sdxl(g: UIGraph) -> None:
    g.note(f"""## Prior Swap CFG: SDXL fine-tune + SDXL base

The SDXL version of the SD1.5 workflow: the fine-tune's unconditional prediction comes from SDXL base 1.0,
{PAPER}, Eq. 7: {EQ7}

**Checkpoints** (`models/checkpoints`):
- `{SDXL_FINETUNE}`: a placeholder, **pick your SDXL fine-tune** in *Fine-tune (SDXL)*
- `{SDXL_BASE}`: the prior, SDXL base 1.0

The prior must share the fine-tune's latent space: an SD1.5 prior for an SDXL fine-tune is refused
before sampling with a message that says so. KSampler `cfg` is γ.""", size=(440, 380))
    ckpt = g.add("CheckpointLoaderSimple", col=0, title="Fine-tune (SDXL)", ckpt_name=SDXL_FINETUNE)
    prior = g.add("PriorCheckpointLoader", col=0, title="Prior: SDXL base 1.0", ckpt_name=SDXL_BASE,
                  negative_prompt="")
    pos = g.add("CLIPTextEncode", col=1, title="Positive", clip=ckpt[1], text=POSITIVE)
    neg = g.add("CLIPTextEncode", col=1, title="Negative (the fine-tune's own)", clip=ckpt[1], text="")
    latent = g.add("EmptyLatentImage", col=1, width=1024, height=1024, batch_size=1)
    swap = _prior_swap(g, ckpt[0], prior, col=2)
    decode = _ksample_decode(g, swap[0], pos[0], neg[0], latent[0], ckpt[2], col=2, decode_col=3, steps=30, cfg=7.0,
                             sampler_name="dpmpp_2m", scheduler="karras")
    g.add("SaveImage", col=3, images=decode[0], filename_prefix="prior_swap/sdxl")


def custom_sampler_guider(g: UIGraph) -> None:
    g.note(f"""## Prior Swap Guider with SamplerCustomAdvanced

The SD1.5 pairing as a GUIDER: *Prior Swap Guider* is CFGGuider with the unconditional prediction from
the prior ({PAPER}, Eq. 7). Its `cfg` is γ.

**Checkpoints** (`models/checkpoints`):
- `{SD15_FINETUNE}`: the SD1.5 fine-tune you sample
- `{SD15_BASE}`: the prior, Stable Diffusion 1.5 base

`negative` (the fine-tune's own) is only used where the prior is not: `prior_weight` < 1 blends both
unconds, and outside `start_percent`–`end_percent` the fine-tune's own uncond is used. Swap the sampler,
the scheduler or the noise as with any guider.""", size=(440, 380))
    ckpt, prior, pos, neg, latent = _sd15_text2img(g)
    guider = g.add("PriorSwapGuider", col=2, model=ckpt[0], prior=prior[0], positive=pos[0], cfg=7.5,
                   prior_weight=1.0, start_percent=0.0, end_percent=1.0, negative=neg[0])
    _sample_with_guider(g, guider, ckpt, latent[0], steps=25, prefix="prior_swap/guider", noise_col=2)


def side_by_side_sd15(g: UIGraph) -> None:
    g.note(f"""## Stock CFG vs Prior Swap, side by side

One image: **left** the fine-tune with stock CFG, **right** the same seed with the uncond from the prior
({PAPER}, Eq. 7). Both KSamplers share every setting; only the MODEL differs.

**Checkpoints** (`models/checkpoints`):
- `{SD15_FINETUNE}`: the SD1.5 fine-tune
- `{SD15_BASE}`: the prior, Stable Diffusion 1.5 base

`python3 tools/host.py demo` runs this workflow.""", size=(440, 300))
    ckpt, prior, pos, neg, latent = _sd15_text2img(g)
    swap = _prior_swap(g, ckpt[0], prior, col=2)
    common = dict(seed=42, steps=20, cfg=7.5, sampler_name="euler", scheduler="normal", positive=pos[0],
                  negative=neg[0], latent_image=latent[0], denoise=1.0)
    stock = g.add("KSampler", col=2, title="Stock CFG", model=ckpt[0], **common)
    swapped = g.add("KSampler", col=3, title="Prior swap CFG", model=swap[0], **common)
    stock_image = g.add("VAEDecode", col=3, samples=stock[0], vae=ckpt[2])
    swap_image = g.add("VAEDecode", col=3, samples=swapped[0], vae=ckpt[2])
    stitch = g.add("ImageStitch", col=4, title="Stock CFG | Prior swap", image1=stock_image[0], image2=swap_image[0],
                   direction="right", match_image_size=True, spacing_width=8, spacing_color="white")
    g.add("SaveImage", col=4, images=stitch[0], filename_prefix="prior_swap/side_by_side")


def gamma_sweep_sd15(g: UIGraph) -> None:
    gammas = " / ".join(f"{x:g}" for x in GAMMA_SWEEP)
    g.note(f"""## γ sweep: stock CFG vs Prior Swap

A grid of one seed: columns are the guidance scale γ (KSampler `cfg` = {gammas}), the **top row** is the
fine-tune with stock CFG, the **bottom row** takes the uncond from the prior ({PAPER}, Eq. 7).
Prior swap usually holds up at higher γ where stock CFG of a fine-tune over-saturates.

**Checkpoints** (`models/checkpoints`):
- `{SD15_FINETUNE}`: the SD1.5 fine-tune
- `{SD15_BASE}`: the prior, Stable Diffusion 1.5 base

To sweep other values, change the `cfg` of a column's two KSamplers.""", size=(440, 340))
    ckpt, prior, pos, neg, latent = _sd15_text2img(g)
    swap = _prior_swap(g, ckpt[0], prior, col=1)
    common = dict(seed=42, steps=20, sampler_name="euler", scheduler="normal", positive=pos[0], negative=neg[0],
                  latent_image=latent[0], denoise=1.0)
    rows = {}
    for row, (label, model, col) in enumerate((("Stock CFG", ckpt[0], 2), ("Prior swap", swap[0], 3))):
        g.skip(col, 70)
        samplers = [g.add("KSampler", col=col, title=f"{label}, γ {x:g}", model=model, cfg=x, **common)
                    for x in GAMMA_SWEEP]
        g.group(label, samplers, color="#444" if row == 0 else PRIOR_GROUP_COLOR)
        rows[label] = [g.add("VAEDecode", col=4, samples=s[0], vae=ckpt[2]) for s in samplers]
    strips = []
    for label, images in rows.items():
        strip = images[0][0]
        for i, image in enumerate(images[1:], start=1):
            strip = g.add("ImageStitch", col=5, title=f"{label}: γ columns" if i == len(images) - 1 else None,
                          image1=strip, image2=image[0], direction="right", match_image_size=True, spacing_width=8,
                          spacing_color="white")[0]
        strips.append(strip)
    grid = g.add("ImageStitch", col=6, title="Top: stock CFG | bottom: prior swap", image1=strips[0],
                 image2=strips[1], direction="down", match_image_size=True, spacing_width=8, spacing_color="white")
    g.add("SaveImage", col=6, images=grid[0], filename_prefix="prior_swap/gamma_sweep")


def insight_sd15(g: UIGraph) -> None:
    g.note(f"""## Prior Swap Insight: stock CFG vs Prior Swap, and where the prior matters

The side-by-side workflow with *Prior Swap Insight* between *Prior Swap CFG* and the swap KSampler. It saves
two images: **left** stock CFG, **right** the same seed with the uncond from the prior ({PAPER}, Eq. 7);
and the **plot** of that run: top, per step, the drift ||u_ft − u_prior|| / ||u_ft|| of the fine-tune's own
uncond from the prior's; bottom, the guidance magnitudes ||c − u_ft|| and ||c − u_prior||.

**Checkpoints** (`models/checkpoints`):
- `{SD15_FINETUNE}`: the SD1.5 fine-tune
- `{SD15_BASE}`: the prior, Stable Diffusion 1.5 base

The insight costs one extra uncond forward of the fine-tune per step; the image is the same as without it.
Set the plot's `x_axis` to `sigma` to plot against the noise level.""", size=(440, 380))
    ckpt, prior, pos, neg, latent = _sd15_text2img(g)
    swap = _prior_swap(g, ckpt[0], prior, col=2)
    insight = g.add("PriorSwapInsight", col=2, model=swap[0])
    common = dict(seed=42, steps=20, cfg=7.5, sampler_name="euler", scheduler="normal", positive=pos[0],
                  negative=neg[0], latent_image=latent[0], denoise=1.0)
    stock = g.add("KSampler", col=2, title="Stock CFG", model=ckpt[0], **common)
    swapped = g.add("KSampler", col=3, title="Prior swap CFG", model=insight[0], **common)
    plot = g.add("PriorSwapInsightPlot", col=3, model=insight[0], samples=swapped[0], x_axis="step",
                 width=INSIGHT_PLOT_SIZE[0], height=INSIGHT_PLOT_SIZE[1])
    stock_image = g.add("VAEDecode", col=4, samples=stock[0], vae=ckpt[2])
    swap_image = g.add("VAEDecode", col=4, samples=swapped[0], vae=ckpt[2])
    stitch = g.add("ImageStitch", col=4, title="Stock CFG | Prior swap", image1=stock_image[0], image2=swap_image[0],
                   direction="right", match_image_size=True, spacing_width=8, spacing_color="white")
    g.add("SaveImage", col=5, images=stitch[0], filename_prefix="prior_swap/insight_side_by_side")
    g.add("SaveImage", col=5, title="Save insight plot", images=plot[0], filename_prefix="prior_swap/insight_plot")


TOY_SHAPES = "disk, ring, triangle, plus, dots"
TOY_NOISES = 4  # latents per shape: the batch cycles through the shapes, so batch = shapes × noises
TOY_GAMMA = 3.0


def toy_pair(g: UIGraph) -> None:
    g.note(f"""## The toy pair: stock CFG vs Prior Swap, no downloads

**Checkpoints**: none to download. The pack ships a small pair trained by this project on 16×16 coloured
shapes, in `py/toy_pair/` (see docs/evidence.md):
an unconditional **base** and a class-conditional **fine-tune** of it, trained with CFG dropout on a narrow
fixed set — the paper's setting ({PAPER}).

Both KSamplers share every setting; the second one's MODEL takes CFG's uncond from the base, Eq. 7:
{EQ7}

The batch cycles through the shapes of *Toy Pair Condition* ({TOY_SHAPES}): {TOY_NOISES} noises each.
Pixel space: *Load VAE* → `pixel_space` decodes, *Empty Chroma Radiance Latent Image* is the empty latent.
`python3 tools/host.py demo` runs this workflow and writes a labelled grid.""", size=(460, 400))
    finetune = g.add("PriorSwapToyModelLoader", col=0, title="Fine-tune (toy)", model="finetune")
    base = g.add("PriorSwapToyModelLoader", col=0, title="Prior: base (toy)", model="base")
    empty = g.add("PriorSwapToyCondition", col=1, title="∅ (negative)", shapes="empty")
    shapes = g.add("PriorSwapToyCondition", col=1, title="Shapes (positive)", shapes=TOY_SHAPES)
    shape_count = len(TOY_SHAPES.split(","))
    latent = g.add("EmptyChromaRadianceLatentImage", col=1, width=16, height=16,
                   batch_size=shape_count * TOY_NOISES)
    prior = g.add("PriorFromModel", col=2, model=base[0], negative=empty[0])
    swap = _prior_swap(g, finetune[0], prior, col=2)
    common = dict(seed=42, steps=20, cfg=TOY_GAMMA, sampler_name="euler", scheduler="normal", positive=shapes[0],
                  negative=empty[0], latent_image=latent[0], denoise=1.0)
    stock = g.add("KSampler", col=3, title="Stock CFG", model=finetune[0], **common)
    swapped = g.add("KSampler", col=3, title="Prior swap CFG", model=swap[0], **common)
    vae = g.add("VAELoader", col=2, vae_name="pixel_space")
    for label, sampler, prefix in (("Stock CFG", stock, "toy_stock"), ("Prior swap", swapped, "toy_swap")):
        _toy_save(g, sampler[0], vae, label, prefix, col=4)


def _toy_save(g: UIGraph, samples, vae, label: str, prefix: str, *, col: int):
    """Decode a toy latent (pixel space), scale it ×8 (nearest) so 16 px can be seen, save it; returns the decode."""
    image = g.add("VAEDecode", col=col, samples=samples, vae=vae[0])
    big = g.add("ImageScaleBy", col=col, title=f"{label} ×8", image=image[0], upscale_method="nearest-exact",
                scale_by=8.0)
    g.add("SaveImage", col=col + 1, title=f"Save: {label}", images=big[0], filename_prefix=f"prior_swap/{prefix}")
    return image


TOY_EDIT_SOURCES = "disk, square, triangle, plus"
TOY_EDIT_INSTRUCTION = "ring"


def toy_edit(g: UIGraph) -> None:
    g.note(f"""## The toy edit model: DualCFGGuider vs Prior Swap Dual CFG (IP2P-style), no downloads

**Checkpoints**: none to download. The pack ships, in `py/toy_pair/` (see docs/evidence.md), an
InstructPix2Pix-style **edit** model: a fine-tune of the toy **base** whose 3 extra input channels take the
source image (through the stock *InstructPixToPixConditioning*); the condition is the instruction
"make it a <shape>". It was trained as IP2P is, dropping the image, the instruction or both.

First the toy fine-tune draws the sources ({TOY_EDIT_SOURCES}); then each is edited into a
**{TOY_EDIT_INSTRUCTION}** twice, with the same noise: by ComfyUI's *DualCFGGuider* and by *Prior Swap Dual
CFG Guider*, whose fully unconditional term (∅ image, ∅ instruction) comes from the base, paper Eq. 9:

`prior(∅) + γ_I·(ft(img, ∅) − prior(∅)) + γ_T·(ft(img, txt) − ft(img, ∅))`

Paper defaults: γ_T (cfg_conds) 7.5, γ_I (cfg_cond2_negative) 1.5.""", size=(460, 440))
    finetune = g.add("PriorSwapToyModelLoader", col=0, title="Fine-tune (toy): draws the sources", model="finetune")
    base = g.add("PriorSwapToyModelLoader", col=0, title="Prior: base (toy)", model="base")
    edit = g.add("PriorSwapToyModelLoader", col=0, title="Edit model (toy, IP2P-style)", model="edit")
    empty = g.add("PriorSwapToyCondition", col=1, title="∅", shapes="empty")
    sources = g.add("PriorSwapToyCondition", col=1, title="Sources", shapes=TOY_EDIT_SOURCES)
    instruction = g.add("PriorSwapToyCondition", col=1, title="Instruction: make it a …",
                        shapes=TOY_EDIT_INSTRUCTION)
    latent = g.add("EmptyChromaRadianceLatentImage", col=1, width=16, height=16,
                   batch_size=len(TOY_EDIT_SOURCES.split(",")))
    vae = g.add("VAELoader", col=1, vae_name="pixel_space")
    prior = g.add("PriorFromModel", col=2, model=base[0], negative=empty[0])
    drawn = g.add("KSampler", col=2, title="Draw the sources", model=_prior_swap(g, finetune[0], prior, col=2)[0],
                  seed=7, steps=20, cfg=TOY_GAMMA, sampler_name="euler", scheduler="normal", positive=sources[0],
                  negative=empty[0], latent_image=latent[0], denoise=1.0)
    source = _toy_save(g, drawn[0], vae, "Sources", "toy_edit_source", col=3)
    cond = g.add("InstructPixToPixConditioning", col=3, positive=instruction[0], negative=empty[0], vae=vae[0],
                 pixels=source[0])
    dual = dict(model=edit[0], cond1=cond[0], cond2=cond[1], negative=empty[0], cfg_conds=7.5,
                cfg_cond2_negative=1.5, style="regular")
    stock = g.add("DualCFGGuider", col=4, title="DualCFGGuider (stock)", **dual)
    swap = g.add("PriorSwapDualCFGGuider", col=4, title="Prior Swap Dual CFG (γ_T 7.5, γ_I 1.5)", node_width=360,
                 prior=prior[0], prior_weight=1.0, start_percent=0.0, end_percent=1.0, **dual)
    for label, guider, prefix in (("Stock dual CFG", stock, "toy_edit_stock"), ("Prior swap", swap, "toy_edit_swap")):
        noise = g.add("RandomNoise", col=5, noise_seed=42)
        select = g.add("KSamplerSelect", col=5, sampler_name="euler")
        sigmas = g.add("BasicScheduler", col=5, model=edit[0], scheduler="normal", steps=20, denoise=1.0)
        sample = g.add("SamplerCustomAdvanced", col=6, title=label, noise=noise[0], guider=guider[0],
                       sampler=select[0], sigmas=sigmas[0], latent_image=cond[2])
        _toy_save(g, sample[0], vae, label, prefix, col=7)


def wan21_i2v(g: UIGraph) -> None:
    g.note(f"""## Prior Swap CFG: Wan 2.1 image-to-video + Wan 2.1 text-to-video prior

Wan 2.1 I2V is a fine-tune of Wan 2.1 T2V, as Zero-1-to-3 is of Stable Diffusion: it keeps a good
*conditional* prediction (start image + prompt), and here CFG's negative branch comes from the **T2V model**,
{PAPER}, Eq. 7: {EQ7}

**Model files**:
- `models/diffusion_models/{WAN_I2V}`: the fine-tune you sample (Wan 2.1 I2V 14B 480p)
- `models/diffusion_models/{WAN_T2V}`: the prior, Wan 2.1 T2V 14B, the model I2V was trained from
  (`wan2.1_t2v_1.3B_fp16.safetensors` shares the latent space and text encoder: a cheaper, weaker prior)
- `models/text_encoders/{WAN_TEXT_ENCODER}`: umT5-XXL, shared by both models
- `models/clip_vision/{WAN_CLIP_VISION}`: for the I2V model only
- `models/vae/{WAN_VAE}`

The prior's negative is the same *Negative* (encoded once: both models share umT5), without the start
image and CLIP vision features, which only the I2V model reads; empty it for the paper's ∅.
*ModelSamplingSD3* shift 8 as in ComfyUI's Wan template; the KSampler's `cfg` is γ. To compare with stock
CFG, bypass *Prior Swap CFG* (Ctrl+B).""", size=(460, 520))
    finetune = g.add("UNETLoader", col=0, title="Fine-tune: Wan 2.1 I2V 14B", unet_name=WAN_I2V,
                     weight_dtype="default")
    base = g.add("UNETLoader", col=0, title="Prior: Wan 2.1 T2V 14B", unet_name=WAN_T2V, weight_dtype="default")
    clip = g.add("CLIPLoader", col=0, title="umT5-XXL (both models)", clip_name=WAN_TEXT_ENCODER, type="wan",
                 device="default")
    vision = g.add("CLIPVisionLoader", col=0, clip_name=WAN_CLIP_VISION)
    vae = g.add("VAELoader", col=0, vae_name=WAN_VAE)
    image = g.add("LoadImage", col=1, title="Start image", image="example.png")
    g.skip(1, 240)  # LoadImage grows a preview of the picture
    pos = g.add("CLIPTextEncode", col=1, title="Positive", clip=clip[0],
                text="a lighthouse on a cliff at sunset, waves crashing, the camera slowly circles the tower")
    neg = g.add("CLIPTextEncode", col=1, title="Negative (fine-tune and prior)", clip=clip[0], text=WAN_NEGATIVE)
    vision_out = g.add("CLIPVisionEncode", col=2, clip_vision=vision[0], image=image[0], crop="none")
    i2v = g.add("WanImageToVideo", col=2, positive=pos[0], negative=neg[0], vae=vae[0], width=512, height=512,
                length=33, batch_size=1, clip_vision_output=vision_out[0], start_image=image[0])
    shift = g.add("ModelSamplingSD3", col=2, model=finetune[0], shift=8.0)
    prior = g.add("PriorFromModel", col=2, title="Prior: Wan 2.1 T2V", model=base[0], negative=neg[0])
    swap = _prior_swap(g, shift[0], prior, col=3)
    decode = _ksample_decode(g, swap[0], i2v[0], i2v[1], i2v[2], vae[0], col=3, decode_col=4,
                             title="KSampler (cfg = γ)", steps=20, cfg=6.0, sampler_name="uni_pc", scheduler="simple")
    g.add("SaveAnimatedWEBP", col=4, images=decode[0], filename_prefix="prior_swap/wan_i2v", fps=16.0,
          lossless=False, quality=90, method="default")


QWEN_EDIT_GAMMA = (2.5, 1.5)  # γ_T (cfg_conds: ComfyUI's template uses cfg 2.5 for the fp8 files), γ_I (the paper's)


def qwen_image_edit(g: UIGraph) -> None:
    gamma_t, gamma_i = QWEN_EDIT_GAMMA
    g.note(f"""## Prior Swap: Qwen-Image-Edit + Qwen-Image prior (dual guidance, paper Eq. 9)

Qwen-Image-Edit is a fine-tune of Qwen-Image. As in ComfyUI's own template, its negative carries the image
(*Empty instruction* is encoded with it), so its CFG is an InstructPix2Pix-style **dual** condition; this
workflow therefore uses *Prior Swap Dual CFG Guider*: only the unconditional term (no image, no text)
comes from **Qwen-Image** ({PAPER}, Eq. 9), the image and text terms stay the edit model's:

`prior(∅) + γ_I·(edit(img, ∅) − prior(∅)) + γ_T·(edit(img, txt) − edit(img, ∅))`

**cfg_conds = γ_T = {gamma_t:g}**, **cfg_cond2_negative = γ_I = {gamma_i:g}** (the paper's InstructPix2Pix γ_I); with
γ_I = 1 the prior cancels out and this is the template's stock CFG. *Prior Swap CFG* (Eq. 7) would instead
replace the image-conditioned negative by the prior's ∅ and scale the image guidance by γ as well.

**Model files**:
- `models/diffusion_models/{QWEN_EDIT}`: the fine-tune you sample
- `models/diffusion_models/{QWEN_IMAGE}`: the prior, Qwen-Image
- `models/text_encoders/{QWEN_TEXT_ENCODER}`: Qwen2.5-VL, shared by both models
- `models/vae/{QWEN_VAE}`

The prior's ∅ is Qwen-Image's own empty prompt (*CLIPTextEncode*, no image).""", size=(460, 560))
    finetune = g.add("UNETLoader", col=0, title="Fine-tune: Qwen-Image-Edit", unet_name=QWEN_EDIT,
                     weight_dtype="default")
    base = g.add("UNETLoader", col=0, title="Prior: Qwen-Image", unet_name=QWEN_IMAGE, weight_dtype="default")
    clip = g.add("CLIPLoader", col=0, title="Qwen2.5-VL (both models)", clip_name=QWEN_TEXT_ENCODER,
                 type="qwen_image", device="default")
    vae = g.add("VAELoader", col=0, vae_name=QWEN_VAE)
    image = g.add("LoadImage", col=1, title="Image to edit", image="example.png")
    g.skip(1, 240)  # LoadImage grows a preview of the picture
    scaled = g.add("ImageScaleToTotalPixels", col=1, image=image[0], upscale_method="lanczos", megapixels=1.0)
    instruction = g.add("TextEncodeQwenImageEdit", col=1, title="Edit instruction", clip=clip[0],
                        prompt="make it a winter scene, snow on the roofs", vae=vae[0], image=scaled[0])
    no_text = g.add("TextEncodeQwenImageEdit", col=2, title="Empty instruction (image, no text)", clip=clip[0],
                    prompt="", vae=vae[0], image=scaled[0])
    empty = g.add("CLIPTextEncode", col=2, title="Empty prompt ∅ (no image)", clip=clip[0], text="")
    latent = g.add("VAEEncode", col=2, pixels=scaled[0], vae=vae[0])
    shift = g.add("ModelSamplingAuraFlow", col=2, model=finetune[0], shift=3.0)
    norm = g.add("CFGNorm", col=2, model=shift[0], strength=1.0)
    prior = g.add("PriorFromModel", col=3, title="Prior: Qwen-Image", model=base[0], negative=empty[0])
    guider = g.add("PriorSwapDualCFGGuider", col=3, title=f"Prior Swap Dual CFG (γ_T {gamma_t:g}, γ_I {gamma_i:g})",
                   node_width=360, model=norm[0], prior=prior[0], cond1=instruction[0], cond2=no_text[0],
                   negative=empty[0], cfg_conds=gamma_t, cfg_cond2_negative=gamma_i, style="regular",
                   prior_weight=1.0, start_percent=0.0, end_percent=1.0)
    _sample_with_guider(g, guider, None, latent[0], steps=20, prefix="prior_swap/qwen_image_edit", noise_col=3,
                        model=shift[0], vae=vae[0], scheduler="simple", col=4)


def pixart_prior_sd15(g: UIGraph) -> None:
    g.note(f"""## Prior Swap CFG: SD1.5 fine-tune + PixArt-α prior (another architecture)

The prior need not be the fine-tune's base, nor a UNet: **PixArt-α**, a DiT with a T5 text encoder, shares
SD1.5's latent space and supplies CFG's unconditional branch of an SD1.5 fine-tune ({PAPER}, Eq. 7, the
paper's cross-architecture case): {EQ7}

**Model files**:
- `models/checkpoints/{SD15_FINETUNE}`: the SD1.5 fine-tune you sample (any SD1.5 fine-tune works)
- `models/diffusion_models/{PIXART_ALPHA}`: the prior, PixArt-α 1024-MS (PixArt-alpha/PixArt-alpha). ComfyUI
  recognises PixArt-α by its micro-conditioning: the 256/512 px releases have none and load as PixArt-Σ
  (SDXL's latent space), which the pack refuses as a prior for SD1.5.
- `models/text_encoders/{T5XXL}`: T5-XXL, *Load CLIP* type `pixart`, encodes the prior's empty prompt ∅

The two models have different noise schedules; the prior is evaluated at the same noise level through its
own schedule. The KSampler's `cfg` is γ; bypass *Prior Swap CFG* (Ctrl+B) for stock CFG.""", size=(460, 460))
    ckpt = g.add("CheckpointLoaderSimple", col=0, title="Fine-tune (SD1.5)", ckpt_name=SD15_FINETUNE)
    pixart = g.add("UNETLoader", col=0, title="Prior: PixArt-α", unet_name=PIXART_ALPHA, weight_dtype="default")
    t5 = g.add("CLIPLoader", col=0, title="T5-XXL (PixArt's text encoder)", clip_name=T5XXL, type="pixart",
               device="default")
    pos = g.add("CLIPTextEncode", col=1, title="Positive", clip=ckpt[1], text=POSITIVE)
    neg = g.add("CLIPTextEncode", col=1, title="Negative (the fine-tune's own)", clip=ckpt[1], text="")
    latent = g.add("EmptyLatentImage", col=1, width=512, height=512, batch_size=1)
    empty = g.add("CLIPTextEncode", col=2, title="Prior's empty prompt ∅ (T5)", clip=t5[0], text="")
    prior = g.add("PriorFromModel", col=2, title="Prior: PixArt-α", model=pixart[0], negative=empty[0])
    swap = _prior_swap(g, ckpt[0], prior, col=2)
    decode = _ksample_decode(g, swap[0], pos[0], neg[0], latent[0], ckpt[2], col=3, decode_col=4, steps=25, cfg=7.5,
                             sampler_name="euler", scheduler="normal")
    g.add("SaveImage", col=4, images=decode[0], filename_prefix="prior_swap/pixart_prior")


def ip2p_sdxl(g: UIGraph) -> None:
    g.note(f"""## Prior Swap: SDXL InstructPix2Pix (CosXL Edit) + SDXL base prior (dual guidance, paper Eq. 9)

The SDXL version of the InstructPix2Pix workflow: the fully unconditional term ε(x, ∅, ∅) of the dual CFG
comes from SDXL base 1.0 (the prior); the image and text terms stay the edit model's:

`prior(∅) + γ_I·(ft(img, ∅) − prior(∅)) + γ_T·(ft(img, txt) − ft(img, ∅))`

Paper defaults: **cfg_conds = γ_T = 7.5**, **cfg_cond2_negative = γ_I = 1.5**.

**Checkpoints** (`models/checkpoints`):
- `{COSXL_EDIT}`: CosXL Edit (stabilityai/cosxl), an 8-channel SDXL InstructPix2Pix model; any SDXL
  InstructPix2Pix checkpoint works
- `{SDXL_BASE}`: the prior, SDXL base 1.0

CosXL Edit is v-prediction with a noise schedule of its own (stored in the file, up to σ 120); the eps prior
is evaluated at the same noise level, and outside SDXL's range (σ 0.03–14.6) at its nearest one (logged
once). With `prior_weight` 0 the guider is ComfyUI's DualCFGGuider.""", size=(460, 460))
    ckpt = g.add("CheckpointLoaderSimple", col=0, title="SDXL InstructPix2Pix (fine-tune)", ckpt_name=COSXL_EDIT)
    prior = g.add("PriorCheckpointLoader", col=0, title="Prior: SDXL base 1.0", ckpt_name=SDXL_BASE,
                  negative_prompt="")
    empty, cond = _ip2p_conditioning(g, ckpt)
    guider = g.add("PriorSwapDualCFGGuider", col=2, title="Prior Swap Dual CFG (paper: γ_T 7.5, γ_I 1.5)",
                   node_width=360, model=ckpt[0], prior=prior[0], cond1=cond[0], cond2=cond[1], negative=empty[0],
                   cfg_conds=7.5, cfg_cond2_negative=1.5, style="regular", prior_weight=1.0, start_percent=0.0,
                   end_percent=1.0)
    _sample_with_guider(g, guider, ckpt, cond[2], steps=30, prefix="prior_swap/ip2p_sdxl", noise_col=3)


# file name (without .json) -> builder. Names are what ComfyUI's template browser lists.
WORKFLOW_BUILDERS: dict[str, Callable[[UIGraph], None]] = {
    "prior_swap_sd15_ksampler": sd15_ksampler,
    "prior_swap_ip2p_sd15": ip2p_sd15,
    "prior_swap_zero123_sd21v": zero123_sd21,
    "prior_swap_sdxl": sdxl,
    "prior_swap_custom_sampler_guider": custom_sampler_guider,
    "prior_swap_side_by_side_sd15": side_by_side_sd15,
    "prior_swap_gamma_sweep_sd15": gamma_sweep_sd15,
    "prior_swap_insight_sd15": insight_sd15,
    "prior_swap_toy_pair": toy_pair,
    "prior_swap_toy_edit": toy_edit,
    "prior_swap_wan21_i2v_t2v_prior": wan21_i2v,
    "prior_swap_qwen_image_edit": qwen_image_edit,
    "prior_swap_pixart_prior_sd15": pixart_prior_sd15,
    "prior_swap_ip2p_sdxl": ip2p_sdxl,
}


def build_all(object_info: dict) -> dict[str, dict]:
    out = {}
    for name, builder in WORKFLOW_BUILDERS.items():
        g = UIGraph(object_info, name)
        builder(g)
        out[name] = g.serialize()
    return out


def dumps(workflow: dict) -> str:
    return json.dumps(workflow, indent=2, ensure_ascii=False) + "\n"
