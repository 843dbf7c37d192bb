"""The arithmetic of prior-swap guidance, in ComfyUI's denoised (x0) space.

ComfyUI's sampling chain works on denoised predictions: each model's raw output (eps, v, flow
velocity…) is turned into an x0 estimate by that model's own ``model_sampling`` at the current sigma.
For x = x0 + σ·ε, CFG on denoised tensors is the same as CFG on eps (the map is affine with the same
coefficients for every branch), so paper Eq. 7 reads here as

    denoised = u_prior + γ · (c_ft − u_prior)

where ``c_ft`` is the fine-tune's conditional x0 and ``u_prior`` the prior's unconditional x0.
"""
from __future__ import annotations

import torch


def blend_uncond(own_uncond: torch.Tensor, prior_uncond: torch.Tensor, prior_weight: float) -> torch.Tensor:
    """Mix the fine-tune's own uncond with the prior's: 0 → own (stock CFG), 1 → prior (Eq. 7)."""
    if prior_weight >= 1.0:
        return prior_uncond
    if prior_weight <= 0.0:
        return own_uncond
    return own_uncond + (prior_uncond - own_uncond) * prior_weight


def cfg(cond: torch.Tensor, uncond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Plain classifier-free guidance, ``uncond + γ (cond − uncond)`` (Eq. 6, or Eq. 7 with a prior's uncond)."""
    return uncond + (cond - uncond) * guidance_scale


def dual_cfg(cond: torch.Tensor, middle: torch.Tensor, uncond: torch.Tensor,
             cfg_conds: float, cfg_cond2_negative: float) -> torch.Tensor:
    """Dual-condition guidance in ComfyUI ``DualCFGGuider`` "regular" term order (paper Eq. 8/9).

    ``uncond`` = ε(∅, ∅), ``middle`` = ε(c_I, ∅), ``cond`` = ε(c_I, c_T);
    ``cfg_cond2_negative`` = γ_I, ``cfg_conds`` = γ_T.
    """
    return uncond + (middle - uncond) * cfg_cond2_negative + (cond - middle) * cfg_conds


def is_flow(model_sampling: object) -> bool:
    """True for rectified-flow parameterizations (x = (1−σ)·x0 + σ·ε), False for x = x0 + σ·ε."""
    import comfy.model_sampling

    return isinstance(model_sampling, comfy.model_sampling.CONST)


def _per_sample(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return sigma.reshape(sigma.shape[:1] + (1,) * (x.ndim - 1))


def to_prior_space(x: torch.Tensor, sigma: torch.Tensor, model_sampling: object,
                   prior_sampling: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Express the noisy latent (x, σ) of the sampled model in the prior's noise parameterization.

    Models of the same family (eps, v-prediction, EDM: x = x0 + σε; or flow: x = (1−σ)x0 + σε) share
    sigma and x as they are. Between families it is a change of variables, not the same sigma:
    for x = x0 + σε, σ_f = σ/(1+σ) and x_f = x/(1+σ) (and the inverse). The prior's denoised output
    then estimates the same x0, so it combines with the fine-tune's directly.
    """
    model_flow, prior_flow = is_flow(model_sampling), is_flow(prior_sampling)
    if model_flow == prior_flow:
        return x, sigma
    if prior_flow:  # x = x0 + σε  →  x_f = (1−σ_f)x0 + σ_f ε
        sigma_f = sigma / (1.0 + sigma)
        return x / (1.0 + _per_sample(sigma, x)), sigma_f
    # flow → x = x0 + σε; σ_f = 1 (pure noise) has no finite counterpart, so stay just below it.
    sigma_f = sigma.clamp(max=1.0 - 1e-4)
    sigma_ve = sigma_f / (1.0 - sigma_f)
    return x / (1.0 - _per_sample(sigma_f, x)), sigma_ve
