"""Models for timing and GPU tests: ComfyUI's own model classes with random weights, conditioning, sampling.

Shared by the benchmark (tools/benchmark.py) and the tests that run the same models (test_fastpath_cuda.py,
test_prior_fp8.py). ComfyUI must be importable (``comfy_env.import_comfy()``) before these functions run.
"""
from __future__ import annotations

from .checkpoints import unet_config as _small_unet

SD15 = dict(use_checkpoint=False, image_size=32, out_channels=4, use_spatial_transformer=True, legacy=False,
            adm_in_channels=None, in_channels=4, model_channels=320, num_res_blocks=[2, 2, 2, 2],
            transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], channel_mult=[1, 2, 4, 4], transformer_depth_middle=1,
            use_linear_in_transformer=False, context_dim=768, num_heads=8,
            transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
            use_temporal_attention=False, use_temporal_resblock=False)
SDXL = dict(use_checkpoint=False, image_size=32, out_channels=4, use_spatial_transformer=True, legacy=False,
            num_classes="sequential", adm_in_channels=2816, in_channels=4, model_channels=320,
            num_res_blocks=[2, 2, 2], transformer_depth=[0, 0, 2, 2, 10, 10], channel_mult=[1, 2, 4],
            transformer_depth_middle=10, use_linear_in_transformer=True, context_dim=2048, num_head_channels=64,
            transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10],
            use_temporal_attention=False, use_temporal_resblock=False)
# Distilled SDXLs (Segmind's SSD-1B, 1.3 B parameters; Segmind Vega, 0.75 B): SDXL's latent space, text encoders and
# conditioning, fewer transformer blocks and no middle transformer. The configs ComfyUI itself gives them
# (model_detection.unet_config_from_diffusers_unet); model detection reads them as its SSD1B / Segmind_Vega.
SSD1B = {**SDXL, "transformer_depth": [0, 0, 2, 2, 4, 4], "transformer_depth_output": [0, 0, 0, 1, 1, 2, 10, 4, 4],
         "transformer_depth_middle": -1}
VEGA = {**SDXL, "transformer_depth": [0, 0, 1, 1, 2, 2], "transformer_depth_output": [0, 0, 0, 1, 1, 1, 2, 2, 2],
        "transformer_depth_middle": -1}

# SD3.5-medium's MMDiT-X as ComfyUI's model_detection reads it from the checkpoint (2.5 B parameters): a DiT with
# flow sampling, which calls no DIFFUSION_MODEL wrapper (the fast path wraps apply_model).
SD35M = dict(in_channels=16, patch_size=2, out_channels=16, depth=24, input_size=None, adm_in_channels=2048,
             context_embedder_config={"target": "torch.nn.Linear",
                                      "params": {"in_features": 4096, "out_features": 1536}},
             num_patches=147456, pos_embed_max_size=384, qk_norm="rms", pos_embed_scaling_factor=None,
             x_block_self_attn_layers=list(range(13)))


FP8 = {"fp8_e4m3fn": "float8_e4m3fn", "fp8_e5m2": "float8_e5m2"}  # UNETLoader's weight_dtype → torch dtype


def build_model(unet_config: dict, seed: int, device_kind: str, gpu_dtype=None, weight_dtype=None):
    """A ModelPatcher around ComfyUI's model class for ``unet_config``, random fp16 (CPU: fp32) weights.

    ``weight_dtype`` (an fp8 torch dtype): the same random weights (same seed) stored in that dtype and cast to
    the compute dtype at use, as ``UNETLoader`` with ``weight_dtype`` fp8 builds a model (comfy/sd.py
    ``load_diffusion_model_state_dict``: ``set_inference_dtype(fp8, unet_manual_cast(fp8, load device, …))``,
    then the weights copied into the fp8 parameters).
    """
    import torch
    import comfy.model_detection
    import comfy.model_management as mm
    import comfy.model_patcher

    config = comfy.model_detection.model_config_from_unet_config(dict(unet_config))
    dtype = (gpu_dtype or torch.float16) if device_kind == "cuda" else torch.float32
    if weight_dtype is None:
        config.set_inference_dtype(dtype, None)
    else:
        config.set_inference_dtype(weight_dtype, mm.unet_manual_cast(weight_dtype, mm.get_torch_device(),
                                                                     config.supported_inference_dtypes))
    model = config.get_model({}, "")
    # Drawn on the GPU where there is one (seconds instead of a minute for two SDXL UNets), kept on the CPU
    # until ComfyUI loads the model, as after loading a checkpoint.
    draw = "cuda" if device_kind == "cuda" else "cpu"
    gen = torch.Generator(device=draw).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.diffusion_model.named_parameters():
            if p.ndim <= 1:
                p.copy_(torch.ones(p.shape) if name.endswith("weight") else torch.zeros(p.shape))
            else:
                # gain 0.5 keeps a deep random fp16 UNet's activations finite (SDXL overflows at 1)
                std = 0.5 / p[0].numel() ** 0.5
                # drawn in fp32, rounded to the model's dtype; an fp8 model gets the fp16 (CPU: fp32) weights
                # rounded once more, as an fp16 checkpoint loaded with weight_dtype fp8
                p.copy_(torch.empty(p.shape, device=draw).normal_(0.0, std, generator=gen).to(dtype))
    if weight_dtype is None:  # the loader copies weights into the parameters it built: their dtypes stay
        model.diffusion_model.to(dtype)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def conditioning(unet_config: dict, size: int, seed: int):
    import torch

    gen = torch.Generator().manual_seed(seed)
    if "context_embedder_config" in unet_config:  # MMDiT: CLIP-L/G + T5 context, 2048 pooled
        width = unet_config["context_embedder_config"]["params"]["in_features"]
        return [[torch.randn(1, 154, width, generator=gen),
                 {"pooled_output": torch.randn(1, unet_config["adm_in_channels"], generator=gen)}]]
    ctx = torch.randn(1, 77, unet_config["context_dim"], generator=gen)
    extra = {}
    if unet_config.get("adm_in_channels"):
        extra = dict(pooled_output=torch.randn(1, 1280, generator=gen), width=size, height=size, crop_w=0, crop_h=0,
                     target_width=size, target_height=size)
    return [[ctx, extra]]


def sample(model, positive, negative, size: int, steps: int, cfg: float, seed: int = 0):
    import torch
    import comfy.sample

    channels = model.get_model_object("latent_format").latent_channels
    latent = torch.zeros(1, channels, size // 8, size // 8)
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(model, noise, steps, cfg, "euler", "normal", positive, negative, latent,
                               disable_pbar=True, seed=seed)


def sd15_small() -> dict:
    """SD1.5 width, two levels of one res block: the CPU benchmark's default and the CUDA tests' model."""
    return {**SD15, **_small_unet(4, [1, 2]), "num_res_blocks": [1, 1]}


def sd15_tiny() -> dict:
    """SD1.5 width, one level: quick checks."""
    return {**SD15, **_small_unet(4, [1]), "num_res_blocks": [1]}
