"""An independent reference for prior-swap sampling of any model family, from the host's own model calls.

What comes from ComfyUI: loading the stand-in files (``comfy.sd.load_diffusion_model``), each model's
``BaseModel.apply_model`` (its own ``calculate_input`` → network → ``calculate_denoised``), the per-model cond
processing (``comfy.samplers.process_conds`` → ``encode_model_conds`` → that model's ``extra_conds``), the
fine-tune's sigmas (``comfy.samplers.calculate_sigmas`` on its own ``model_sampling``), the seed's noise
(``comfy.sample.prepare_noise``) and the latent format's ``process_latent_out``.

What is written out here, and nowhere taken from the pack or from ComfyUI's sampling chain: the Euler steps
(k-diffusion's ``x ← x + (x − D)/σ · (σ' − σ)``), the initial noise scaling of each parameterization, each
cond's batch-1 model call, the guidance formula (Eq. 7 ``u_prior + γ (c_ft − u_prior)``, and the host's
DualCFGGuider "regular" term order ``n + γ₂ (m − n) + γ₁ (c − m)``) and the prior's change of variables:

* both models of the form x = x0 + σ·ε (eps, v: ``ModelSamplingDiscrete``) or both rectified flow
  x = (1 − σ)·x0 + σ·ε (``CONST``): the prior sees (x, σ) as they are;
* eps/v fine-tune, flow prior: the same point is x_f = x / (1 + σ) at σ_f = σ / (1 + σ);
* flow fine-tune, eps/v prior: x_e = x / (1 − σ) at σ_e = σ / (1 − σ) (σ < 1 only);
* a discrete x = x0 + σ·ε prior whose σ table is not the fine-tune's (PixArt-α for SD1.5): its network is
  told the timestep of its own table nearest to σ (in log σ), i.e. noise level σ' = table[t]. It is read at
  that level: σ' and x' = x·√(1 + σ'²)/√(1 + σ²), so that its network input x/√(1 + σ²) is unchanged and its
  x0 = x' − σ'·ε̂ is the one the network's ε̂ implies (the pack's documented choice, py/guidance.py; ComfyUI's
  own apply_model at (x, σ) would read ε̂ at σ ≠ σ').

No code of the pack is imported.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class Model:
    """A loaded stand-in: the host's ModelPatcher and BaseModel."""

    patcher: object

    @property
    def base(self):
        return self.patcher.model

    @property
    def sampling(self):
        return self.base.model_sampling

    @property
    def flow(self) -> bool:
        """x = (1 − σ)·x0 + σ·ε (rectified flow), else x = x0 + σ·ε."""
        import comfy.model_sampling

        return isinstance(self.sampling, comfy.model_sampling.CONST)


def load(path: str) -> Model:
    """A diffusion-model file loaded as UNETLoader loads it (fp32 on the CPU)."""
    import comfy.sd

    with torch.inference_mode():
        patcher = comfy.sd.load_diffusion_model(path)
    patcher.model.eval()
    return Model(patcher)


def load_checkpoint(path: str) -> Model:
    """The diffusion model of a full checkpoint (CheckpointLoaderSimple's MODEL)."""
    import comfy.sd

    with torch.inference_mode():
        patcher = comfy.sd.load_checkpoint_guess_config(path, output_vae=False, output_clip=False)[0]
    patcher.model.eval()
    return Model(patcher)


def empty_latent(model: Model, shape: tuple) -> torch.Tensor:
    """EmptyLatentImage's zeros as the KSampler sees them (fix_empty_latent_channels)."""
    import comfy.sample

    return comfy.sample.fix_empty_latent_channels(model.patcher, torch.zeros(shape))


class Conds:
    """One CONDITIONING processed for one model, ready for batch-1 ``apply_model`` calls."""

    def __init__(self, model: Model, conditioning: list, noise: torch.Tensor, latent_image: torch.Tensor,
                 seed: int, prompt_type: str = "positive"):
        import comfy.sampler_helpers
        import comfy.samplers

        self.model = model
        conds = comfy.sampler_helpers.convert_cond(conditioning)
        processed = comfy.samplers.process_conds(model.base, noise, {prompt_type: conds}, noise.device,
                                                 latent_image=latent_image, denoise_mask=None, seed=seed)
        assert len(processed[prompt_type]) == 1, "the reference handles one cond entry per CONDITIONING"
        self.model_conds = processed[prompt_type][0]["model_conds"]

    def kwargs(self, batch: int) -> dict:
        return {k: v.process_cond(batch_size=batch, area=None).cond for k, v in self.model_conds.items()}

    def denoised(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """The model's x0 prediction at (x, σ) in its own parameterization (BaseModel.apply_model)."""
        t = torch.full((x.shape[0],), float(sigma), dtype=torch.float32)
        with torch.inference_mode():
            return self.model.base.apply_model(x, t, **self.kwargs(x.shape[0])).float()


def _table(model: Model) -> torch.Tensor | None:
    sigmas = getattr(model.sampling, "sigmas", None)
    return sigmas.float().cpu() if isinstance(sigmas, torch.Tensor) else None


def bridge(ft: Model, prior: Model, x: torch.Tensor, sigma: float) -> tuple[torch.Tensor, float]:
    """The fine-tune's noisy latent (x, σ) expressed in the prior's parameterization (change of variables)."""
    if ft.flow == prior.flow:
        table, own = _table(prior), _table(ft)
        if prior.flow or table is None or (own is not None and own.shape == table.shape and torch.equal(own, table)):
            return x, sigma
        # x = x0 + σε on both sides; the prior's network knows the levels of its own table only
        known = float(table[int((table.log() - math.log(sigma)).abs().argmin())])
        return x * (math.sqrt(1.0 + known ** 2) / math.sqrt(1.0 + sigma ** 2)), known
    if prior.flow:  # x = x0 + σε  →  x_f = (1 − σ_f) x0 + σ_f ε
        return x / (1.0 + sigma), sigma / (1.0 + sigma)
    assert sigma < 1.0, "a flow fine-tune at σ = 1 has no counterpart for a discrete prior"
    return x / (1.0 - sigma), sigma / (1.0 - sigma)


def sigmas(model: Model, steps: int, scheduler: str = "simple") -> list[float]:
    import comfy.samplers

    return [float(s) for s in comfy.samplers.calculate_sigmas(model.sampling, scheduler, steps)]


def euler(ft: Model, denoise: Callable[[torch.Tensor, float], torch.Tensor], latent_image: torch.Tensor,
          seed: int, steps: int) -> torch.Tensor:
    """k-diffusion Euler over the fine-tune's sigmas from the seed's noise; returns the latent as saved."""
    import comfy.sample

    schedule = sigmas(ft, steps)
    noise = comfy.sample.prepare_noise(latent_image, seed)
    s0 = schedule[0]
    max_denoise = math.isclose(float(ft.sampling.sigma_max), s0, rel_tol=1e-5) or s0 > float(ft.sampling.sigma_max)
    if ft.flow:  # x = (1 − σ) x0 + σ ε
        x = s0 * noise + (1.0 - s0) * latent_image
    else:  # x = x0 + σ ε; at the top of the schedule the host scales by √(1 + σ²)
        x = latent_image + noise * (math.sqrt(1.0 + s0 ** 2) if max_denoise else s0)
    for sigma, sigma_next in zip(schedule[:-1], schedule[1:]):
        d = denoise(x, sigma)
        x = x + (x - d) / sigma * (sigma_next - sigma)
    if ft.flow and schedule[-1] > 0:
        x = x / (1.0 - schedule[-1])
    return ft.base.process_latent_out(x.float())


def eq7(cond: Conds, prior_uncond: Conds, gamma: float, ft: Model, prior: Model):
    """Denoiser of paper Eq. 7: the fine-tune's cond, the prior's uncond at the bridged (x, σ)."""

    def denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:
        c = cond.denoised(x, sigma)
        xp, sp = bridge(ft, prior, x, sigma)
        u = prior_uncond.denoised(xp, sp)
        return u + gamma * (c - u)

    return denoise


def stock_cfg(cond: Conds, uncond: Conds, gamma: float):
    def denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:
        c, u = cond.denoised(x, sigma), uncond.denoised(x, sigma)
        return u + gamma * (c - u)

    return denoise


def dual_regular(cond: Conds, middle: Conds, prior_uncond: Conds, cfg_conds: float, cfg_cond2_negative: float,
                 ft: Model, prior: Model):
    """DualCFGGuider "regular" with the (∅, ∅) term from the prior: n + γ₂ (m − n) + γ₁ (c − m)."""

    def denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:
        c, m = cond.denoised(x, sigma), middle.denoised(x, sigma)
        xp, sp = bridge(ft, prior, x, sigma)
        n = prior_uncond.denoised(xp, sp)
        return n + cfg_cond2_negative * (m - n) + cfg_conds * (c - m)

    return denoise


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest deviation relative to the largest magnitude."""
    return float((actual.float() - expected.float()).abs().max() / expected.float().abs().max())
