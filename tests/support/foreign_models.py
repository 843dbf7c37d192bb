"""Tiny models ComfyUI detects as *other* families, and broken files, for the bad-input tests.

ComfyUI's ``model_detection`` infers a diffusion model's family from the shapes of its weights, so a
random-weight state dict with the right key layout is loaded by ``UNETLoader`` exactly as the real
model would be (same ``supported_models`` class, latent format and sampling), just with few weights:

| file (models/diffusion_models) | detected as | why it is small |
|---|---|---|
| ``sd3_tiny`` | ``supported_models.SD3``: MMDiT, 16-channel ``SD3`` latent, flow (``ModelSamplingDiscreteFlow``) | MMDiT's width is 64 × depth; depth 2 → 1.2 M weights |
| ``pixart_sigma_tiny`` | ``supported_models.PixArtSigma``: 4-channel ``SDXL`` latent (same channel count as SD1.5, another scale) | one transformer block (the width is fixed at 1152) → 38 M weights |
| ``sd21_tiny`` | ``supported_models.SD20``: SD1.5 latent, cross-attention context 1024 (OpenCLIP-H) | one UNet level → 26 M weights |

Broken files (models/checkpoints), each what an artist may really end up with: a file with a damaged
header, a download cut in half, a LoRA dropped into the checkpoints folder, a legacy pickle whose
unpickling would run code, a legacy pickle with a diffusion model but no text encoder, and a
checkpoint that was deleted after ComfyUI listed it (a dangling link).
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

VERSION = 1  # bump when a generated file changes

DIFFUSION_MODELS = ("sd3_tiny", "pixart_sigma_tiny", "sd21_tiny")
NAN_LORA = "nan_lora.safetensors"
PICKLE_MARKER = "PRIOR-SWAP-TEST: pickled code ran"
BROKEN = {
    # name in the checkpoints folder -> what it is
    "damaged_header.safetensors": "random bytes where the safetensors header should be",
    "cut_download.safetensors": "the first half of a valid safetensors file",
    "a_lora.safetensors": "a LoRA file, not a checkpoint",
    "pickle_with_code.ckpt": "a legacy pickle whose unpickling would call print()",
    "unet_only.ckpt": "a legacy pickle holding a diffusion model (SD3 tiny) and no text encoder",
}
DELETED = "deleted_prior.safetensors"  # a dangling link: listed by ComfyUI, gone on disk


def cache_key() -> str:
    return hashlib.sha256(json.dumps([VERSION, DIFFUSION_MODELS, sorted(BROKEN)]).encode()).hexdigest()[:12]


def _random(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, value in sorted(state.items()):
        shape = tuple(value.shape)
        if len(shape) <= 1:
            value = torch.ones(shape) if name.endswith("weight") else torch.zeros(shape)
        else:
            value = torch.randn(shape, generator=gen) / math.sqrt(math.prod(shape[1:]))
        out[name] = value.to(torch.float16)
    return out


def _sd3_tiny() -> dict[str, torch.Tensor]:
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT

    with torch.device("meta"):
        net = MMDiT(in_channels=16, out_channels=16, patch_size=2, depth=2, input_size=None,
                    pos_embed_max_size=16, num_patches=256,
                    context_embedder_config={"target": "torch.nn.Linear",
                                             "params": {"in_features": 768, "out_features": 128}},
                    operations=comfy.ops.disable_weight_init)
    return _random(net.state_dict(), 21)


def _pixart_sigma_tiny() -> dict[str, torch.Tensor]:
    import comfy.ops
    from comfy.ldm.pixart.pixartms import PixArtMS

    # Built on the CPU (its constructor calls .item()); disable_weight_init leaves the tensors empty.
    net = PixArtMS(depth=1, input_size=32, patch_size=2, in_channels=4, hidden_size=1152, num_heads=16,
                   micro_condition=False, model_max_length=300, operations=comfy.ops.disable_weight_init)
    return _random(net.state_dict(), 22)


def _sd21_tiny() -> dict[str, torch.Tensor]:
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    from .checkpoints import unet_config

    config = unet_config(4, [1])
    config.update(context_dim=1024, use_linear_in_transformer=True, num_heads=-1, num_head_channels=64)
    with torch.device("meta"):
        net = UNetModel(**config, operations=comfy.ops.disable_weight_init)
    return _random(net.state_dict(), 23)


class _PrintOnLoad:
    """Unpickling this calls ``print``: what a malicious .ckpt does with a worse function."""

    def __reduce__(self):
        return (print, (PICKLE_MARKER,))


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def write_all(folder: Path) -> dict[str, Path]:
    """Write every file once into ``folder`` (kept between sessions); returns name -> path."""
    from safetensors.torch import save_file

    import_comfy()
    folder.mkdir(parents=True, exist_ok=True)
    builders = {"sd3_tiny": _sd3_tiny, "pixart_sigma_tiny": _pixart_sigma_tiny, "sd21_tiny": _sd21_tiny}
    paths = {}
    for name in DIFFUSION_MODELS:
        path = paths[name] = folder / f"{name}.safetensors"
        if not path.exists():
            _atomic(path, lambda p, b=builders[name]: save_file(b(), str(p)))
    path = paths[NAN_LORA] = folder / NAN_LORA
    if not path.exists():
        from .checkpoints import LORA_KEY

        _atomic(path, lambda p: save_file({LORA_KEY + ".diff": torch.full((4, 320, 3, 3), float("nan"))}, str(p)))
    broken = {
        "damaged_header.safetensors": lambda p: p.write_bytes(
            torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(5), dtype=torch.uint8)
            .numpy().tobytes()),
        "cut_download.safetensors": lambda p: p.write_bytes(
            (folder / "sd3_tiny.safetensors").read_bytes()[: (folder / "sd3_tiny.safetensors").stat().st_size // 2]),
        "a_lora.safetensors": lambda p: save_file(
            {"diffusion_model.out.2.diff": torch.zeros(4, 320, 3, 3)}, str(p)),
        "pickle_with_code.ckpt": lambda p: torch.save({"state_dict": _PrintOnLoad()}, str(p)),
        "unet_only.ckpt": lambda p: torch.save(
            {"state_dict": {"model.diffusion_model." + k: v for k, v in _sd3_tiny().items()}}, str(p)),
    }
    for name, write in broken.items():
        path = paths[name] = folder / name
        if not path.exists():
            _atomic(path, write)
    return paths


def install(paths: dict[str, Path], models: Path) -> list[Path]:
    """Link the files into a ComfyUI models folder; returns the links (to remove them afterwards)."""
    links = []
    targets = {**{f"diffusion_models/{n}.safetensors": paths[n] for n in DIFFUSION_MODELS},
               f"loras/{NAN_LORA}": paths[NAN_LORA],
               **{f"checkpoints/{n}": paths[n] for n in BROKEN},
               f"checkpoints/{DELETED}": models / "checkpoints" / "no_such_file.safetensors"}
    for rel, target in targets.items():
        link = models / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
        links.append(link)
    return links
