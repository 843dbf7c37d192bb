"""The toy models: a small pixel-space base (the prior) and two fine-tunes of it, trained by this project.

No public weights can be downloaded where this project is built, so the evidence that the prior helps
comes from models the project trains itself (``tools/train_toy_pair.py``), on procedurally drawn
16×16 shapes in random colours (docs/evidence.md):

- the **base** is an unconditional model, trained on the broad data (fresh shapes of every class, colour,
  position and size) — the role SD1.5 plays for its fine-tunes;
- the **fine-tune** starts from the base's weights and learns class conditioning with CFG dropout
  (10 % of its samples see the empty condition ∅), on a small fixed set for many epochs — a narrow
  fine-tuning task;
- the **edit** model is an InstructPix2Pix-style fine-tune of the base: 3 more input channels take the source
  image (ComfyUI's own ``SD15_instructpix2pix`` class, fed by the stock *InstructPixToPixConditioning*), the
  instruction "make it a <shape>" is the condition.

All are ComfyUI's own ``UNetModel`` inside a ComfyUI model class, in pixel space: the latent format is
ComfyUI's 3-channel identity format (the one Chroma Radiance uses), so the stock ``VAELoader``'s
``pixel_space`` VAE decodes them and ``EmptyChromaRadianceLatentImage`` makes their empty latent.
The condition is a fixed vector per shape fed to the UNet's cross-attention, as a text embedding is.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from .errors import PriorSwapError

WEIGHTS_DIR = Path(__file__).resolve().parent / "toy_pair"
MODEL_FILES = {"base": "toy_base.safetensors", "finetune": "toy_finetune.safetensors",
               "edit": "toy_edit.safetensors"}
# Models only the evidence uses (tools/evaluate_toy_pair.py): the base at earlier steps, the small control,
# more training seeds of both fine-tunes.
EVIDENCE_DIR = Path(__file__).resolve().parent / "toy_pair" / "evidence"
CLASSIFIER_FILE = "toy_classifier.safetensors"

CLASSES = ("disk", "ring", "square", "frame", "triangle", "diamond", "plus", "cross", "bar", "dots")
EMPTY = "empty"  # the unconditional condition ∅
IMAGE_SIZE = 16
CONTEXT_DIM = 32
_CONTEXT_SEED = 20250326  # the condition vectors are fixed, not learned: anyone can rebuild them

UNET_CONFIG: dict[str, Any] = dict(
    image_size=IMAGE_SIZE, in_channels=3, out_channels=3, model_channels=32, num_res_blocks=[1, 1, 1],
    channel_mult=[1, 1, 1], transformer_depth=[0, 1, 1], transformer_depth_output=[0, 0, 1, 1, 1, 1],
    transformer_depth_middle=1, use_spatial_transformer=True, context_dim=CONTEXT_DIM, num_heads=-1,
    num_head_channels=32, use_linear_in_transformer=True, legacy=False, use_checkpoint=False,
    adm_in_channels=None, use_temporal_attention=False, use_temporal_resblock=False,
)
# The Autoguidance control of the evidence (tools/train_toy_pair.py): a separate model of less capacity,
# two levels instead of three. 32 channels is the floor: ComfyUI's ResBlocks use GroupNorm with 32 groups.
SMALL_UNET_CONFIG: dict[str, Any] = dict(UNET_CONFIG, num_res_blocks=[1, 1], channel_mult=[1, 1],
                                         transformer_depth=[0, 1], transformer_depth_output=[0, 0, 1, 1])
# The edit model (InstructPix2Pix-style): the source image is concatenated to the noisy input, 3 + 3 channels.
EDIT_IN_CHANNELS = 6
CONFIG_METADATA_KEY = "prior_swap_toy_unet"  # each weights file carries its UNet config (JSON) in its metadata


def toy_model_config(unet_config: dict[str, Any] | None = None) -> Any:
    """The ComfyUI model config of a toy model: a ``supported_models_base.BASE`` in pixel space. A UNet with
    more input channels than the latent has is an edit model: ComfyUI's own ``SD15_instructpix2pix`` class,
    which concatenates the ``concat_latent_image`` of the stock *InstructPixToPixConditioning* node."""
    import comfy.latent_formats
    import comfy.model_base
    import comfy.supported_models_base

    class ToyPair(comfy.supported_models_base.BASE):
        unet_config = UNET_CONFIG
        unet_extra_config: dict = {}
        latent_format = comfy.latent_formats.ChromaRadiance  # 3 channels, identity: pixels in [-1, 1]
        memory_usage_factor = 1.0
        supported_inference_dtypes = [torch.float16, torch.bfloat16, torch.float32]

        def get_model(self, state_dict: dict, prefix: str = "", device: Any = None) -> Any:
            if self.unet_config["in_channels"] > self.unet_config["out_channels"]:
                return comfy.model_base.SD15_instructpix2pix(self, device=device)
            return super().get_model(state_dict, prefix, device=device)

    return ToyPair(dict(unet_config or UNET_CONFIG))


# --- data ---------------------------------------------------------------------------------------

def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    k = torch.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6], dim=1)
    return v[:, None] - v[:, None] * s[:, None] * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def _shape_masks(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Inside-masks of all classes on local coordinates (u right, v down); shape [classes, N, H, W]."""
    r = torch.sqrt(u * u + v * v)
    box = torch.maximum(u.abs(), v.abs())
    p, q = (u + v) / math.sqrt(2), (u - v) / math.sqrt(2)
    dots = ((u - 0.5) ** 2 + v * v < 0.38 ** 2) | ((u + 0.5) ** 2 + v * v < 0.38 ** 2)
    return torch.stack([
        r < 0.85,                                                              # disk
        (r > 0.5) & (r < 0.9),                                                 # ring
        box < 0.75,                                                            # square
        (box > 0.42) & (box < 0.8),                                            # frame
        (v < 0.75) & (u.abs() < (v + 0.85) / 1.6 * 0.95),                      # triangle, apex up
        u.abs() + v.abs() < 0.95,                                              # diamond
        ((u.abs() < 0.28) & (v.abs() < 0.9)) | ((v.abs() < 0.28) & (u.abs() < 0.9)),  # plus
        ((p.abs() < 0.25) & (q.abs() < 0.9)) | ((q.abs() < 0.25) & (p.abs() < 0.9)),  # cross
        (u.abs() < 0.95) & (v.abs() < 0.3),                                    # bar
        dots,                                                                  # dots
    ]).float()


def shape_params(n: int, generator: torch.Generator, device: Any = None) -> dict[str, torch.Tensor]:
    """Random drawing parameters of ``n`` shapes: position, size, a small rotation, colours."""
    def rand(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(n, generator=generator, device=generator.device).to(device) * (hi - lo) + lo

    cx, cy, scale = rand(-0.25, 0.25), rand(-0.25, 0.25), rand(0.55, 0.8)
    angle = rand(-0.26, 0.26)  # ±15°: keeps plus/cross and square/diamond apart
    fg = _hsv_to_rgb(rand(0, 1), rand(0.6, 1.0), rand(0.75, 1.0))
    bg = _hsv_to_rgb(rand(0, 1), rand(0.0, 0.5), rand(0.05, 0.35))
    return dict(cx=cx, cy=cy, scale=scale, angle=angle, fg=fg, bg=bg)


def draw_with(labels: torch.Tensor, params: dict[str, torch.Tensor], size: int = IMAGE_SIZE,
              supersample: int = 4) -> torch.Tensor:
    """Draw one shape per label with the given parameters, anti-aliased: ``[N, 3, size, size]`` in [-1, 1]."""
    n, device = labels.shape[0], labels.device
    cx, cy, scale, angle = (params[k].to(device) for k in ("cx", "cy", "scale", "angle"))
    res = size * supersample
    axis = (torch.arange(res, device=device) + 0.5) / res * 2 - 1
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    dx = (x[None] - cx[:, None, None]) / scale[:, None, None]
    dy = (y[None] - cy[:, None, None]) / scale[:, None, None]
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy
    masks = _shape_masks(u, v)  # [C, N, res, res]
    mask = masks[labels, torch.arange(n, device=device)]
    mask = torch.nn.functional.avg_pool2d(mask[:, None], supersample)  # anti-aliasing
    fg, bg = params["fg"].to(device), params["bg"].to(device)
    image = bg[:, :, None, None] * (1 - mask) + fg[:, :, None, None] * mask
    return image * 2 - 1


def draw_shapes(labels: torch.Tensor, generator: torch.Generator, size: int = IMAGE_SIZE,
                supersample: int = 4) -> torch.Tensor:
    """Draw one shape per label: bright random colour on a dark random background, random position,
    size and a small rotation, anti-aliased. Returns ``[N, 3, size, size]`` in [-1, 1] on ``labels``' device.
    """
    return draw_with(labels, shape_params(labels.shape[0], generator, labels.device), size, supersample)


def draw_edits(n: int, generator: torch.Generator, device: Any = None) -> tuple[torch.Tensor, ...]:
    """The edit task: a source shape and the instruction "make it a <target>", whose answer is the target
    shape drawn with the source's colours, position, size and rotation. Returns
    ``(source, target, target_labels)``; the target class always differs from the source's."""
    source_labels = torch.randint(0, len(CLASSES), (n,), generator=generator, device=generator.device).to(device)
    shift = torch.randint(1, len(CLASSES), (n,), generator=generator, device=generator.device).to(device)
    target_labels = (source_labels + shift) % len(CLASSES)
    params = shape_params(n, generator, device)
    return draw_with(source_labels, params), draw_with(target_labels, params), target_labels


def class_index(name: str) -> int:
    """The index of a class name (``EMPTY`` is ``len(CLASSES)``), with a clear error for a typo."""
    name = name.strip().lower()
    if name in (EMPTY, "∅", "", "empty (∅)"):
        return len(CLASSES)
    if name not in CLASSES:
        raise PriorSwapError(f"Unknown toy shape {name!r}. The toy pair knows: {', '.join(CLASSES)}, or {EMPTY}.")
    return CLASSES.index(name)


def class_context(labels: torch.Tensor) -> torch.Tensor:
    """The cross-attention context of each label (index ``len(CLASSES)`` is ∅): ``[N, 1, CONTEXT_DIM]``."""
    return _context_table(labels.device)[labels][:, None]


_TABLES: dict[str, torch.Tensor] = {}


def _context_table(device: torch.device) -> torch.Tensor:
    key = str(device)
    if key not in _TABLES:
        gen = torch.Generator().manual_seed(_CONTEXT_SEED)
        _TABLES[key] = torch.randn(len(CLASSES) + 1, CONTEXT_DIM, generator=gen).to(device)
    return _TABLES[key]


def toy_conditioning(names: str) -> list:
    """A CONDITIONING for one shape or a comma-separated list of them (a batch of latents cycles
    through the list, as ComfyUI repeats a conditioning batch to the latent batch)."""
    parts = [p for p in names.split(",") if p.strip()] or [EMPTY]
    labels = torch.tensor([class_index(p) for p in parts])
    return [[class_context(labels), {}]]


# --- models -------------------------------------------------------------------------------------

def new_unet(device: Any = None, unet_config: dict[str, Any] | None = None) -> torch.nn.Module:
    """A freshly initialised toy UNet (ComfyUI's ``UNetModel``) for training, in float32."""
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    unet = UNetModel(**(unet_config or UNET_CONFIG), dtype=torch.float32, device=device,
                     operations=comfy.ops.disable_weight_init)
    # ComfyUI's inference ops skip weight init (weights come from a file); training needs PyTorch's own.
    for module in unet.modules():
        torch_class = next((c for c in type(module).__mro__ if c.__module__.startswith("torch.nn.modules")
                            and hasattr(c, "reset_parameters")), None)
        if torch_class is not None:
            torch_class.reset_parameters(module)
    bad = [n for n, p in unet.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise RuntimeError(f"uninitialised toy UNet parameters: {bad[:5]}")
    return unet


def alphas_cumprod() -> torch.Tensor:
    """The toy pair's noise schedule, read from ComfyUI's own ``ModelSamplingDiscrete`` (SD's schedule)."""
    import comfy.model_sampling

    sampling = comfy.model_sampling.ModelSamplingDiscrete(toy_model_config())
    return 1.0 / (1.0 + sampling.sigmas.float() ** 2)


def weights_path(which: str) -> Path:
    """Where the shipped weights of ``which`` ('base', 'finetune' or 'edit') are."""
    if which not in MODEL_FILES:
        raise PriorSwapError(f"Unknown toy model {which!r}; choose one of {', '.join(MODEL_FILES)}.")
    return WEIGHTS_DIR / MODEL_FILES[which]


def unet_config_of(metadata: dict | None) -> dict[str, Any]:
    """The UNet config a toy weights file was trained with, from its safetensors metadata (default without it)."""
    import json

    text = (metadata or {}).get(CONFIG_METADATA_KEY)
    return dict(UNET_CONFIG, **json.loads(text)) if text else dict(UNET_CONFIG)


def save_toy_weights(module: torch.nn.Module, path: Path, unet_config: dict[str, Any] | None = None) -> None:
    """Save a toy module's weights as fp16 safetensors, with its UNet config (if any) in the metadata."""
    import json

    import safetensors.torch

    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {CONFIG_METADATA_KEY: json.dumps(unet_config)} if unet_config is not None else None
    safetensors.torch.save_file({k: v.detach().half().contiguous().cpu() for k, v in module.state_dict().items()},
                                str(path), metadata=metadata)


def load_toy_model(which: str, path: Path | None = None, weight_dtype: torch.dtype | None = None) -> Any:
    """Load a toy model as ComfyUI loads a diffusion model: config → BaseModel → weights → ModelPatcher.

    ``weight_dtype`` stores the weights in that dtype and casts them at use, as ``UNETLoader``'s weight_dtype
    does (comfy.sd.load_diffusion_model_state_dict); None lets ComfyUI choose, as it does by default."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.utils

    path = Path(path) if path is not None else weights_path(which)
    if not path.is_file():
        raise PriorSwapError(f"The toy pair's weights are missing: {path}. Train them with "
                             "`python3 tools/train_toy_pair.py` (see docs/evidence.md) or restore the file from git.")
    state_dict, metadata = comfy.utils.load_torch_file(str(path), safe_load=True, return_metadata=True)
    config = toy_model_config(unet_config_of(metadata))
    load_device = mm.get_torch_device()
    dtype = weight_dtype or mm.unet_dtype(model_params=sum(t.numel() for t in state_dict.values()),
                                          supported_dtypes=config.supported_inference_dtypes)
    config.set_inference_dtype(dtype, mm.unet_manual_cast(dtype, load_device, config.supported_inference_dtypes))
    model = config.get_model(state_dict, "").to(mm.unet_offload_device())
    model.load_model_weights(state_dict, "")
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=mm.unet_offload_device())


class ToyClassifier(torch.nn.Module):
    """A small CNN that tells the toy shapes apart; its penultimate features feed the Fréchet distance."""

    FEATURES = 64

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.SiLU(),
            torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.SiLU(), torch.nn.AvgPool2d(2),
            torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.SiLU(), torch.nn.AvgPool2d(2),
            torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.SiLU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
            torch.nn.Linear(64, self.FEATURES), torch.nn.SiLU(),
        )
        self.head = torch.nn.Linear(self.FEATURES, len(CLASSES))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features of images in [-1, 1]."""
        return self.body(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(images))


def load_classifier(path: Path | None = None) -> ToyClassifier:
    """The shipped classifier, in eval mode on the CPU."""
    import comfy.utils

    model = ToyClassifier()
    model.load_state_dict(comfy.utils.load_torch_file(str(path or WEIGHTS_DIR / CLASSIFIER_FILE), safe_load=True))
    return model.eval()


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``[N, D]`` (FID's formula)."""
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    # tr sqrt(A B) = Σ sqrt(eigenvalues of A B): A B is similar to a PSD matrix, so they are real ≥ 0.
    eig = torch.linalg.eigvals(cov_a @ cov_b).real.clamp(min=0)
    return float((mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * eig.sqrt().sum())
