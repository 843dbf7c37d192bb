"""PriorSwapDualCFGGuider (InstructPix2Pix, paper Eq. 9) on the real ComfyUI."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from support import reference
from support.prompts import EDIT, EDIT_IMAGE, ip2p, run_latent
from support.server import ExecutionError

REL = 1e-5


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max())


@pytest.fixture(scope="module")
def edit_image(comfy_server) -> torch.Tensor:
    """A 64×64 gradient with a square, written to the server's input folder; returned as IMAGE pixels."""
    yy, xx = np.mgrid[0:64, 0:64]
    rgb = np.stack([xx * 4, yy * 4, ((xx // 16 + yy // 16) % 2) * 255], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(comfy_server.base / "input" / EDIT_IMAGE)
    return torch.from_numpy(rgb.astype(np.float32) / 255.0)[None]


def test_identity_with_dual_cfg_guider(comfy_server, edit_image):
    """Prior = the fine-tune itself with the guider's own negative ⇒ DualCFGGuider's result."""
    for style in ("regular", "nested"):
        stock = run_latent(comfy_server, ip2p(swap=False, style=style))
        same = run_latent(comfy_server, ip2p(prior_from_model="same", style=style))
        assert rel_err(same, stock) < REL, (style, rel_err(same, stock))


def test_eq9_against_reference(comfy_server, edit_image, checkpoint_cache):
    """(∅, ∅) from the 4-channel prior, the (image, ∅) and (image, text) terms from the 8-channel fine-tune."""
    swapped = run_latent(comfy_server, ip2p())
    stock = run_latent(comfy_server, ip2p(swap=False))
    ft_path = str(checkpoint_cache / "ip2p_finetune.safetensors")
    ft_unet, ft_clip = reference.load(ft_path)
    prior_unet, prior_clip = reference.load(str(checkpoint_cache / "sd15_base.safetensors"))
    image_latent = reference.load_vae(ft_path).encode(edit_image).float()
    ft, prior = reference.Net(ft_unet, "eps"), reference.Net(prior_unet, "eps")
    c_text, c_empty = reference.encode(ft_clip, EDIT), reference.encode(ft_clip, "")
    u_prior = reference.encode(prior_clip, "")

    def denoise(x, sigma):
        cond = ft.eps(x, sigma, c_text, concat=image_latent)  # ε(c_I, c_T)
        middle = ft.eps(x, sigma, c_empty, concat=image_latent)  # ε(c_I, ∅)
        uncond = prior.eps(x, sigma, u_prior)  # ε_prior(∅): 4 channels, no image
        return x - sigma * (uncond + 1.5 * (middle - uncond) + 7.5 * (cond - middle))

    expected = reference.euler(denoise, tuple(swapped.shape), seed=3, steps=3)
    assert rel_err(swapped, expected) < REL, rel_err(swapped, expected)
    assert rel_err(swapped, stock) > 1000 * REL


def test_prior_weight_zero_is_dual_cfg_guider(comfy_server, edit_image):
    assert torch.equal(run_latent(comfy_server, ip2p(prior_weight=0.0)), run_latent(comfy_server, ip2p(swap=False)))


def test_ip2p_checkpoint_refused_as_prior(comfy_server, edit_image):
    with pytest.raises(ExecutionError) as err:
        run_latent(comfy_server, ip2p(prior="ip2p_finetune.safetensors"))
    assert "8 input channels" in str(err.value) and "PriorCheckpointLoader" in str(err.value)
