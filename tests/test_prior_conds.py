"""The prior's conds get what the host gives every model in ``process_conds`` (issue #15 item 4).

LTXV's ``extra_conds`` turns the sampler's ``denoise_mask`` into a per-token timestep (LTXVImgToVideo's first
frame is kept, the rest denoised): a prior whose conds were processed without it would be told another noise
level for every token than the host tells the fine-tune. Two LTXV stand-ins of ComfyUI's own class
(``support/families.py``'s detection config, random weights, in this process); an APPLY_MODEL wrapper on each
MODEL records the keyword arguments its ``apply_model`` receives.
"""
from __future__ import annotations

import pytest

import torch

from support.comfy_env import import_comfy, pack_module

pytestmark = pytest.mark.fast  # no server: see pytest.ini


def _model(seed: int):
    import comfy.model_management as mm
    import comfy.model_patcher
    from support import families

    config = families.model_config(families.MODELS["fam_ltxv_ft"][1])
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({})
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.diffusion_model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) / max(1, p[0].numel()) ** 0.5 if p.ndim > 1
                    else torch.ones_like(p))
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def _recording(patcher, seen: list):
    import comfy.patcher_extension

    def record(executor, *args, **kwargs):
        seen.append(sorted(kwargs))
        return executor(*args, **kwargs)

    patcher = patcher.clone()
    patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "test_record", record)
    return patcher


def test_prior_conds_get_the_denoise_mask_the_host_gives_the_fine_tune():
    import_comfy()
    import comfy.sample
    from support import standin_nodes

    nodes = pack_module("nodes").NODE_CLASS_MAPPINGS
    ft_seen, prior_seen = [], []
    ft, prior_model = _recording(_model(1), ft_seen), _recording(_model(2), prior_seen)
    prior = nodes["PriorFromModel"].execute(prior_model, standin_nodes.conditioning("ltxv", 3, 8, True))[0]
    swapped = nodes["PriorSwapCFG"].execute(ft, prior, 1.0, 0.0, 1.0)[0]
    latent = torch.zeros(1, 128, 2, 2, 2)
    mask = torch.ones(1, 1, 2, 2, 2)
    mask[:, :, 0] = 0.0  # the first latent frame is kept, as LTXVImgToVideo's noise_mask does
    pos = standin_nodes.conditioning("ltxv", 1, 8, False)
    neg = standin_nodes.conditioning("ltxv", 2, 8, True)
    comfy.sample.sample(swapped, comfy.sample.prepare_noise(latent, 0), 2, 3.0, "euler", "simple", pos, neg, latent,
                        noise_mask=mask, disable_pbar=True, seed=0)
    assert ft_seen and prior_seen, "both models were called"
    assert all("denoise_mask" in keys for keys in ft_seen)
    assert all("denoise_mask" in keys for keys in prior_seen), prior_seen
    # Without a mask, neither gets one: the key comes from the host's inputs, not from the pack.
    ft_seen.clear(), prior_seen.clear()
    comfy.sample.sample(swapped, comfy.sample.prepare_noise(latent, 0), 2, 3.0, "euler", "simple", pos, neg, latent,
                        disable_pbar=True, seed=0)
    assert prior_seen and not any("denoise_mask" in keys for keys in ft_seen + prior_seen)
