"""Small real checkpoints, written as .safetensors at test time, that ComfyUI loads with its own classes.

ComfyUI's checkpoint detection infers the UNet's depth from the weights, so a UNet with SD1.5's width
(model_channels 320, context_dim 768) but fewer blocks is detected as SD1.5 by CheckpointLoaderSimple
and built as ``comfy.model_base.BaseModel`` around ``openaimodel.UNetModel``; an 8-input-channel one
is detected as ``SD15_instructpix2pix``. The text encoder (``sd1_clip`` CLIP-L) and the VAE
(``AutoencoderKL``) have fixed architectures in ComfyUI and are written full size with random weights,
shared by every stand-in (as a fine-tune shares its base's CLIP and VAE).

Weights are random but deterministic (seeded) and scaled so activations stay O(1).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import torch

try:
    from .comfy_env import import_comfy
except ImportError:  # run as a script
    from comfy_env import import_comfy

VERSION = 4  # bump when the generated weights change

# name -> UNet variant. Names mimic what users have; the files are tiny stand-ins.
UNETS = {
    "sd15_base": dict(seed=1, in_channels=4, channel_mult=[1, 2]),
    "sd15_finetune": dict(seed=2, in_channels=4, channel_mult=[1, 2]),
    # Another architecture of the same latent space and text encoder: three levels instead of two.
    "sd15_deep_prior": dict(seed=3, in_channels=4, channel_mult=[1, 2, 2]),
    "ip2p_finetune": dict(seed=4, in_channels=8, channel_mult=[1, 2]),
}


def unet_config(in_channels: int, channel_mult: list[int]) -> dict:
    """An SD1.5-width UNet config with one res block and one transformer per level."""
    levels = len(channel_mult)
    return dict(
        image_size=32, in_channels=in_channels, out_channels=4, model_channels=320,
        num_res_blocks=[1] * levels, channel_mult=channel_mult, transformer_depth=[1] * levels,
        transformer_depth_output=[1] * (2 * levels), transformer_depth_middle=1,
        use_spatial_transformer=True, use_linear_in_transformer=False, context_dim=768,
        num_heads=8, num_head_channels=-1, legacy=False, adm_in_channels=None,
        use_temporal_attention=False, use_temporal_resblock=False, use_checkpoint=False,
    )


def _shapes(module: torch.nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _random(shapes: dict[str, tuple], seed: int, prefix: str) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in sorted(shapes.items()):
        leaf = name.rsplit(".", 1)[-1]
        if "position_ids" in name:
            out[prefix + name] = torch.arange(shape[-1]).reshape(shape)
            continue
        if len(shape) <= 1:  # the only 1-D weights are norm scales; 1-D biases start at zero
            value = torch.ones(shape) if leaf == "weight" else torch.zeros(shape)
        else:
            fan_in = math.prod(shape[1:])
            value = torch.randn(shape, generator=gen) / math.sqrt(fan_in)
        out[prefix + name] = value.to(torch.float16)
    return out


def _unet_weights(spec: dict) -> dict[str, torch.Tensor]:
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    with torch.device("meta"):
        unet = UNetModel(**unet_config(spec["in_channels"], spec["channel_mult"]),
                         operations=comfy.ops.disable_weight_init)
    return _random(_shapes(unet), spec["seed"], "model.diffusion_model.")


def _clip_weights() -> dict[str, torch.Tensor]:
    import comfy.sd1_clip

    with torch.device("meta"):
        clip = comfy.sd1_clip.SD1ClipModel(device="meta")
    shapes = {k[len("clip_l."):]: v for k, v in _shapes(clip).items() if k.startswith("clip_l.transformer.")}
    return _random(shapes, 100, "cond_stage_model.")


def _vae_weights() -> dict[str, torch.Tensor]:
    from comfy.ldm.models.autoencoder import AutoencoderKL

    ddconfig = {'double_z': True, 'z_channels': 4, 'resolution': 256, 'in_channels': 3, 'out_ch': 3, 'ch': 128,
                'ch_mult': [1, 2, 4, 4], 'num_res_blocks': 2, 'attn_resolutions': [], 'dropout': 0.0}
    with torch.device("meta"):
        vae = AutoencoderKL(ddconfig=ddconfig, embed_dim=4)
    return _random(_shapes(vae), 200, "first_stage_model.")


LORA_KEY = "diffusion_model.out.2"  # the UNet's last conv, in ComfyUI's generic LoRA key format


def lora_diff() -> torch.Tensor:
    """The weight difference the test LoRA adds to the last conv (4×320×3×3)."""
    return torch.randn(4, 320, 3, 3, generator=torch.Generator().manual_seed(300)) * 0.05


def write_lora(folder: Path) -> Path:
    """A small LoRA file in the ``.diff`` format ComfyUI's LoraLoader reads: one full-weight difference."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "test_lora.safetensors"
    if not path.exists():
        save_file({LORA_KEY + ".diff": lora_diff()}, str(path))
    return path


def cache_key() -> str:
    return hashlib.sha256(json.dumps([VERSION, UNETS], sort_keys=True).encode()).hexdigest()[:12]


def write_checkpoints(folder: Path, names: list[str] | None = None) -> dict[str, Path]:
    """Write the stand-in checkpoints into ``folder`` (skipping files already there); returns name → path."""
    from safetensors.torch import save_file

    import_comfy()

    folder.mkdir(parents=True, exist_ok=True)
    names = names or list(UNETS)
    shared: dict[str, torch.Tensor] | None = None
    paths = {}
    for name in names:
        path = folder / f"{name}.safetensors"
        paths[name] = path
        if path.exists():
            continue
        if shared is None:
            shared = {**_clip_weights(), **_vae_weights()}
        tmp = path.with_suffix(".tmp")
        save_file({**shared, **_unet_weights(UNETS[name])}, str(tmp))
        os.replace(tmp, path)
    return paths


if __name__ == "__main__":  # python tests/support/checkpoints.py OUT_DIR
    import sys

    for n, p in write_checkpoints(Path(sys.argv[1])).items():
        print(n, p, p.stat().st_size // 2**20, "MiB")
