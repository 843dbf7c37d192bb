"""What the workflow tests need beyond ``families.py`` and ``standin_nodes``: a small Wan 2.1 VAE.

ComfyUI builds the Wan 2.1 video VAE (also Qwen-Image's VAE: the same architecture) with the width it reads
from the file, ``dim = decoder.head.0.gamma.shape[0]`` (``comfy/sd.py``), so a random-weight file of the
real layout at ``dim`` 8 instead of 96 is loaded by the stock ``VAELoader`` as a real ``WanVAE``: 16 latent
channels, 8× spatial and 4× temporal compression, the same causal 3-D encoder/decoder code. With it the
workflows' ``VAEEncode`` / ``VAEDecode`` (and the reference latent of Qwen-Image-Edit) run for real;
0.9 M weights, 1.8 MB.
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
