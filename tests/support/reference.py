"""An independent reference: Euler sampling with Eq. 7 written from the models' raw network outputs.

It uses ComfyUI only to load the checkpoint files into torch modules and to encode text; the noise
schedule, the parameterizations (eps, v), the guidance and the sampler are written out here, so the
pack's routing through ComfyUI's sampling chain is checked against plain arithmetic.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import torch

SD15_SCALE = 0.18215


def discrete_sigmas() -> torch.Tensor:
    """SD's scaled-linear schedule (β 0.00085 → 0.012, 1000 steps) as k-diffusion sigmas."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    return (((1 - alphas_cumprod) / alphas_cumprod) ** 0.5).float()


def simple_schedule(steps: int) -> list[float]:
    """ComfyUI's "simple" scheduler: evenly strided from the top of the discrete table, then 0."""
    sigmas = discrete_sigmas()
    stride = len(sigmas) / steps
    return [float(sigmas[-(1 + int(i * stride))]) for i in range(steps)] + [0.0]


def timestep(sigma: float) -> int:
    """The discrete timestep whose sigma is nearest in log space."""
    log_sigmas = discrete_sigmas().log()
    return int((log_sigmas - torch.tensor(sigma).log()).abs().argmin())


@dataclass
class Net:
    """A raw UNet with its parameterization and its text conditioning."""

    unet: Callable
    parameterization: str  # "eps" or "v"
    clip: object = None  # the checkpoint's text encoder (comfy.sd.CLIP), for encode()

    def eps(self, x: torch.Tensor, sigma: float, context: torch.Tensor, concat: torch.Tensor | None = None) -> torch.Tensor:
        """ε prediction at the noisy latent x = x0 + σ·ε."""
        c_in = 1.0 / (sigma ** 2 + 1.0) ** 0.5
        inp = x * c_in
        if concat is not None:
            inp = torch.cat([inp, concat.expand(x.shape[0], -1, -1, -1)], dim=1)
        t = torch.full((x.shape[0],), timestep(sigma), dtype=torch.float32)
        ctx = context.expand(x.shape[0], -1, -1)
        with torch.no_grad():
            out = self.unet(inp, t, context=ctx).float()
        if self.parameterization == "eps":
            return out
        alpha, s = c_in, sigma * c_in  # VP: x_vp = α x0 + s ε, v = α ε − s x0 ⇒ ε = α v + s x_vp
        return alpha * out + s * (x * alpha)


@lru_cache(maxsize=8)
def load(path: str) -> tuple:
    """(raw unet, clip) of a checkpoint file, loaded with ComfyUI's own loader, fp32 on the CPU."""
    import comfy.sd

    model, clip, _vae, _ = comfy.sd.load_checkpoint_guess_config(path, output_vae=False, output_clip=True)
    unet = model.model.diffusion_model.float().cpu().eval()
    return unet, clip


def encode(clip, text: str) -> torch.Tensor:
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))[0][0].float().cpu()


def initial_noise(shape: tuple, seed: int) -> torch.Tensor:
    """The noise ComfyUI's KSampler and RandomNoise draw for ``seed`` (CPU generator)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def euler(denoise: Callable[[torch.Tensor, float], torch.Tensor], shape: tuple, seed: int, steps: int) -> torch.Tensor:
    """k-diffusion Euler from pure noise; returns the latent as ComfyUI outputs it (unscaled)."""
    sigmas = simple_schedule(steps)
    x = initial_noise(shape, seed) * (1.0 + sigmas[0] ** 2) ** 0.5
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        denoised = denoise(x, sigma)
        x = x + (x - denoised) / sigma * (sigma_next - sigma)
    return x / SD15_SCALE


def cfg_eps(cond_eps: torch.Tensor, uncond_eps: torch.Tensor, scale: float) -> torch.Tensor:
    return uncond_eps + scale * (cond_eps - uncond_eps)


@lru_cache(maxsize=2)
def load_vae(path: str):
    """The checkpoint's VAE, loaded with ComfyUI's own loader (used only to encode the edit image)."""
    import comfy.sd

    _model, _clip, vae, _ = comfy.sd.load_checkpoint_guess_config(path, output_vae=True, output_clip=False)
    return vae
