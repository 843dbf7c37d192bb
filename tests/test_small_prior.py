"""A smaller prior of the same latent space (issue #20: a card that cannot hold two SDXLs).

Segmind's distilled SDXLs (SSD-1B, Vega) share SDXL's latent space and conditioning, so they can be the prior of an
SDXL fine-tune at 52 % / 29 % of SDXL's weights. The benchmark's configs of them (support/bench_models.py) are
checked against the host's own model detection, and the pack's nodes accept them as priors of an SDXL model (and
refuse an SD1.5 of the same channel count). Models are ComfyUI's own classes built on the meta device (no weights).
The benchmark's ``swap_small`` variant runs on the CPU with a one-level SD1.5-width UNet as the small prior.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from support import bench_models
from support.comfy_env import ROOT, import_comfy, pack_module


def _on_meta(unet_config: dict):
    """The host's model class for ``unet_config`` (by its own detection), on the meta device, in a ModelPatcher."""
    import_comfy()
    import comfy.model_patcher
    from support.families import model_config

    config = model_config(unet_config)
    config.set_inference_dtype(torch.float16, None)
    model = config.get_model({}, "", device=torch.device("meta"))
    return type(config).__name__, comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"),
                                                                  offload_device=torch.device("cpu"))


@pytest.mark.fast  # no server, no weights: see pytest.ini
@pytest.mark.parametrize("unet_config, host_class, billions", [(bench_models.SSD1B, "SSD1B", 1.33),
                                                               (bench_models.VEGA, "Segmind_Vega", 0.75)])
def test_distilled_sdxl_is_accepted_as_prior_of_sdxl(unet_config, host_class, billions):
    name, finetune = _on_meta(bench_models.SDXL)
    nodes = pack_module("nodes").NODE_CLASS_MAPPINGS
    assert name == "SDXL"
    name, small = _on_meta(unet_config)
    assert name == host_class
    parameters = sum(p.numel() for p in small.model.diffusion_model.parameters())
    assert parameters == pytest.approx(billions * 1e9, rel=0.01)
    prior = nodes["PriorFromModel"].execute(small, bench_models.conditioning(unet_config, 1024, 1))[0]
    swapped = nodes["PriorSwapCFG"].execute(finetune, prior, 1.0, 0.0, 1.0)[0]
    assert swapped is not finetune and swapped.model is finetune.model


@pytest.mark.fast
def test_sd15_prior_of_sdxl_is_refused():
    """Same channel count, another latent space: the check is the latent format, not the shape."""
    _, finetune = _on_meta(bench_models.SDXL)
    nodes = pack_module("nodes").NODE_CLASS_MAPPINGS
    _, sd15 = _on_meta(bench_models.SD15)
    prior = nodes["PriorFromModel"].execute(sd15, bench_models.conditioning(bench_models.SD15, 512, 1))[0]
    with pytest.raises(Exception, match="another latent space"):
        nodes["PriorSwapCFG"].execute(finetune, prior, 1.0, 0.0, 1.0)


def test_benchmark_small_prior_variant_cpu_smoke(tmp_path):
    """tools/benchmark.py's swap_small and swap_small_fp8, run as a program: sd15-small with sd15-tiny as prior
    (fp16, then stored in fp8), 2 steps on the CPU."""
    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, str(ROOT / "tools" / "benchmark.py"), "--device", "cpu", "--models", "sd15-small",
                    "--small-prior", "sd15-tiny", "--prior-weight-dtype", "fp8_e4m3fn", "--steps", "2", "--repeats",
                    "1", "--variants", "stock,swap_small,swap_small_fp8", "--order", "blocked", "--json", str(out)],
                   check=True, cwd=ROOT, timeout=600)
    (r,) = json.loads(out.read_text())
    assert r["small_prior"] == "sd15-tiny"
    assert 0 < r["weights_MiB_prior_small"] < r["weights_MiB_each"] / 2
    assert r["swap_small_finite"] and r["swap_small_ms_per_step"] > 0 and r["ratio_swap_small"] > 0
    held = {entry["model"]: entry for entry in r["swap_small_loaded"]}
    assert set(held) == {"finetune", "prior_small"} and not r["swap_small_offloaded"]
    assert held["prior_small"]["total_MiB"] == r["weights_MiB_prior_small"]
    assert r["swap_small_fastpath"]["eager_reasons"] == {"not on a CUDA device": 4}
    # the same small prior stored in fp8: half of its fp16 weights or less (norms stay fp32), held beside the fine-tune
    assert 0 < r["weights_MiB_prior_small_fp8"] <= r["weights_MiB_prior_small"] * 0.6
    assert r["swap_small_fp8_finite"] and not r["swap_small_fp8_offloaded"]
    assert {entry["model"] for entry in r["swap_small_fp8_loaded"]} == {"finetune", "prior_small_fp8"}
