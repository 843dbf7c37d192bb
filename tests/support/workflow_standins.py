"""What the workflow tests need beyond ``families.py`` and ``standin_nodes``: a small Wan 2.1 VAE, SDXL checkpoints.

ComfyUI builds the Wan 2.1 video VAE (also Qwen-Image's VAE: the same architecture) with the width it reads
from the file, ``dim = decoder.head.0.gamma.shape[0]`` (``comfy/sd.py``), so a random-weight file of the
real layout at ``dim`` 8 instead of 96 is loaded by the stock ``VAELoader`` as a real ``WanVAE``: 16 latent
channels, 8× spatial and 4× temporal compression, the same causal 3-D encoder/decoder code. With it the
workflows' ``VAEEncode`` / ``VAEDecode`` (and the reference latent of Qwen-Image-Edit) run for real;
0.9 M weights, 1.8 MB.

SDXL checkpoints (``models/checkpoints``) that ``CheckpointLoaderSimple`` detects as ``SDXL`` and, with 8 input
channels, ``SDXL_instructpix2pix`` (made v-prediction EDM as CosXL Edit by its ``edm_vpred`` keys): ComfyUI matches SDXL on ``model_channels`` 320, linear transformers,
``transformer_depth [0, 0, 2, 2, 10, 10]`` (counted per input block), context 2048 and ``adm_in_channels`` 2816,
not on the number of levels, so one level of six res blocks carries SDXL's 24 transformer blocks (121 M
weights, the smallest SDXL in notes/model-families.md). The VAE is the SD1.5 stand-ins' (SDXL's VAE has the
same architecture); there is no text encoder (CLIP-L + CLIP-G are 0.8 B weights of fixed size), so a workflow's
SDXL text encodes are replaced by ``PriorSwapTestConditioning`` (family ``sdxl``).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import torch

try:
    from .comfy_env import ROOT, import_comfy
except ImportError:  # run as a script
    from comfy_env import ROOT, import_comfy

VERSION = 1
SDXL_VERSION = 1
# name -> (input channels, seed, extra top-level keys): stand-ins for an SDXL fine-tune, SDXL base 1.0 and
# CosXL Edit, an SDXL InstructPix2Pix whose file marks it v-prediction EDM with its own σ range (the keys
# ComfyUI's supported_models.SDXL.model_type reads; CosXL's values)
SDXL = {"sdxl_finetune_standin": (4, 501, {}), "sdxl_base_standin": (4, 502, {}),
        "cosxl_edit_standin": (8, 503, {"edm_vpred.sigma_max": 120.0, "edm_vpred.sigma_min": 0.002})}
WAN_VAE = "wan21_vae_tiny"
WAN_VAE_CONFIG = {"dim": 8, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [],
                  "temperal_downsample": [False, True, True], "dropout": 0.0}  # comfy/sd.py's, but dim 96 → 8


def cache_folder() -> Path:
    key = hashlib.sha256(json.dumps([VERSION, WAN_VAE_CONFIG]).encode()).hexdigest()[:12]
    return ROOT / ".host" / "cache" / f"workflow-standins-{key}"


def _wan_vae_weights() -> dict[str, torch.Tensor]:
    import comfy.ldm.wan.vae

    with torch.device("meta"):
        net = comfy.ldm.wan.vae.WanVAE(**WAN_VAE_CONFIG)
    gen = torch.Generator().manual_seed(401)
    out = {}
    for name, value in sorted(net.state_dict().items()):
        shape = tuple(value.shape)
        if len(shape) <= 1 or name.endswith("gamma"):  # RMS-norm scales 1, biases 0
            value = torch.zeros(shape) if name.endswith("bias") else torch.ones(shape)
        else:
            value = torch.randn(shape, generator=gen) / math.sqrt(math.prod(shape[1:]))
        out[name] = value.to(torch.bfloat16)
    return out


def write_wan_vae(folder: Path | None = None) -> Path:
    """The small Wan 2.1 VAE, written once (cached); returns its path."""
    from safetensors.torch import save_file

    import_comfy()
    folder = folder or cache_folder()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{WAN_VAE}.safetensors"
    if not path.exists():
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        save_file(_wan_vae_weights(), str(tmp))
        os.replace(tmp, path)
    return path


def sdxl_unet_config(in_channels: int) -> dict:
    return dict(image_size=32, in_channels=in_channels, out_channels=4, model_channels=320, num_res_blocks=[6],
                channel_mult=[1], transformer_depth=[0, 0, 2, 2, 10, 10], transformer_depth_output=[0] * 7,
                transformer_depth_middle=-2, use_spatial_transformer=True, use_linear_in_transformer=True,
                context_dim=2048, num_heads=-1, num_head_channels=64, legacy=False, adm_in_channels=2816,
                num_classes="sequential", use_temporal_attention=False, use_temporal_resblock=False,
                use_checkpoint=False)


def sdxl_cache_folder() -> Path:
    key = hashlib.sha256(json.dumps([SDXL_VERSION, SDXL, sdxl_unet_config(4)]).encode()).hexdigest()[:12]
    return ROOT / ".host" / "cache" / f"workflow-sdxl-{key}"


def _sdxl_weights(name: str) -> dict[str, torch.Tensor]:
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    from .checkpoints import _vae_weights

    in_channels, seed, extra = SDXL[name]
    with torch.device("meta"):
        unet = UNetModel(**sdxl_unet_config(in_channels), operations=comfy.ops.disable_weight_init)
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in sorted(unet.state_dict().items()):
        shape = tuple(value.shape)
        if len(shape) <= 1:  # norm scales 1, biases 0
            value = torch.zeros(shape) if key.endswith("bias") else torch.ones(shape)
        else:
            value = torch.randn(shape, generator=gen) / math.sqrt(math.prod(shape[1:]))
        out["model.diffusion_model." + key] = value.to(torch.float16)
    return {**out, **_vae_weights(), **{k: torch.tensor(v) for k, v in extra.items()}}


def write_sdxl(names=None, folder: Path | None = None) -> dict[str, Path]:
    """The SDXL stand-in checkpoints (cached); returns name -> path."""
    from safetensors.torch import save_file

    import_comfy()
    folder = folder or sdxl_cache_folder()
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in names or SDXL:
        path = paths[name] = folder / f"{name}.safetensors"
        if not path.exists():
            tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
            save_file(_sdxl_weights(name), str(tmp))
            os.replace(tmp, path)
    return paths
