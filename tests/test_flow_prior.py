"""A flow-matching prior for a discrete-schedule (eps) model, bridged by change of variables, on the real ComfyUI.

The prior is the SD1.5 stand-in patched into rectified-flow sampling by the host's own ModelSamplingSD3 /
ModelSamplingFlux nodes (``CONST``: x_f = (1 − σ_f)·x0 + σ_f·ε, network output v, x0 = x_f − σ_f·v), as users
do for flow fine-tunes of SD1.5. The eps fine-tune's noisy latent x = x0 + σ·ε is the same point as
x_f = x / (1 + σ) at σ_f = σ / (1 + σ), so the prior is evaluated there and its x0 estimate enters Eq. 7.
The reference below writes that out from the raw UNet, independently of ComfyUI's model_sampling classes.
"""
from __future__ import annotations

import pytest
import torch

from support import reference
from support.prompts import POSITIVE, fine_tune, graph, run_latent, sample_latent, text2img

FLOW_PATCHES = {
    # node, its inputs, and the timestep the network sees for flow sigma σ_f (the class's own multiplier)
    "ModelSamplingSD3": ({"shift": 3.0}, 1000.0),
    "ModelSamplingFlux": ({"max_shift": 1.15, "base_shift": 0.5, "width": 64, "height": 64}, 1.0),
}


def _flow_prior_graph(patch: str) -> dict:
    g = graph()
    ft, pos, neg = fine_tune(g)
    base = g.node("CheckpointLoaderSimple", ckpt_name="sd15_base.safetensors")
    flow = g.node(patch, model=base.out(0), **FLOW_PATCHES[patch][0])
    empty = g.node("CLIPTextEncode", clip=base.out(1), text="")
    prior = g.node("PriorFromModel", model=flow.out(0), negative=empty.out(0))
    model = g.node("PriorSwapCFG", model=ft.out(0), prior=prior.out(0), prior_weight=1.0, start_percent=0.0,
                   end_percent=1.0)
    return sample_latent(g, model.out(0), pos, neg, seed=7, prefix="latents/flow")


@pytest.mark.parametrize("patch", sorted(FLOW_PATCHES))
def test_flow_prior_for_eps_model_matches_change_of_variables_reference(comfy_server, checkpoint_cache, patch):
    start = len(comfy_server.log_text())
    swapped = run_latent(comfy_server, _flow_prior_graph(patch))
    log = comfy_server.log_text()[start:]
    assert "outside the prior's range" not in log  # σ_f = σ/(1+σ) always lies in the flow prior's (0, 1)

    ft_unet, ft_clip = reference.load(str(checkpoint_cache / "sd15_finetune.safetensors"))
    prior_unet, prior_clip = reference.load(str(checkpoint_cache / "sd15_base.safetensors"))
    ft = reference.Net(ft_unet, "eps")
    c, u = reference.encode(ft_clip, POSITIVE), reference.encode(prior_clip, "")
    multiplier = FLOW_PATCHES[patch][1]

    def flow_prior_x0(x: torch.Tensor, sigma: float) -> torch.Tensor:
        sigma_f = sigma / (1.0 + sigma)
        x_f = x / (1.0 + sigma)
        t = torch.full((x.shape[0],), sigma_f * multiplier)
        with torch.no_grad():
            v = prior_unet(x_f, t, context=u.expand(x.shape[0], -1, -1)).float()
        return x_f - sigma_f * v

    def denoise(x, sigma):
        cond = x - sigma * ft.eps(x, sigma, c)
        uncond = flow_prior_x0(x, sigma)
        return uncond + 5.0 * (cond - uncond)

    expected = reference.euler(denoise, tuple(swapped.shape), seed=7, steps=3)
    err = float((swapped - expected).abs().max() / expected.abs().max())
    assert err < 1e-5, err
    # The same weights as an eps prior give another result: the bridge is not a no-op.
    eps_prior = run_latent(comfy_server, text2img())
    assert float((eps_prior - swapped).abs().max() / swapped.abs().max()) > 1e-2
