"""Small random-weight stand-ins that the host's own ``comfy.model_detection`` detects as each model family.

Each stand-in is the state dict of the very ``comfy/ldm`` network the host builds for that family, made by the
host itself: ``model_detection.model_config_from_unet_config(config)`` picks the ``supported_models`` class and
``get_model(…, device="meta")`` builds its diffusion model without memory; the weights are then filled with
seeded random numbers (1/√fan-in, norms 1, biases 0) and saved unprefixed, as UNET releases are, to be loaded
by the stock ``UNETLoader`` from ``models/diffusion_models``. ``config`` is exactly what
``model_detection.detect_unet_config`` returns for the file, which :func:`check` verifies (and that the
loader logs no ``unet missing`` / ``unet unexpected``).

| file (models/diffusion_models) | detected as | latent | params | role in tests/test_families.py |
|---|---|---|---|---|
| ``fam_sd3_ft`` / ``fam_sd3_base`` | ``SD3`` (MMDiT, depth 2) | SD3, 16 ch, 4-D | 1.2 M | SD3 fine-tune → SD3 prior |
| ``fam_chroma_ft`` / ``fam_chroma_base`` | ``Chroma`` (1 double block) | Flux, 16 ch, 4-D | 518 M (floor: 3072 wide, 5120-wide approximator) | Chroma → Chroma |
| ``fam_wan21_i2v`` | ``WAN21_I2V`` (dim 128, 1 layer, in 36, CLIP-vision projection) | Wan21, 16 ch, 5-D | 2.8 M | Wan 2.1 I2V fine-tune |
| ``fam_wan21_t2v`` | ``WAN21_T2V`` (dim 128, 1 layer) | Wan21 | 0.9 M | … its T2V prior |
| ``fam_qwen_image_edit`` / ``fam_qwen_image`` | ``QwenImage`` (1 block; 3072 wide) | Wan21 | 380 M (floor) | Qwen-Image-Edit → Qwen-Image |
| ``fam_pixart_alpha`` | ``PixArtAlpha`` (depth 1, 1152 wide) | SD15, 4 ch | 37 M | prior of the SD1.5 fine-tune (``sd15_finetune`` of ``checkpoints.py``) |
| ``fam_ltxv_ft`` / ``fam_ltxv_base`` | ``LTXV`` (head dim 2, 1 layer) | LTXV, 128 ch, 5-D | 0.4 M | LTXV → LTXV |
| ``fam_sdxl_ip2p`` | ``SDXL_instructpix2pix`` (8 input channels; one level, 24 transformer blocks) | SDXL, 4 ch | 121 M (floor) | SDXL InstructPix2Pix (CosXL Edit's kind) fine-tune |
| ``fam_sdxl_base`` | ``SDXL`` (same, 4 input channels) | SDXL | 121 M (floor) | … its SDXL base prior |

Differently seeded copies stand for "fine-tune" and "base": same architecture, other weights.
Files are bf16 (ComfyUI computes in fp32 on the CPU whatever the file dtype), written once under
``.host/cache/families-<hash of VERSION and the configs>/`` and kept between sessions.
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

VERSION = 1  # bump when a generated file changes

_SD3 = {"in_channels": 16, "patch_size": 2, "out_channels": 16, "depth": 2, "input_size": None,
        "adm_in_channels": 2048,
        "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 128}},
        "num_patches": 1024, "pos_embed_max_size": 32, "pos_embed_scaling_factor": None,
        "x_block_self_attn_layers": []}
_CHROMA = {"image_model": "chroma", "axes_dim": [16, 56, 56], "num_heads": 24, "mlp_ratio": 4.0, "theta": 10000,
           "out_channels": 64, "qkv_bias": True, "in_channels": 64, "hidden_size": 3072, "context_in_dim": 4096,
           "patch_size": 2, "depth": 1, "depth_single_blocks": 0, "in_dim": 64, "out_dim": 3072,
           "hidden_dim": 5120, "n_layers": 5}
_WAN = {"image_model": "wan2.1", "dim": 128, "out_dim": 16, "num_heads": 1, "ffn_dim": 256, "num_layers": 1,
        "patch_size": (1, 2, 2), "freq_dim": 256, "window_size": (-1, -1), "qk_norm": True, "cross_attn_norm": True,
        "eps": 1e-6}
_QWEN = {"image_model": "qwen_image", "in_channels": 64, "num_layers": 1}
_PIXART_ALPHA = {"num_heads": 16, "patch_size": 2, "hidden_size": 1152, "in_channels": 4, "depth": 1,
                 "model_max_length": 120, "image_model": "pixart_alpha", "micro_condition": True}
_LTXV = {"image_model": "ltxv", "num_layers": 1, "attention_head_dim": 2, "cross_attention_dim": 64}
# SDXL's class match needs model_channels 320, transformer_depth [0, 0, 2, 2, 10, 10] (24 blocks at context 2048)
# and label_emb 2816 → 1280; one level of six res blocks carries them without a second level or a middle block.
_SDXL = {"use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False,
         "in_channels": 4, "out_channels": 4, "model_channels": 320, "num_res_blocks": [6], "channel_mult": [1],
         "transformer_depth": [0, 0, 2, 2, 10, 10], "transformer_depth_output": [0] * 7,
         "transformer_depth_middle": -2, "use_linear_in_transformer": True, "context_dim": 2048,
         "adm_in_channels": 2816, "use_temporal_attention": False, "use_temporal_resblock": False,
         "num_classes": "sequential"}

# name -> (detected supported_models class, detection config, seed)
MODELS: dict[str, tuple[str, dict, int]] = {
    "fam_sd3_ft": ("SD3", _SD3, 301),
    "fam_sd3_base": ("SD3", _SD3, 302),
    "fam_chroma_ft": ("Chroma", _CHROMA, 311),
    "fam_chroma_base": ("Chroma", _CHROMA, 312),
    "fam_wan21_i2v": ("WAN21_I2V", {**_WAN, "in_dim": 36, "model_type": "i2v"}, 321),
    "fam_wan21_t2v": ("WAN21_T2V", {**_WAN, "in_dim": 16, "model_type": "t2v"}, 322),
    "fam_qwen_image_edit": ("QwenImage", _QWEN, 331),
    "fam_qwen_image": ("QwenImage", _QWEN, 332),
    "fam_pixart_alpha": ("PixArtAlpha", _PIXART_ALPHA, 341),
    "fam_ltxv_ft": ("LTXV", _LTXV, 351),
    "fam_ltxv_base": ("LTXV", _LTXV, 352),
    "fam_sdxl_ip2p": ("SDXL_instructpix2pix", {**_SDXL, "in_channels": 8}, 361),
    "fam_sdxl_base": ("SDXL", _SDXL, 362),
}

# Keys the host's networks keep as state but that a release does not ship (PixArt recomputes pos_embed from
# the latent size; a shipped small one would set pe_interpolation 0 and give NaN, see model-families.md).
_DROP = {"PixArtAlpha": ("pos_embed",)}


def cache_key() -> str:
    return hashlib.sha256(json.dumps([VERSION, MODELS], sort_keys=True, default=list).encode()).hexdigest()[:12]


def cache_folder() -> Path:
    return ROOT / ".host" / "cache" / f"families-{cache_key()}"


def file_name(name: str) -> str:
    return f"{name}.safetensors"


def model_config(config: dict):
    """The host's supported_models instance for a detection config (what UNETLoader would pick)."""
    import comfy.model_detection

    return comfy.model_detection.model_config_from_unet_config(dict(config))


def _shapes(name: str) -> dict[str, tuple]:
    cls_name, config, _seed = MODELS[name]
    mc = model_config(config)
    assert type(mc).__name__ == cls_name, (name, type(mc).__name__)
    # device="meta": the host's operations allocate nothing (a context manager would also catch PixArt's .item())
    model = mc.get_model({}, device=torch.device("meta"))
    shapes = {k: tuple(v.shape) for k, v in model.diffusion_model.state_dict().items()
              if not k.startswith(_DROP.get(cls_name, ("\0",)))}
    return shapes


def build(name: str) -> dict[str, torch.Tensor]:
    """Seeded random weights for stand-in ``name`` (bf16, unprefixed keys)."""
    import_comfy()
    seed = MODELS[name][2]
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in sorted(_shapes(name).items()):
        leaf = key.rsplit(".", 1)[-1]
        if len(shape) <= 1:  # norm scales (weight, scale, …) 1; biases 0
            value = torch.zeros(shape) if leaf == "bias" else torch.ones(shape)
        else:
            value = torch.randn(shape, generator=gen) / math.sqrt(math.prod(shape[1:]))
        out[key] = value.to(torch.bfloat16)
    return out


def _atomic_save(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, path)


def write_all(folder: Path | None = None, names=None) -> dict[str, Path]:
    """Write each stand-in once into ``folder`` (default: the cache); returns name -> path."""
    import_comfy()
    folder = folder or cache_folder()
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in names or MODELS:
        path = paths[name] = folder / file_name(name)
        if not path.exists():
            tensors = build(name)
            _atomic_save(path, tensors)
            del tensors
    return paths


def install(paths: dict[str, Path], models: Path) -> None:
    """Link the stand-ins into a ComfyUI ``models`` folder's ``diffusion_models``."""
    target = models / "diffusion_models"
    target.mkdir(parents=True, exist_ok=True)
    for path in paths.values():
        link = target / path.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(path)


def check(path: Path) -> dict:
    """Load ``path`` as UNETLoader does and report the class, config and any missing/unexpected keys."""
    import logging

    import comfy.model_detection
    import comfy.sd
    import comfy.utils

    records: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Catch(level=logging.DEBUG)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        sd, metadata = comfy.utils.load_torch_file(str(path), return_metadata=True)
        detected = comfy.model_detection.detect_unet_config(sd, "", metadata=metadata)
        with torch.inference_mode():
            model = comfy.sd.load_diffusion_model(str(path))
    finally:
        root.removeHandler(handler)
    name = path.name[: -len(".safetensors")]
    problems = [m for m in records if "unet missing" in m or "unet unexpected" in m]
    params = sum(v.numel() for v in sd.values())
    return {"class": type(model.model.model_config).__name__, "expected_class": MODELS[name][0],
            "config_matches": _norm(detected) == _norm(MODELS[name][1]), "detected": detected,
            "problems": problems, "params": params, "bytes": path.stat().st_size, "model": model}


def _norm(config: dict) -> str:
    return json.dumps(config, sort_keys=True, default=list)


if __name__ == "__main__":  # python3 tools/host.py python tests/support/families.py
    import sys
    import time

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    t0 = time.time()
    written = write_all()
    print(f"written in {time.time() - t0:.1f}s to {cache_folder()}")
    for n, p in written.items():
        t0 = time.time()
        r = check(p)
        r.pop("model")
        print(n, r["class"], r["expected_class"], r["config_matches"], r["problems"], f"{r['params'] / 1e6:.2f}M",
              f"{r['bytes'] / 2**20:.1f}MiB", f"load {time.time() - t0:.1f}s")
        if not r["config_matches"]:
            print("   detected", r["detected"])
