"""Benchmark: ms per step and peak memory of stock CFG vs prior swap, measured in one run.

    python3 tests/host.py python tests/benchmark.py            # CPU: small SD1.5-width models, 64²
    python3 tests/benchmark.py --device cuda                   # on a CUDA machine with ComfyUI importable
                                                               # (COMFYUI_DIR=…): full-size SD1.5 512², SDXL 1024²

Models are ComfyUI's own classes (``model_detection.model_config_from_unet_config`` → BaseModel/SDXL
around ``openaimodel.UNetModel``) with random fp16 weights, wrapped in ModelPatchers and sampled with
``comfy.sample.sample`` (what the stock KSampler node calls) — stock CFG on the fine-tune, and the
fine-tune patched by the pack's ``PriorSwapCFG`` node with a second model of the same architecture as
prior. Each configuration is warmed up once, then timed over ``--repeats`` runs of ``--steps`` steps.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

SD15 = dict(use_checkpoint=False, image_size=32, out_channels=4, use_spatial_transformer=True, legacy=False,
            adm_in_channels=None, in_channels=4, model_channels=320, num_res_blocks=[2, 2, 2, 2],
            transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], channel_mult=[1, 2, 4, 4], transformer_depth_middle=1,
            use_linear_in_transformer=False, context_dim=768, num_heads=8,
            transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
            use_temporal_attention=False, use_temporal_resblock=False)
SDXL = dict(use_checkpoint=False, image_size=32, out_channels=4, use_spatial_transformer=True, legacy=False,
            num_classes="sequential", adm_in_channels=2816, in_channels=4, model_channels=320,
            num_res_blocks=[2, 2, 2], transformer_depth=[0, 0, 2, 2, 10, 10], channel_mult=[1, 2, 4],
            transformer_depth_middle=10, use_linear_in_transformer=True, context_dim=2048, num_head_channels=64,
            transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10],
            use_temporal_attention=False, use_temporal_resblock=False)


def load_pack():
    """Import this repository as ComfyUI imports a custom node pack (a package named after its folder)."""
    name = "comfyui_prior_swap_bench"
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def build_model(unet_config: dict, seed: int, device_kind: str):
    """A ModelPatcher around ComfyUI's model class for ``unet_config``, random fp16 (CPU: fp32) weights."""
    import torch
    import comfy.model_detection
    import comfy.model_management as mm
    import comfy.model_patcher

    config = comfy.model_detection.model_config_from_unet_config(dict(unet_config))
    dtype = torch.float16 if device_kind == "cuda" else torch.float32
    config.set_inference_dtype(dtype, None)
    model = config.get_model({}, "")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.diffusion_model.named_parameters():
            if p.ndim <= 1:
                p.copy_(torch.ones_like(p) if name.endswith("weight") else torch.zeros_like(p))
            else:
                # gain 0.5 keeps a deep random fp16 UNet's activations finite (SDXL overflows at 1)
                p.normal_(0.0, 0.5 / p[0].numel() ** 0.5, generator=gen)
    model.diffusion_model.to(dtype)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def conditioning(unet_config: dict, size: int, seed: int):
    import torch

    gen = torch.Generator().manual_seed(seed)
    ctx = torch.randn(1, 77, unet_config["context_dim"], generator=gen)
    extra = {}
    if unet_config.get("adm_in_channels"):
        extra = dict(pooled_output=torch.randn(1, 1280, generator=gen), width=size, height=size, crop_w=0, crop_h=0,
                     target_width=size, target_height=size)
    return [[ctx, extra]]


def sample(model, positive, negative, size: int, steps: int, cfg: float, seed: int = 0):
    import torch
    import comfy.sample

    latent = torch.zeros(1, 4, size // 8, size // 8)
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(model, noise, steps, cfg, "euler", "normal", positive, negative, latent,
                               disable_pbar=True, seed=seed)


def bench(name: str, unet_config: dict, size: int, steps: int, repeats: int, device_kind: str, nodes,
          only: list[str] | None = None) -> dict:
    import torch
    import comfy.model_management as mm

    mm.unload_all_models()
    mm.soft_empty_cache()
    ft = build_model(unet_config, 1, device_kind)
    prior_model = build_model(unet_config, 2, device_kind)
    pos, neg = conditioning(unet_config, size, 10), conditioning(unet_config, size, 11)
    prior_neg = conditioning(unet_config, size, 12)
    weights = ft.model_size()
    prior = nodes["PriorFromModel"]().make(prior_model, prior_neg)[0]
    swapped = nodes["PriorSwapCFG"]().patch(ft, prior, 1.0, 0.0, 1.0)[0]

    import comfy.cli_args

    mode = "lowvram" if comfy.cli_args.args.lowvram else "normal"
    if comfy.cli_args.args.reserve_vram:
        mode += f", reserve_vram {comfy.cli_args.args.reserve_vram:.1f} GB"
    result = {"model": name, "size": size, "steps": steps, "device": device_kind, "vram_mode": mode,
              "weights_MiB_each": round(weights / 2**20)}
    variants = [  # (label, model, environment) — all measured in this one process, stock first and last
        ("stock", ft, {}),
        ("swap", swapped, {}),
        ("swap_eager", swapped, {"PRIOR_SWAP_CUDA_GRAPHS": "0"}),
        ("stock_again", ft, {}),
    ] if device_kind == "cuda" else [("stock", ft, {}), ("swap", swapped, {})]
    if only:
        variants = [v for v in variants if v[0] in only]
    outs, peaks, ms = {}, {}, {}

    def run_variant(label, m, env):
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            if device_kind == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            out = sample(m, pos, neg, size, steps, 7.5)
            if device_kind == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - t0
        finally:
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        return elapsed, out

    for label, m, env in variants:  # warm-up: loads the models, first CUDA-graph captures
        run_variant(label, m, env)
        if label == "stock" and device_kind == "cuda":
            # the fine-tune alone is resident here: stock CFG's own peak, the base of the memory budget
            peaks["stock_alone"] = torch.cuda.max_memory_allocated()
    times = {label: [] for label, _, _ in variants}
    for _ in range(repeats):  # interleaved, so drifting clocks affect every variant alike
        for label, m, env in variants:
            elapsed, outs[label] = run_variant(label, m, env)
            times[label].append(elapsed)
            peaks[label] = max(peaks.get(label, 0), torch.cuda.max_memory_allocated() if device_kind == "cuda" else 0)
    for label in times:
        ms[label] = 1000 * min(times[label]) / steps
        result[f"{label}_ms_per_step"] = round(ms[label], 2)
    stock = min(ms["stock"], ms.get("stock_again", ms["stock"]))
    for label in ms:
        if label.startswith("swap"):
            result[f"ratio_{label}"] = round(ms[label] / stock, 3)
    out_stock = outs["stock"]
    if device_kind == "cuda" and "swap_eager" in outs:
        eager = outs["swap_eager"]
        result["finite"] = bool(torch.isfinite(outs["swap"]).all() and torch.isfinite(eager).all())
        result["graph_vs_eager_max_rel_diff"] = float((outs["swap"] - eager).abs().max() / eager.abs().max())
    if device_kind == "cuda":
        peak_stock, peak_swap = peaks["stock_alone"], peaks["swap"]
        result["peak_stock_MiB"] = round(peak_stock / 2**20)
        result["peak_swap_MiB"] = round(peak_swap / 2**20)
        activations = peak_stock - weights
        budget = (2 * weights + activations) * 1.05
        result["peak_swap_over_budget"] = round(peak_swap / budget, 3)
    del out_stock
    mm.unload_all_models()
    torch.cuda.empty_cache() if device_kind == "cuda" else None
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--models", default=None, help="comma list of sd15,sdxl (default: cuda both, cpu sd15-small)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--variants", help="comma list of variants to run (default: all)")
    parser.add_argument("--lowvram", action="store_true", help="ComfyUI's --lowvram (partial loading)")
    parser.add_argument("--simulate-vram-gb", type=float,
                        help="reserve the rest of the card (ComfyUI's --reserve-vram) so only this much is usable")
    args = parser.parse_args()

    import logging

    from support.comfy_env import import_comfy

    pack_log = logging.getLogger("prior_swap_cfg")
    pack_log.setLevel(logging.INFO)
    pack_log.addHandler(logging.StreamHandler(sys.stdout))

    if args.device == "cpu":
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    import_comfy()
    import comfy.cli_args

    if args.lowvram:
        comfy.cli_args.args.lowvram = True
    if args.simulate_vram_gb:
        import torch

        total = torch.cuda.get_device_properties(0).total_memory / 2**30
        comfy.cli_args.args.reserve_vram = max(0.0, total - args.simulate_vram_gb)
    pack = load_pack()
    nodes = pack.NODE_CLASS_MAPPINGS
    from support.checkpoints import unet_config as small_unet

    if args.device == "cuda":
        plan = {"sd15": (SD15, 512), "sdxl": (SDXL, 1024)}
    else:
        small = {**SD15, **small_unet(4, [1, 2]), "num_res_blocks": [1, 1]}
        plan = {"sd15-small": (small, 64)}
    wanted = args.models.split(",") if args.models else list(plan)
    results = []
    for name in wanted:
        cfg, size = plan[name]
        r = bench(name, cfg, size, args.steps, args.repeats, args.device, nodes,
                  args.variants.split(",") if args.variants else None)
        results.append(r)
        print(json.dumps(r), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
