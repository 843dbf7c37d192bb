"""The prior's weights stored in fp8 (issue #20): PriorCheckpointLoader's weight_dtype, and the benchmark's swap_fp8.

In this process on the SD1.5 stand-in checkpoints (tests/support/checkpoints.py, fp16 weights). On the CPU ComfyUI
computes in fp32, so the default load is the checkpoint's fp16 weights exactly (the "fp16 prior"); fp8 storage
rounds them to 8 bits and ComfyUI's manual cast turns them back into the compute dtype at every layer.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from support.comfy_env import ROOT, pack_module

FP8 = {"fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e4m3fn_fast": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}


@pytest.fixture(scope="module")
def priors(checkpoint_cache):
    """sd15_base loaded by PriorCheckpointLoader (the V3 node, as ComfyUI runs it) with each weight_dtype."""
    import folder_paths

    folder_paths.add_model_folder_path("checkpoints", str(checkpoint_cache))
    node = pack_module("nodes").NODE_CLASS_MAPPINGS["PriorCheckpointLoader"]
    loaded = {"default": node.execute("sd15_base.safetensors", "")}
    for name in FP8:
        loaded[name] = node.execute("sd15_base.safetensors", "", weight_dtype=name)
    return {name: out.result if hasattr(out, "result") else out for name, out in loaded.items()}


def _floating_params(patcher) -> list[torch.Tensor]:
    return [p for p in patcher.model.diffusion_model.parameters() if p.is_floating_point()]


def _eps(patcher, negative, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """The model's raw prediction for the prior's negative conditioning (ComfyUI's own apply_model)."""
    import comfy.model_management as mm

    mm.load_models_gpu([patcher])
    base = patcher.model
    context = negative[0][0]
    s = torch.full((x.shape[0],), sigma)
    with torch.no_grad():
        return base.apply_model(x, s, c_crossattn=context.expand(x.shape[0], -1, -1)).float()


def test_weight_dtype_choices_are_unetloaders():
    import nodes as host_nodes

    prior_mod = pack_module("py.prior")
    assert list(prior_mod.WEIGHT_DTYPES) == host_nodes.UNETLoader.INPUT_TYPES()["required"]["weight_dtype"][0]
    # the model_options UNETLoader.load_unet builds, choice by choice
    assert prior_mod.weight_dtype_options("default") == {}
    assert prior_mod.weight_dtype_options("fp8_e4m3fn") == {"dtype": torch.float8_e4m3fn}
    assert prior_mod.weight_dtype_options("fp8_e4m3fn_fast") == {"dtype": torch.float8_e4m3fn,
                                                                   "fp8_optimizations": True}
    assert prior_mod.weight_dtype_options("fp8_e5m2") == {"dtype": torch.float8_e5m2}
    with pytest.raises(Exception, match="weight_dtype must be one of"):
        prior_mod.weight_dtype_options("int4")


@pytest.mark.parametrize("weight_dtype", sorted(FP8))
def test_prior_loaded_in_fp8_is_stored_in_fp8(priors, weight_dtype):
    default_prior, default_model, _ = priors["default"]
    prior, model, clip = priors[weight_dtype]
    assert prior.model is model and clip is not None
    stored = {p.dtype for p in _floating_params(model)}
    assert stored == {FP8[weight_dtype]}, stored
    assert model.model.manual_cast_dtype is not None  # cast at use, not computed in fp8
    # a quarter of the CPU's fp32 default (half of the fp16 a GPU would hold)
    assert model.model_size() < 0.3 * default_model.model_size()
    # the same weights, rounded: every fp8 weight is the default one to fp8 precision
    for p8, p32 in zip(_floating_params(model), _floating_params(default_model)):
        assert torch.equal(p8, p32.to(p8.dtype)), "not the checkpoint's weights rounded to fp8"
    # the text encoder is not touched: the same negative conditioning
    assert torch.equal(prior.negative[0][0], default_prior.negative[0][0])


@pytest.mark.parametrize("weight_dtype", ["fp8_e4m3fn", "fp8_e5m2"])
def test_fp8_prior_prediction_close_to_fp16_prior(priors, weight_dtype):
    default_prior = priors["default"][0]
    prior = priors[weight_dtype][0]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 16, 16, generator=gen)
    for sigma in (14.6, 1.0, 0.1):
        ref = _eps(default_prior.model, default_prior.negative, x * (1 + sigma ** 2) ** 0.5, sigma)
        out = _eps(prior.model, prior.negative, x * (1 + sigma ** 2) ** 0.5, sigma)
        assert torch.isfinite(out).all()
        rel = float((out - ref).norm() / ref.norm())
        # e4m3 keeps 3 mantissa bits (≤ 6 % per weight), e5m2 2 bits (≤ 12 %); rounding errors average out
        assert 0 < rel < (0.1 if weight_dtype == "fp8_e4m3fn" else 0.2), (sigma, rel)


def test_prior_swap_with_fp8_prior_samples_close_to_fp16_prior(priors, checkpoint_cache):
    """Eq. 7 through the stock sampler: the fp8 prior's image is finite and near the fp16 prior's."""
    import comfy.sample
    import comfy.sd

    nodes = pack_module("nodes").NODE_CLASS_MAPPINGS
    finetune, clip, _vae, _ = comfy.sd.load_checkpoint_guess_config(
        str(checkpoint_cache / "sd15_finetune.safetensors"), output_vae=False, output_clip=True)
    positive = pack_module("py.prior").encode_text(clip, "a photo")
    negative = pack_module("py.prior").encode_text(clip, "")
    latent = torch.zeros(1, 4, 16, 16)
    noise = comfy.sample.prepare_noise(latent, 0)
    images = {}
    for name in ("default", "fp8_e4m3fn"):
        swapped = nodes["PriorSwapCFG"].execute(finetune, priors[name][0], 1.0, 0.0, 1.0)
        swapped = swapped.result[0] if hasattr(swapped, "result") else swapped[0]
        images[name] = comfy.sample.sample(swapped, noise, 6, 5.0, "euler", "normal", positive, negative, latent,
                                           disable_pbar=True, seed=0).float()
    stock = comfy.sample.sample(finetune, noise, 6, 5.0, "euler", "normal", positive, negative, latent,
                                disable_pbar=True, seed=0).float()
    assert torch.isfinite(images["fp8_e4m3fn"]).all()
    diff = float((images["fp8_e4m3fn"] - images["default"]).norm() / images["default"].norm())
    swap_effect = float((images["default"] - stock).norm() / images["default"].norm())
    assert 0 < diff < 0.05, diff
    assert diff < 0.2 * swap_effect, (diff, swap_effect)  # far smaller than what the prior swap itself changes


def test_benchmark_fp8_variant_cpu_smoke(tmp_path):
    """tools/benchmark.py's swap_fp8, run as a program, on a one-level SD1.5-width UNet, 2 steps on the CPU."""
    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, str(ROOT / "tools" / "benchmark.py"), "--device", "cpu", "--models", "sd15-tiny",
                    "--steps", "2", "--repeats", "1", "--variants", "stock,swap,swap_fp8",
                    "--prior-weight-dtype", "fp8_e4m3fn", "--order", "blocked", "--json", str(out)],
                   check=True, cwd=ROOT, timeout=600)
    (r,) = json.loads(out.read_text())
    assert r["order"] == "blocked"
    assert r["swap_fp8_prior_stored_dtypes"] == ["float8_e4m3fn"]
    assert r["swap_fp8_prior_compute_dtype"] == "float32"
    assert r["weights_MiB_prior_fp8"] <= r["weights_MiB_each"] / 4 + 1
    assert r["finite"] and r["swap_fp8_finite"]
    assert 0 < r["swap_fp8_vs_swap_max_rel_diff"] < 0.25
    assert r["stock_ms_per_step"] > 0 and r["swap_fp8_ms_per_step"] > 0 and r["ratio_swap_fp8"] > 0
    # ComfyUI held the fine-tune and the fp8 prior, fully (the CPU has no budget to fit)
    held = {entry["model"]: entry for entry in r["swap_fp8_loaded"]}
    assert {"finetune", "prior_fp8"} <= set(held) and not r["swap_fp8_offloaded"]
    assert "prior" not in held  # blocked: the fp16 prior of the swap block before was unloaded, not kept beside
    assert held["prior_fp8"]["loaded_MiB"] == held["prior_fp8"]["total_MiB"] == r["weights_MiB_prior_fp8"]
    assert r["swap_fp8_fastpath"]["eager_reasons"] == {"not on a CUDA device": 4}
