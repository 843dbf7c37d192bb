"""The prior's inputs for one run: its negative conds processed for its own model, and its model options.

Processed from the SAMPLER_SAMPLE wrapper, right after ``CFGGuider.inner_sample`` processed the guider's
conds, with the same ``latent_image``, ``denoise_mask``, ``seed`` and ``latent_shapes`` (LTXV's image-to-video
timesteps, nested latents and others read them in ``extra_conds``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

# Keys of a cond dict that belong to the sampled model's graph and must not reach the prior.
# The fine-tune's image/video conditioning is an input of the fine-tune alone (the paper's ∅ term has none):
# InstructPix2Pix/inpainting/Wan I2V concat latents and masks, CLIP-vision embeds, reference latents (Qwen-Image-
# Edit, Flux Kontext), HunyuanVideo I2V's guiding frame and reference, VACE's frames and masks.
FOREIGN_COND_KEYS = ("control", "gligen", "hooks", "area", "mask", "strength", "set_area_to_bounds",
                     "concat_latent_image", "concat_mask", "concat_image", "noise_augmentation",
                     "clip_vision_output", "reference_latents", "reference_latents_method", "guiding_frame_index",
                     "ref_latent", "vace_frames", "vace_mask", "vace_strength", "camera_conditions",
                     "unclip_conditioning", "time_dim_concat", "keyframe_idxs", "reference_motion",
                     "pose_video_latent", "face_video_pixels", "control_video", "audio_embed", "noise_concat",
                     "concat_mask_index")


@dataclass
class PriorInputs:
    """What each prior call of a run passes to ``calc_cond_batch`` besides (x, σ)."""

    conds: list  # the prior's negative, processed for the prior's model on its device
    options: dict  # the prior's model_options for this run (its patches, wrappers and sample_sigmas)


def prepare(prior: Any, negative: list, noise: torch.Tensor, elsewhere: bool,
            latent_image: torch.Tensor | None = None, denoise_mask: torch.Tensor | None = None,
            seed: int | None = None, latent_shapes: Any = None, sample_sigmas: torch.Tensor | None = None,
            apply_model_wrapper: Callable | None = None, key: str = "") -> PriorInputs:
    """Process ``negative`` for ``prior`` (a ModelPatcher) as the host processes the guider's conds.

    ``noise`` is already on the prior's device; ``elsewhere``: that device is not the sampled model's (another
    GPU). ``apply_model_wrapper``: the fast path's APPLY_MODEL wrapper for the prior, added under ``key``.
    """
    import comfy.model_patcher
    import comfy.patcher_extension
    import comfy.sampler_helpers
    import comfy.samplers

    device = noise.device

    def moved(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(device)

    conds = []
    for c in comfy.sampler_helpers.convert_cond(negative):
        for k in FOREIGN_COND_KEYS:
            c.pop(k, None)
        conds.append(c)
    extra = {"latent_shapes": latent_shapes} if latent_shapes is not None else {}
    conds = comfy.samplers.process_conds(prior.model, noise, {"negative": conds}, device, moved(latent_image),
                                         moved(denoise_mask), seed, **extra)["negative"]
    options = comfy.model_patcher.create_model_options_clone(prior.model_options)
    transformer_options = options.setdefault("transformer_options", {})
    if sample_sigmas is not None:
        transformer_options["sample_sigmas"] = sample_sigmas.to(device)
    comfy.sampler_helpers.prepare_model_patcher(prior, {"negative": conds}, options)
    if elsewhere:  # patches' tensors follow the prior to its GPU, as ComfyUI does for the sampled model
        comfy.samplers.cast_to_load_options(options, device=device, dtype=prior.model_dtype())
    if apply_model_wrapper is not None:
        wrappers = transformer_options.setdefault("wrappers", {}).setdefault(
            comfy.patcher_extension.WrappersMP.APPLY_MODEL, {})
        wrappers[key] = [apply_model_wrapper]
    return PriorInputs(conds, options)
