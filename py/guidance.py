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


def is_flow(model_sampling: object) -> bool:
    """True for rectified-flow parameterizations (x = (1−σ)·x0 + σ·ε), False for x = x0 + σ·ε."""
    return noise_form(model_sampling) == "flow"


def noise_form(model_sampling: object) -> str | None:
    """How a model's noisy input is formed: "flow" (x = (1−σ)x0 + σε), "ve" (x = x0 + σε), or None (unknown).

    ComfyUI's eps, v-prediction, EDM, x0 and Cosmos-RFlow samplings all take x = x0 + σε (they differ in the
    network's input scaling and output, which each model's own ``model_sampling`` handles); CONST is flow.
    """
    import comfy.model_sampling as ms

    if isinstance(model_sampling, ms.CONST):
        return "flow"
    if isinstance(model_sampling, (ms.EPS, ms.COSMOS_RFLOW)):  # V_PREDICTION, EDM, X0, IMG_TO_IMG subclass EPS
        return "ve"
    return None


def _per_sample(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return sigma.reshape(sigma.shape[:1] + (1,) * (x.ndim - 1))


# The largest σ/(1−σ) a flow σ is mapped to: σ = 1 (pure noise, where flow schedules start) has no finite
# x = x0 + σε counterpart; past the prior's own σ_max it is clamped there anyway (see _into_range).
_MAX_VE_SIGMA = 1e6


def to_prior_space(x: torch.Tensor, sigma: torch.Tensor, model_sampling: object,
                   prior_sampling: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Express the noisy latent (x, σ) of the sampled model as an input (x_p, σ_p) the prior can be run on.

    Models of the same noise form (eps, v-prediction, EDM: x = x0 + σε; or flow: x = (1−σ)x0 + σε) share
    sigma and x as they are. Between forms it is a change of variables, not the same sigma:
    for x = x0 + σε, σ_f = σ/(1+σ) and x_f = x/(1+σ) (and the inverse). The prior's denoised output then
    estimates the same x0, so it combines with the fine-tune's directly.

    A prior of the x = x0 + σε form is then read at a noise level it knows (see :func:`_at_known_level`).
    Call this only when the two samplings differ: with the same schedule the host's own σ is used unchanged.
    """
    model_form, prior_form = noise_form(model_sampling), noise_form(prior_sampling)
    x_p, sigma_p = _change_of_variables(x, sigma, model_form, prior_form)
    if prior_form == "ve":
        return _at_known_level(x_p, sigma_p, prior_sampling)
    return x_p, sigma_p


def prior_sigma(sigma: torch.Tensor, model_sampling: object, prior_sampling: object) -> torch.Tensor:
    """The prior's σ for the sampled σ, before it is moved to a level the prior knows (for the range warning)."""
    ones = sigma.new_ones(sigma.shape[:1])
    return _change_of_variables(ones, sigma, noise_form(model_sampling), noise_form(prior_sampling))[1]


def same_sampling(model_sampling: object, prior_sampling: object) -> bool:
    """True when both models take the same σ to the same network input and timestep (one schedule)."""
    a_type, b_type = type(model_sampling), type(prior_sampling)
    # The host builds a new ModelSampling(sampling, parameterization) class per model: compare what it mixes.
    if a_type is not b_type and (a_type.__name__, a_type.__bases__) != (b_type.__name__, b_type.__bases__):
        return False
    if getattr(model_sampling, "multiplier", None) != getattr(prior_sampling, "multiplier", None):
        return False
    a, b = getattr(model_sampling, "sigmas", None), getattr(prior_sampling, "sigmas", None)
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        return a is b
    return (a.shape == b.shape and bool(torch.equal(a.cpu(), b.cpu()))
            and getattr(model_sampling, "sigma_data", 1.0) == getattr(prior_sampling, "sigma_data", 1.0))


def _change_of_variables(x: torch.Tensor, sigma: torch.Tensor, model_form: str | None,
                         prior_form: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    if model_form == prior_form:
        return x, sigma
    if prior_form == "flow":  # x = x0 + σε  →  x_f = (1−σ_f)x0 + σ_f ε
        return x / (1.0 + _per_sample(sigma, x)), sigma / (1.0 + sigma)
    # flow → x = x0 + σε, with σ = 1 kept finite
    alpha = (1.0 - sigma).clamp(min=1.0 / (1.0 + _MAX_VE_SIGMA))
    return x / _per_sample(alpha, x), sigma / alpha


def _at_known_level(x: torch.Tensor, sigma: torch.Tensor, sampling: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Read an x = x0 + σε prior at the noise level its network is told, with its network's input unchanged.

    A discrete prior (SD1.5, SDXL, PixArt…) is told the nearest timestep of its own table, and a continuous one
    (EDM, Cosmos) knows only [σ_min, σ_max]. ComfyUI's own ``apply_model`` would read the network's output at
    the σ it was given; where that σ is not the one the network was told — past the prior's σ_max, as at the
    start of a flow schedule (σ → ∞), or between the table's entries — that multiplies its ε error by the ratio
    (~10⁴× at σ_max 14.6). Here σ becomes the level the network is told, and x is rescaled so that the
    network's input ``calculate_input(σ, x)`` stays what it was: an ideal denoiser then returns x0 exactly.
    """
    import comfy.model_sampling as ms

    lo, hi = getattr(sampling, "sigma_min", None), getattr(sampling, "sigma_max", None)
    if not isinstance(lo, torch.Tensor) or not isinstance(hi, torch.Tensor):
        return x, sigma
    known = sigma
    if isinstance(sampling, ms.ModelSamplingDiscrete):
        known = sampling.sigma(sampling.timestep(sigma)).to(sigma)
    known = torch.minimum(torch.maximum(known, lo.to(sigma)), hi.to(sigma))
    ones = x.new_ones((1,) * x.ndim)
    # calculate_input is linear in x: c_in(σ)·x = c_in(σ')·x'  ⇔  x' = x·c_in(σ)/c_in(σ').
    ratio = sampling.calculate_input(sigma, ones) / sampling.calculate_input(known, ones)
    return x * ratio, known


def bridge_error(model_sampling: object, prior_sampling: object) -> str | None:
    """Why the prior cannot be evaluated at the sampled model's noise levels, or None when it can."""
    model_form, prior_form = noise_form(model_sampling), noise_form(prior_sampling)
    if model_form is not None and prior_form is not None:
        return None
    if type(model_sampling) is type(prior_sampling):  # the same unknown kind on both sides: same σ meaning
        return None
    unknown = type(prior_sampling if prior_form is None else model_sampling).__name__
    return (f"{unknown} is a noise parameterization the pack cannot translate (it knows x = x0 + σε: eps, "
            "v-prediction, EDM, x0, Cosmos; and rectified flow), so the two models' σ cannot be matched")
