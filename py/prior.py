"""The PRIOR: a model that supplies the unconditional branch, with its own negative conditioning.

A prior travels between nodes as a small immutable object. It holds a ModelPatcher (never mutated:
whoever patches it clones first) and the CONDITIONING encoded by the prior's own text encoder.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .errors import PriorSwapError
from .guidance import bridge_error

PRIOR_TYPE = "PRIOR"


@dataclass(frozen=True)
class Prior:
    """A prior model and its negative/empty conditioning (ComfyUI CONDITIONING list)."""

    model: Any  # comfy.model_patcher.ModelPatcher
    negative: list
    label: str = "the prior"  # how error messages raised while sampling name it


def make_prior(model: Any, negative: list) -> Prior:
    """Build a :class:`Prior` from a MODEL and its CONDITIONING, checking both first."""
    if model is None:
        raise PriorSwapError("PriorFromModel: no model connected. Connect the prior's MODEL output.")
    if not negative:
        raise PriorSwapError(
            "PriorFromModel: the prior's negative conditioning is empty. Connect a CLIPTextEncode "
            "(empty text is fine) that uses the prior's own CLIP.")
    # Channel checks wait for PriorSwapCFG: a dual-condition model may serve as its own prior.
    check_conditioning_width(model, negative, "PriorFromModel")
    return Prior(model=model, negative=negative, label="the prior from Prior From Model")


def encode_text(clip: Any, text: str) -> list:
    """Encode ``text`` with ``clip`` exactly as ComfyUI's CLIPTextEncode does."""
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


# PriorCheckpointLoader's weight_dtype choices: those of the host's UNETLoader, mapped as it maps them.
WEIGHT_DTYPES = ("default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2")


def weight_dtype_options(weight_dtype: str) -> dict:
    """``model_options`` for ``weight_dtype``, exactly as ComfyUI's UNETLoader builds them (nodes.py)."""
    if weight_dtype in (None, "", "default"):
        return {}
    if weight_dtype not in WEIGHT_DTYPES:
        raise PriorSwapError(f"PriorCheckpointLoader: weight_dtype must be one of {', '.join(WEIGHT_DTYPES)} "
                             f"(got {weight_dtype!r}).")
    if weight_dtype == "fp8_e5m2":
        return {"dtype": torch.float8_e5m2}
    options: dict = {"dtype": torch.float8_e4m3fn}
    if weight_dtype == "fp8_e4m3fn_fast":
        options["fp8_optimizations"] = True
    return options


def load_prior_checkpoint_by_name(ckpt_name: str, negative_prompt: str,
                                  weight_dtype: str = "default") -> tuple[Prior, Any, Any]:
    """PriorCheckpointLoader: resolve ``ckpt_name`` in the checkpoints folder and load it as a prior."""
    import folder_paths

    try:
        # ComfyUI normalises the name under the folder, so '../' cannot leave it.
        path = folder_paths.get_full_path_or_raise("checkpoints", ckpt_name)
    except FileNotFoundError as e:
        raise _load_error(ckpt_name, e) from e
    return load_prior_checkpoint(path, negative_prompt, name=ckpt_name, weight_dtype=weight_dtype)


def load_prior_checkpoint(ckpt_path: str, negative_prompt: str, name: str,
                          weight_dtype: str = "default") -> tuple[Prior, Any, Any]:
    """Load a checkpoint as a prior; returns (prior, model, clip).

    ``weight_dtype`` (UNETLoader's choices) goes to ``load_checkpoint_guess_config`` as ``model_options``: the
    diffusion model's weights are stored in fp8 and cast to the compute dtype at use; the text encoder is not
    changed.
    """
    import comfy.sd
    import folder_paths

    model_options = weight_dtype_options(weight_dtype)
    if model_options.pop("fp8_optimizations", False):
        # 0.3.75's load_checkpoint_guess_config reads only "dtype" and "custom_operations" of model_options (the
        # fp8_optimizations flag UNETLoader sets reaches the model config only through load_diffusion_model), so
        # the operations the host's pick_operations chooses for that flag are passed directly: fp8 matrix
        # multiplication where the GPU computes in fp8, else the plain fp8 storage above.
        import comfy.model_management
        import comfy.ops

        if comfy.model_management.supports_fp8_compute(comfy.model_management.get_torch_device()):
            model_options["custom_operations"] = comfy.ops.fp8_ops
    try:
        model, clip, _vae, _clipvision = comfy.sd.load_checkpoint_guess_config(
            ckpt_path, output_vae=False, output_clip=True,
            embedding_directory=folder_paths.get_folder_paths("embeddings"), model_options=model_options)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as e:  # a broken file: say which and what to do, keep the original as the cause
        if type(e).__name__ in ("OutOfMemoryError", "InterruptProcessingException"):
            raise
        raise _load_error(name, e) from e
    if model is None:
        raise PriorSwapError(f"PriorCheckpointLoader: '{name}' holds no diffusion model.")
    if clip is None:
        raise PriorSwapError(
            f"PriorCheckpointLoader: '{name}' has no text encoder, so its negative prompt cannot be "
            "encoded. Load it with your own loaders and use PriorFromModel instead.")
    check_prior_model(model, "PriorCheckpointLoader")
    prior = Prior(model=model, negative=encode_text(clip, negative_prompt),
                  label=f"the prior '{name}' (Load Prior Checkpoint)")
    return prior, model, clip


def _load_error(name: str, error: BaseException) -> PriorSwapError:
    """What is wrong with a checkpoint file that ComfyUI could not load, and what to do about it."""
    node = "PriorCheckpointLoader"
    text = str(error).strip()
    first = text.splitlines()[0] if text else type(error).__name__
    if isinstance(error, FileNotFoundError):
        return PriorSwapError(
            f"{node}: '{name}' is not in the checkpoints folder (deleted, moved, or a link to a missing file). "
            "Refresh the node list (press R) and pick an existing checkpoint.")
    if "Could not detect model type" in text:
        return PriorSwapError(
            f"{node}: '{name}' is not a diffusion model checkpoint that ComfyUI recognises (a LoRA, VAE or "
            "text-encoder file?). Pick the prior model's full checkpoint, e.g. the base model of your fine-tune.")
    if "Weights only load failed" in text or type(error).__name__ == "UnpicklingError":
        return PriorSwapError(
            f"{node}: '{name}' is a legacy pickle (.ckpt/.pt) that holds more than weights; loading it would "
            "run code stored in the file, so it was refused. Use a .safetensors release of this model.")
    if name.lower().endswith((".safetensors", ".sft")):
        return PriorSwapError(
            f"{node}: '{name}' is not a readable .safetensors file ({first}): it is damaged or was not "
            "downloaded completely. Download it again.")
    return PriorSwapError(
        f"{node}: '{name}' could not be read as a checkpoint ({type(error).__name__}: {first}): it is damaged, "
        "incomplete or not a model file. Download it again, or use a .safetensors release.")


def prior_output_error(label: str, sigma: float) -> PriorSwapError:
    """The error for a prior whose prediction held NaN or inf at ``sigma`` (checked once per step)."""
    return PriorSwapError(
        f"Prior swap: {label} returned NaN/inf (at sigma {sigma:.4g}), which would turn the image "
        "black or into noise. Its weights or a patch on it (LoRA, merge, low-precision dtype) are broken: "
        "load the prior without the patch, download the checkpoint again, or run the prior in fp32 "
        "(ModelComputeDtype, --force-fp32).")


def latent_space(model: Any) -> tuple[str, int]:
    """The latent format's class name and channel count: two models share a latent space iff equal."""
    fmt = model.get_model_object("latent_format")
    return type(fmt).__name__, int(fmt.latent_channels)


def _unet_config(model: Any) -> dict:
    config = getattr(getattr(model.model, "model_config", None), "unet_config", None)
    return config if isinstance(config, dict) else {}


def image_inputs(model: Any) -> int:
    """How many input channels beyond the noisy latent the model takes (InstructPix2Pix's image, inpainting's
    mask and masked image, Wan/HunyuanVideo/Cosmos I2V's start frames…); 0 for a plain text-to-image model.

    Asked of the host itself: ``BaseModel.concat_cond`` returns the concat input a model needs, or None.
    The diffusion model's own ``in_channels`` cannot tell: DiTs count patch-packed channels there (Qwen-Image
    and Chroma take 64 = 16 × 2 × 2 for a 16-channel latent). UNets that build their concat in
    ``extra_conds`` (Stable Zero123) are told by their input convolution.
    """
    import comfy.ldm.modules.diffusionmodules.openaimodel as openaimodel

    fmt = model.get_model_object("latent_format")
    channels = int(fmt.latent_channels)
    base = model.model
    noise = torch.zeros((1, channels) + (1,) * (getattr(fmt, "latent_dimensions", 2) - 2) + (8, 8))
    try:
        concat = base.concat_cond(noise=noise, latent_image=noise, device=torch.device("cpu"))
    except Exception:  # a model class whose concat_cond needs more: trust what it declares
        concat = noise if getattr(base, "concat_keys", ()) else None
    extra = 0 if concat is None else int(concat.shape[1])
    if not extra and isinstance(getattr(base, "diffusion_model", None), openaimodel.UNetModel):
        extra = max(0, int(_unet_config(model).get("in_channels", channels)) - channels)
    return extra


def check_prior_model(model: Any, node: str) -> None:
    """Refuse models that cannot produce a plain unconditional prediction on their own latent."""
    extra = image_inputs(model)
    if extra:
        channels = latent_space(model)[1]
        concat_keys = tuple(getattr(model.model, "concat_keys", ()) or ())
        raise PriorSwapError(
            f"{node}: the prior takes {channels + extra} input channels for {channels} latent channels "
            f"(extra inputs: {', '.join(concat_keys) or 'image concat'}), e.g. an InstructPix2Pix, inpainting or "
            "image-to-video model. A prior must be a plain text-to-image or text-to-video model (SD1.5, SDXL "
            "base, Wan 2.1 T2V, Qwen-Image…); use the image-conditioned model as the fine-tune instead.")


def check_conditioning_width(model: Any, conditioning: list, node: str) -> None:
    """Refuse conditioning made by another text encoder than the model expects (context width)."""
    context_dim = _unet_config(model).get("context_dim")
    if not context_dim:
        return
    for tensor, _extra in conditioning:
        if tensor is not None and tensor.shape[-1] != context_dim:
            raise PriorSwapError(
                f"{node}: the prior's conditioning is {tensor.shape[-1]} wide but the prior model expects "
                f"{context_dim} (it was encoded by another model's CLIP). Encode the prior's negative "
                "prompt with the prior's own CLIP.")


def check_compatible(model: Any, prior: Prior, node: str) -> None:
    """Refuse a prior that does not share the sampled model's latent space."""
    if not isinstance(prior, Prior):
        raise PriorSwapError(f"{node}: the 'prior' input is not a PRIOR. Connect a PriorCheckpointLoader "
                             "or PriorFromModel node.")
    model_space, prior_space = latent_space(model), latent_space(prior.model)
    if model_space != prior_space:
        raise PriorSwapError(
            f"{node}: the prior works in another latent space ({prior_space[0]}, {prior_space[1]} channels) "
            f"than the model ({model_space[0]}, {model_space[1]} channels). Pick a prior of the same family "
            "(e.g. SD1.5 or SD2.1 for SD1.5 fine-tunes, SDXL base for SDXL fine-tunes).")
    if prior.model.model is not model.model:
        # The sampled model itself may be its own prior (identity); any other prior must be plain.
        check_prior_model(prior.model, node)
    check_shared_weights(model, prior.model, node)
    why = bridge_error(model.get_model_object("model_sampling"), prior.model.get_model_object("model_sampling"))
    if why:
        raise PriorSwapError(f"{node}: the prior cannot be evaluated at the model's noise levels: {why}. "
                             "Pick a prior with a standard parameterization (eps, v-prediction or flow).")


def check_shared_weights(model: Any, prior_model: Any, node: str) -> None:
    """Refuse a prior that is the same loaded checkpoint as the model but with other patches.

    ComfyUI holds one set of weights (and one ``model_sampling``) per loaded checkpoint; two
    ModelPatchers over it with different LoRAs or object patches cannot both be loaded at once
    (upstream's DualModelGuider silently gets this wrong, core issue #14521).
    """
    if prior_model.model is not model.model:
        return
    same_objects = (prior_model.object_patches.keys() == model.object_patches.keys() and all(
        prior_model.object_patches[k] is model.object_patches[k] for k in model.object_patches))
    same_weights = prior_model.patches_uuid == model.patches_uuid or (not prior_model.patches and not model.patches)
    if not (same_objects and same_weights):
        raise PriorSwapError(
            f"{node}: the prior is the same loaded checkpoint as the model, with different patches (LoRA, "
            "ModelSamplingDiscrete…). ComfyUI keeps one copy of a loaded checkpoint's weights, so the two "
            "cannot each keep their own. Load the prior with its own loader: Load Prior Checkpoint, or a "
            "second Load Checkpoint node into Prior From Model.")
