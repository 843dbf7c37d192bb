"""The parameterization bridge with ideal denoisers: every branch predicts one known x0, so the combined x0 must be
that x0 at every σ of the fine-tune's schedule — from its first step (σ = 1 for flow, σ_max otherwise) to its last.

The samplings are the host's own ``comfy.model_sampling`` classes with the settings of each family's
``supported_models`` config; the model call is the host's ``BaseModel._apply_model`` arithmetic
(``calculate_input`` → network(x_in, ``timestep(σ)``) → ``calculate_denoised``). The ideal network knows x0 and
the noise level its timestep tells it, and nothing else: what a perfectly trained network of that family does.
"""
from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
import torch

from support.comfy_env import pack_module

pytestmark = pytest.mark.fast  # no server: see pytest.ini


def guidance():
    return pack_module("py.guidance")


def _sampling(sampling_cls, kind, **settings):
    """A model_sampling object as ``comfy.model_base.model_sampling`` builds it for a config."""
    cls = type("ModelSampling", (sampling_cls, kind), {})
    return cls(SimpleNamespace(sampling_settings=settings))


def families() -> dict:
    import comfy.model_sampling as ms

    return {
        "sd15_eps": _sampling(ms.ModelSamplingDiscrete, ms.EPS),
        "sd21_v": _sampling(ms.ModelSamplingDiscrete, ms.V_PREDICTION),
        "zsnr_v": _sampling(ms.ModelSamplingDiscrete, ms.V_PREDICTION, zsnr=True),
        "pixart_eps": _sampling(ms.ModelSamplingDiscrete, ms.EPS, beta_schedule="sqrt_linear",
                                linear_start=0.0001, linear_end=0.02),
        "playground_edm": _sampling(ms.ModelSamplingContinuousEDM, ms.EDM, sigma_data=0.5, sigma_max=80.0,
                                    sigma_min=0.002),
        "sd3_flow": _sampling(ms.ModelSamplingDiscreteFlow, ms.CONST, shift=3.0),
        "wan_flow": _sampling(ms.ModelSamplingDiscreteFlow, ms.CONST, shift=8.0),
        "auraflow_flow": _sampling(ms.ModelSamplingDiscreteFlow, ms.CONST, shift=1.73, multiplier=1.0),
        "flux_flow": _sampling(ms.ModelSamplingFlux, ms.CONST, shift=1.15),
        "cosmos_rflow": _sampling(ms.ModelSamplingCosmosRFlow, ms.COSMOS_RFLOW, sigma_data=1.0, sigma_max=80.0,
                                  sigma_min=0.002),
    }


def told_sigma(sampling, t: torch.Tensor) -> torch.Tensor:
    """The noise level a timestep tells the network: the inverse of ``sampling.timestep``."""
    import comfy.model_sampling as ms

    if isinstance(sampling, ms.ModelSamplingDiscreteFlow):
        return t / sampling.multiplier
    if isinstance(sampling, ms.ModelSamplingFlux):
        return t
    return torch.stack([sampling.sigma(v) for v in t.reshape(-1)]).reshape(t.shape)


def ideal_network(sampling, x0: torch.Tensor):
    """A network that returns, for (x_in, t), the output its family's ``calculate_denoised`` reads as x0."""
    def net(x_in: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        sigma = told_sigma(sampling, t).to(x_in)
        x = x_in / sampling.calculate_input(sigma, torch.ones_like(x_in))
        offset = sampling.calculate_denoised(sigma, torch.zeros_like(x), x)
        slope = sampling.calculate_denoised(sigma, torch.ones_like(x), x) - offset
        return (x0 - offset) / slope
    return net


def apply_model(sampling, net, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``BaseModel._apply_model``'s arithmetic (comfy/model_base.py) around ``net``."""
    x_in = sampling.calculate_input(sigma, x)
    return sampling.calculate_denoised(sigma, net(x_in, sampling.timestep(sigma).float()), x)


def noisy(sampling, x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The sampled model's latent at σ, formed as its own ``noise_scaling`` forms it."""
    return sampling.noise_scaling(sigma, noise, x0)


def schedule(sampling, steps: int = 12) -> torch.Tensor:
    """Every σ the fine-tune is evaluated at (the host's "simple" scheduler, without the final 0)."""
    import comfy.samplers

    sigmas = comfy.samplers.calculate_sigmas(sampling, "simple", steps)
    return sigmas[sigmas > 0]


NAMES = list(families())


@pytest.mark.parametrize("fine_tune,prior", list(itertools.product(NAMES, NAMES)))
def test_ideal_denoisers_combine_to_their_x0_at_every_sigma(fine_tune, prior):
    ms = families()
    ft_sampling, prior_sampling = ms[fine_tune], ms[prior]
    x0 = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(1))
    ft_net, prior_net = ideal_network(ft_sampling, x0), ideal_network(prior_sampling, x0)
    sigmas = schedule(ft_sampling)
    if guidance().noise_form(ft_sampling) == "flow":
        assert float(sigmas[0]) == pytest.approx(1.0)  # flow schedules start at pure noise
    for sigma in sigmas:
        sigma = sigma.reshape(1).repeat(2)
        x = noisy(ft_sampling, x0, noise, sigma)
        cond = apply_model(ft_sampling, ft_net, x, sigma)
        x_p, sigma_p = x, sigma
        if not guidance().same_sampling(ft_sampling, prior_sampling):
            x_p, sigma_p = guidance().to_prior_space(x, sigma, ft_sampling, prior_sampling)
        uncond = apply_model(prior_sampling, prior_net, x_p, sigma_p)
        combined = uncond + 5.0 * (cond - uncond)
        error = float((combined - x0).abs().max())
        assert torch.isfinite(combined).all() and error < 2e-3, (
            f"{fine_tune} → {prior} at σ={float(sigma[0]):.4g}: combined x0 off by {error:.3g}")


def test_flow_fine_tune_with_eps_prior_first_step_stays_bounded():
    """The issue's figure: a flow fine-tune's first Euler step with an eps prior (|x| was 276 instead of ~3)."""
    ms = families()
    ft_sampling, prior_sampling = ms["sd3_flow"], ms["sd15_eps"]
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    sigmas = schedule(ft_sampling, 10)
    sigma, sigma_next = sigmas[:1], sigmas[1:2]
    x = noisy(ft_sampling, x0, noise, sigma)
    x_p, sigma_p = guidance().to_prior_space(x, sigma, ft_sampling, prior_sampling)
    uncond = apply_model(prior_sampling, ideal_network(prior_sampling, x0), x_p, sigma_p)
    cond = apply_model(ft_sampling, ideal_network(ft_sampling, x0), x, sigma)
    denoised = uncond + 3.0 * (cond - uncond)
    stepped = x + (x - denoised) / sigma * (sigma_next - sigma)  # k-diffusion Euler, as the host's sampler
    expected = noisy(ft_sampling, x0, noise, sigma_next)
    assert torch.allclose(stepped, expected, atol=1e-3)


def test_same_schedule_is_left_as_the_host_gives_it():
    """Two models of one family (separately built samplings): no change of σ or x, so prior = fine-tune is stock."""
    ms, again = families(), families()
    for name in NAMES:
        assert guidance().same_sampling(ms[name], again[name])
    assert not guidance().same_sampling(ms["sd15_eps"], ms["pixart_eps"])
    assert not guidance().same_sampling(ms["sd3_flow"], ms["wan_flow"])


def test_unknown_parameterization_refused_with_reason():
    class Custom(torch.nn.Module):  # a sampling the pack cannot translate (neither x0 + σε nor flow)
        pass

    why = guidance().bridge_error(families()["sd15_eps"], Custom())
    assert why and "Custom" in why and "cannot translate" in why
    assert guidance().bridge_error(families()["sd15_eps"], families()["flux_flow"]) is None
    assert guidance().bridge_error(Custom(), Custom()) is None  # one unknown schedule on both sides
