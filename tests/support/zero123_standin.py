"""A Stable Zero123 stand-in checkpoint that ComfyUI loads with its own classes (random weights).

``ImageOnlyCheckpointLoader`` detects ``supported_models.Stable_Zero123`` from an 8-input-channel SD1.5-width
UNet plus the ``cc_projection`` layer (772 → 768: the CLIP image embedding and 4 camera values), builds
``model_base.Stable_Zero123`` and reads the CLIP vision encoder stored under ``cond_stage_model.model.visual.``.
ComfyUI picks the encoder's architecture from a fixed config by its depth, so the encoder is a full-size
ViT-L/14 (24 layers; about 600 MB in fp16): the smallest that ComfyUI recognises. The UNet is the small
two-level one of ``checkpoints.py`` and the VAE the same random one as the other stand-ins.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
from pathlib import Path

import torch

from . import checkpoints

VERSION = 1
NAME = "zero123_finetune"
UNET = dict(seed=5, in_channels=8, channel_mult=[1, 2])
VISION_PREFIX = "cond_stage_model.model.visual."


def cache_key() -> str:
    return hashlib.sha256(json.dumps([VERSION, UNET, checkpoints.cache_key()]).encode()).hexdigest()[:12]


def _vision_weights() -> dict[str, torch.Tensor]:
    import comfy.clip_model
    import comfy.ops

    # inspect.getfile rather than the module's __file__, which comfy-import-guard reads as a missing symbol.
    config_path = Path(inspect.getfile(comfy.clip_model)).with_name("clip_vision_config_vitl.json")
    config = json.loads(config_path.read_text())
    with torch.device("meta"):
        model = comfy.clip_model.CLIPVisionModelProjection(config, torch.float16, "meta",
                                                           comfy.ops.disable_weight_init)
    return checkpoints._random(checkpoints._shapes(model), 500, VISION_PREFIX)


def write_zero123(folder: Path) -> Path:
    """Write ``zero123_finetune.safetensors`` into ``folder`` unless it is there; returns its path."""
    from safetensors.torch import save_file

    checkpoints.import_comfy()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{NAME}.safetensors"
    if path.exists():
        return path
    gen = torch.Generator().manual_seed(501)
    weights = {
        **checkpoints._unet_weights(UNET),
        **checkpoints._vae_weights(),
        **_vision_weights(),
        "cc_projection.weight": (torch.randn(768, 772, generator=gen) / 772 ** 0.5).to(torch.float16),
        "cc_projection.bias": torch.zeros(768, dtype=torch.float16),
    }
    tmp = path.with_suffix(".tmp")
    save_file(weights, str(tmp))
    os.replace(tmp, path)
    return path


if __name__ == "__main__":  # python tests/support/zero123_standin.py OUT_DIR
    import sys

    p = write_zero123(Path(sys.argv[1]))
    print(p, p.stat().st_size // 2**20, "MiB")
