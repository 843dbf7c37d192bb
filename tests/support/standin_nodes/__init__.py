"""Test-only nodes: stand-ins for the text encoders, VAEs and CLIP-vision encoders that cannot be shipped.

The ``comfy`` server fixture (tests/conftest.py) links this folder into the server's ``custom_nodes`` as
``prior_swap_test_standins``. The nodes only make tensors of the shapes and keys the host's own encoders and
conditioning nodes give; everything else in a test graph is stock ComfyUI. Workflow generators use these
nodes as substitutes, so names and inputs are stable:

``PriorSwapTestConditioning`` (category ``testing/prior_swap``) → ``CONDITIONING``
    inputs: ``family`` (combo, see :data:`FAMILIES`), ``seed`` (INT), ``tokens`` (INT, prompt length in
    tokens before the encoder's padding), ``empty`` (BOOLEAN: the encoding of the empty prompt: one valid
    token, the rest padding). One entry ``[[cross_attn, extra]]`` shaped as that family's text encoder returns
    it through CLIPTextEncode (``encode_from_tokens_scheduled``):

    | family | encoder (host) | cross_attn | extra keys |
    |---|---|---|---|
    | ``sd15`` | CLIP-L | [1, 77·k, 768] | ``pooled_output`` [1, 768] |
    | ``sdxl`` | CLIP-L + G | [1, 77·k, 2048] | ``pooled_output`` [1, 1280] |
    | ``sd3`` | CLIP-L + G + T5 | [1, 77 + max(77, n), 4096] | ``pooled_output`` [1, 2048] |
    | ``pixart_alpha`` | T5-XXL (no padding) | [1, n, 4096] | ``pooled_output`` None |
    | ``chroma`` | T5-XXL (PixArt's, no padding) | [1, n, 4096] | ``pooled_output`` None |
    | ``wan21`` | umT5-XXL, padded to 512, padding zeroed | [1, max(512, n), 4096] | ``pooled_output`` None |
    | ``qwen_image`` | Qwen2.5-VL-7B (template removed; no mask when nothing is masked) | [1, n, 3584] | ``pooled_output`` None |
    | ``ltxv`` | T5-XXL padded to 128 with mask | [1, max(128, n), 4096] | ``pooled_output`` None, ``attention_mask`` int64 [1, L] (1 = token) |

    ``n`` = ``tokens`` + 1 (end token) for the T5 families, ``tokens`` for Qwen, 1 when ``empty``;
    ``k`` = ⌈n/75⌉ CLIP chunks. Values are seeded normal numbers (valid tokens), zeros on zeroed padding.

``PriorSwapTestWanI2V`` → ``(positive, negative, LATENT)``
    inputs: ``positive``, ``negative`` (CONDITIONING), ``width``, ``height``, ``length``, ``batch_size`` (as
    WanImageToVideo), ``seed`` (INT), ``start_frames`` (INT ≥ 1: frames of the start image), ``clip_vision``
    (BOOLEAN). Does what ``comfy_extras/nodes_wan.py`` WanImageToVideo does with a start image and a
    ``clip_vision_output``: an empty latent ``[B, 16, (length−1)//4+1, H/8, W/8]``; on positive *and* negative
    ``concat_latent_image`` (a seeded [1, 16, T, H/8, W/8] standing for the VAE-encoded frames), ``concat_mask``
    [1, 1, T, H/8, W/8] (ones, 0 on the start frames' latents) and ``clip_vision_output`` (a
    ``comfy.clip_vision.Output`` with seeded ``penultimate_hidden_states`` [1, 257, 1280], ``last_hidden_state``
    and ``image_embeds`` [1, 1024]).

``PriorSwapTestInstructPix2Pix`` → ``(positive, negative, LATENT)``
    inputs: ``positive``, ``negative`` (CONDITIONING), ``latent`` (LATENT: the encoded edit image, e.g. from
    ``PriorSwapTestLatent``). What ``comfy_extras/nodes_ip2p.py`` InstructPixToPixConditioning does after its
    ``vae.encode(pixels)``: ``concat_latent_image`` on positive and negative, and an empty latent of its shape.

``PriorSwapTestLatent`` → ``LATENT``
    inputs: ``family`` (combo, see :data:`LATENTS`), ``width``, ``height``, ``length``, ``batch_size``, ``seed``.
    A seeded latent, as a VAE would encode an image/video of that size for the family (4-D or 5-D). Fed to the
    host's ``ReferenceLatent`` it gives Qwen-Image-Edit's ``reference_latents`` (what
    ``TextEncodeQwenImageEdit`` adds after vae-encoding the image).
"""
from __future__ import annotations

import math

import torch

# family -> (width, pooled width or None, padding: "clip" | "t5min:<N>" | "none", zero padding, mask)
FAMILIES = {
    "sd15": dict(width=768, pooled=768, pad="clip"),
    "sdxl": dict(width=2048, pooled=1280, pad="clip"),
    "sd3": dict(width=4096, pooled=2048, pad="sd3"),
    "pixart_alpha": dict(width=4096, pooled=None, pad="none", end=True),
    "chroma": dict(width=4096, pooled=None, pad="none", end=True),
    "wan21": dict(width=4096, pooled=None, pad=512, end=True, zero_pad=True),
    "qwen_image": dict(width=3584, pooled=None, pad="none", end=False),
    "ltxv": dict(width=4096, pooled=None, pad=128, end=True, mask=True),
}

# family -> (channels, spatial compression, temporal compression or None for images)
LATENTS = {
    "sd15": (4, 8, None),
    "sdxl": (4, 8, None),
    "sd3": (16, 8, None),
    "flux": (16, 8, None),
    "wan21": (16, 8, 4),
    "qwen_image": (16, 8, 4),
    "ltxv": (128, 32, 8),
}


def conditioning(family: str, seed: int, tokens: int, empty: bool) -> list:
    """The CONDITIONING of PriorSwapTestConditioning (also importable by tests)."""
    spec = FAMILIES[family]
    gen = torch.Generator().manual_seed(seed)
    n = 1 if empty else max(1, tokens + (1 if spec.get("end") else 0))
    pad = spec["pad"]
    extra: dict = {}
    if pad == "clip":
        length = 77 * max(1, math.ceil(n / 75))
        valid = length  # CLIP's padding tokens are real outputs of the encoder
    elif pad == "sd3":
        length, valid = 77 + max(77, n), 77 + max(77, n)
    elif pad == "none":
        length = valid = n
    else:
        length, valid = max(int(pad), n), n
    cond = torch.randn((1, length, spec["width"]), generator=gen)
    if spec.get("zero_pad"):
        cond[:, valid:] = 0.0
    extra["pooled_output"] = None if spec["pooled"] is None else torch.randn((1, spec["pooled"]), generator=gen)
    if spec.get("mask"):
        mask = torch.zeros((1, length), dtype=torch.int64)
        mask[:, :valid] = 1
        extra["attention_mask"] = mask
    return [[cond, extra]]


def latent_shape(family: str, width: int, height: int, length: int, batch_size: int) -> list[int]:
    channels, down, time_down = LATENTS[family]
    shape = [batch_size, channels]
    if time_down is not None:
        shape.append((length - 1) // time_down + 1)
    return shape + [height // down, width // down]


class _StandIn:
    """A V1 test node: its required inputs are the class's ``REQUIRED``."""
    CATEGORY = "testing/prior_swap"
    REQUIRED: dict = {}

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": cls.REQUIRED}


class PriorSwapTestConditioning(_StandIn):
    DESCRIPTION = "Test stand-in for a family's text encoder: CONDITIONING with its shapes and extra keys."
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    REQUIRED = {
        "family": (sorted(FAMILIES),),
        "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1}),
        "tokens": ("INT", {"default": 8, "min": 1, "max": 4096}),
        "empty": ("BOOLEAN", {"default": False}),
    }

    def encode(self, family: str, seed: int, tokens: int, empty: bool):
        return (conditioning(family, seed, tokens, empty),)


def wan_i2v(positive: list, negative: list, width: int, height: int, length: int, batch_size: int, seed: int,
            start_frames: int = 1, clip_vision: bool = True):
    """What WanImageToVideo returns, with seeded stand-ins for the VAE latent and the CLIP-vision output."""
    import comfy.clip_vision
    import node_helpers

    latent = torch.zeros([batch_size, 16, ((length - 1) // 4) + 1, height // 8, width // 8])
    gen = torch.Generator().manual_seed(seed)
    concat_latent_image = torch.randn([1, 16, latent.shape[2], height // 8, width // 8], generator=gen)
    mask = torch.ones((1, 1, latent.shape[2], concat_latent_image.shape[-2], concat_latent_image.shape[-1]))
    mask[:, :, :((min(start_frames, length) - 1) // 4) + 1] = 0.0
    values = {"concat_latent_image": concat_latent_image, "concat_mask": mask}
    positive = node_helpers.conditioning_set_values(positive, values)
    negative = node_helpers.conditioning_set_values(negative, values)
    if clip_vision:
        out = comfy.clip_vision.Output()
        out["last_hidden_state"] = torch.randn((1, 257, 1280), generator=gen)
        out["penultimate_hidden_states"] = torch.randn((1, 257, 1280), generator=gen)
        out["image_embeds"] = torch.randn((1, 1024), generator=gen)
        positive = node_helpers.conditioning_set_values(positive, {"clip_vision_output": out})
        negative = node_helpers.conditioning_set_values(negative, {"clip_vision_output": out})
    return positive, negative, {"samples": latent}


class _ConditioningPairNode(_StandIn):
    """A stand-in for a host node that adds an image's conditioning to positive and negative and returns a latent."""
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "LATENT")
    RETURN_NAMES = ("positive", "negative", "latent")
    FUNCTION = "apply"


class PriorSwapTestWanI2V(_ConditioningPairNode):
    DESCRIPTION = ("Test stand-in for WanImageToVideo with a start image and CLIP-vision output: the same "
                   "conditioning keys on positive and negative, seeded tensors instead of the VAE/CLIP-vision.")
    REQUIRED = {
        "positive": ("CONDITIONING",),
        "negative": ("CONDITIONING",),
        "width": ("INT", {"default": 16, "min": 8, "max": 4096, "step": 8}),
        "height": ("INT", {"default": 16, "min": 8, "max": 4096, "step": 8}),
        "length": ("INT", {"default": 1, "min": 1, "max": 1024, "step": 1}),
        "batch_size": ("INT", {"default": 1, "min": 1, "max": 64}),
        "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1}),
        "start_frames": ("INT", {"default": 1, "min": 1, "max": 1024}),
        "clip_vision": ("BOOLEAN", {"default": True}),
    }

    def apply(self, positive, negative, width, height, length, batch_size, seed, start_frames, clip_vision):
        return wan_i2v(positive, negative, width, height, length, batch_size, seed, start_frames, clip_vision)


def instruct_pix2pix(positive: list, negative: list, concat_latent: torch.Tensor):
    """What InstructPixToPixConditioning returns for an already encoded image."""
    out = []
    for cond in (positive, negative):
        out.append([[t[0], {**t[1], "concat_latent_image": concat_latent}] for t in cond])
    return out[0], out[1], {"samples": torch.zeros_like(concat_latent)}


class PriorSwapTestInstructPix2Pix(_ConditioningPairNode):
    DESCRIPTION = ("Test stand-in for InstructPixToPixConditioning with the image already encoded: "
                   "concat_latent_image on positive and negative, and an empty latent of the image's shape.")
    REQUIRED = {"positive": ("CONDITIONING",), "negative": ("CONDITIONING",), "latent": ("LATENT",)}

    def apply(self, positive, negative, latent):
        return instruct_pix2pix(positive, negative, latent["samples"])


class PriorSwapTestLatent(_StandIn):
    DESCRIPTION = "Test stand-in for a VAE-encoded image or video: a seeded LATENT of the family's shape."
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "make"
    REQUIRED = {
        "family": (sorted(LATENTS),),
        "width": ("INT", {"default": 16, "min": 8, "max": 4096, "step": 8}),
        "height": ("INT", {"default": 16, "min": 8, "max": 4096, "step": 8}),
        "length": ("INT", {"default": 1, "min": 1, "max": 1024}),
        "batch_size": ("INT", {"default": 1, "min": 1, "max": 64}),
        "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1}),
    }

    def make(self, family, width, height, length, batch_size, seed):
        shape = latent_shape(family, width, height, length, batch_size)
        return ({"samples": torch.randn(shape, generator=torch.Generator().manual_seed(seed))},)


NODE_CLASS_MAPPINGS = {
    "PriorSwapTestConditioning": PriorSwapTestConditioning,
    "PriorSwapTestWanI2V": PriorSwapTestWanI2V,
    "PriorSwapTestInstructPix2Pix": PriorSwapTestInstructPix2Pix,
    "PriorSwapTestLatent": PriorSwapTestLatent,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "PriorSwapTestConditioning": "Test Conditioning (stand-in text encoder)",
    "PriorSwapTestWanI2V": "Test Wan Image to Video (stand-in)",
    "PriorSwapTestInstructPix2Pix": "Test InstructPix2Pix Conditioning (stand-in)",
    "PriorSwapTestLatent": "Test Latent (stand-in VAE encode)",
}
