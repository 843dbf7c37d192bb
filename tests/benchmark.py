"""Benchmark: ms per step and peak memory of stock CFG vs prior swap, measured in one run.

    python3 tests/host.py python tests/benchmark.py            # CPU: small SD1.5-width models, 64²
    python3 tests/benchmark.py --device cuda                   # on a CUDA machine with ComfyUI importable
                                                               # (COMFYUI_DIR=…): full-size SD1.5 512², SDXL 1024²

Models are ComfyUI's own classes (``model_detection.model_config_from_unet_config`` → BaseModel/SDXL
around ``openaimodel.UNetModel``) with random fp16 weights, wrapped in ModelPatchers and sampled with
``comfy.sample.sample`` (what the stock KSampler node calls) — stock CFG on the fine-tune, and the
fine-tune patched by the pack's ``PriorSwapCFG`` node with a second model of the same architecture as
prior. Each configuration is run once first (it loads the models and captures the CUDA graphs: reported
as ``first_run_ms``), then timed over ``--repeats`` runs of ``--steps`` steps, all variants interleaved.

Variants (``--variants``): ``stock``; ``swap`` (defaults); ``swap_eager`` (``PRIOR_SWAP_CUDA_GRAPHS=0``);
``swap_insight`` (the swapped model through the ``PriorSwapInsight`` node, issue #11); ``swap_overlap``
(``PRIOR_SWAP_OVERLAP=1``: prior on a second stream); ``swap_2gpu`` (with two GPUs: the prior, a copy of the
same weights, placed on cuda:1 by ``PRIOR_SWAP_PRIOR_DEVICE``); ``stock_again`` (stock last too, for drift).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from support.comfy_env import import_comfy, load_pack, pack_module  # noqa: E402

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

# SD3.5-medium's MMDiT-X as ComfyUI's model_detection reads it from the checkpoint (2.5 B parameters): a DiT with
# flow sampling, which calls no DIFFUSION_MODEL wrapper (the fast path wraps apply_model).
SD35M = dict(in_channels=16, patch_size=2, out_channels=16, depth=24, input_size=None, adm_in_channels=2048,
             context_embedder_config={"target": "torch.nn.Linear",
                                      "params": {"in_features": 4096, "out_features": 1536}},
             num_patches=147456, pos_embed_max_size=384, qk_norm="rms", pos_embed_scaling_factor=None,
             x_block_self_attn_layers=list(range(13)))


def build_model(unet_config: dict, seed: int, device_kind: str, gpu_dtype=None):
    """A ModelPatcher around ComfyUI's model class for ``unet_config``, random fp16 (CPU: fp32) weights."""
    import torch
    import comfy.model_detection
    import comfy.model_management as mm
    import comfy.model_patcher

    config = comfy.model_detection.model_config_from_unet_config(dict(unet_config))
    dtype = (gpu_dtype or torch.float16) if device_kind == "cuda" else torch.float32
    config.set_inference_dtype(dtype, None)
    model = config.get_model({}, "")
    # Drawn on the GPU where there is one (seconds instead of a minute for two SDXL UNets), kept on the CPU
    # until ComfyUI loads the model, as after loading a checkpoint.
    draw = "cuda" if device_kind == "cuda" else "cpu"
    gen = torch.Generator(device=draw).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.diffusion_model.named_parameters():
            if p.ndim <= 1:
                p.copy_(torch.ones_like(p) if name.endswith("weight") else torch.zeros_like(p))
            else:
                # gain 0.5 keeps a deep random fp16 UNet's activations finite (SDXL overflows at 1)
                std = 0.5 / p[0].numel() ** 0.5
                p.copy_(torch.empty(p.shape, device=draw).normal_(0.0, std, generator=gen))
    model.diffusion_model.to(dtype)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def conditioning(unet_config: dict, size: int, seed: int):
    import torch

    gen = torch.Generator().manual_seed(seed)
    if "context_embedder_config" in unet_config:  # MMDiT: CLIP-L/G + T5 context, 2048 pooled
        width = unet_config["context_embedder_config"]["params"]["in_features"]
        return [[torch.randn(1, 154, width, generator=gen),
                 {"pooled_output": torch.randn(1, unet_config["adm_in_channels"], generator=gen)}]]
    ctx = torch.randn(1, 77, unet_config["context_dim"], generator=gen)
    extra = {}
    if unet_config.get("adm_in_channels"):
        extra = dict(pooled_output=torch.randn(1, 1280, generator=gen), width=size, height=size, crop_w=0, crop_h=0,
                     target_width=size, target_height=size)
    return [[ctx, extra]]


def sample(model, positive, negative, size: int, steps: int, cfg: float, seed: int = 0):
    import torch
    import comfy.sample

    channels = model.get_model_object("latent_format").latent_channels
    latent = torch.zeros(1, channels, size // 8, size // 8)
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(model, noise, steps, cfg, "euler", "normal", positive, negative, latent,
                               disable_pbar=True, seed=seed)


def _private_pool_idle(device: int, pools: set | None) -> int:
    """Bytes held by CUDA-graph pools (``pools``: their ids; None: all) on ``device`` but not allocated.

    A replayed graph writes its activations there without the allocator counting them as allocated, so
    ``max_memory_allocated`` alone would leave them out of a graph run's peak.
    """
    import torch

    idle = 0
    for seg in torch.cuda.memory_snapshot():
        pool = tuple(seg.get("segment_pool_id", (0, 0)))
        if seg.get("device") != device or pool == (0, 0) or (pools is not None and pool not in pools):
            continue
        idle += seg["total_size"] - seg["allocated_size"]
    return idle


def bench(name: str, unet_config: dict, size: int, steps: int, repeats: int, device_kind: str, nodes,
          only: list[str] | None = None) -> dict:
    import copy

    import torch
    import comfy.model_management as mm
    import comfy.model_patcher

    mm.unload_all_models()
    mm.soft_empty_cache()
    ft = build_model(unet_config, 1, device_kind)
    prior_model = build_model(unet_config, 2, device_kind)
    pos, neg = conditioning(unet_config, size, 10), conditioning(unet_config, size, 11)
    prior_neg = conditioning(unet_config, size, 12)
    weights = ft.model_size()
    prior = nodes["PriorFromModel"].execute(prior_model, prior_neg)[0]
    swapped = nodes["PriorSwapCFG"].execute(ft, prior, 1.0, 0.0, 1.0)[0]
    insight = nodes["PriorSwapInsight"].execute(swapped)[0]
    gpus = torch.cuda.device_count() if device_kind == "cuda" else 0
    want = lambda label: not only or label in only  # noqa: E731
    swapped_2gpu = None
    if gpus >= 2 and want("swap_2gpu"):
        # The same prior weights in a model object of their own: ComfyUI keeps a loaded model where it is,
        # so a prior shared with the one-GPU variants would stay on cuda:0.
        prior_copy = comfy.model_patcher.ModelPatcher(copy.deepcopy(prior_model.model), load_device=mm.get_torch_device(),
                                                      offload_device=mm.unet_offload_device())
        prior2 = nodes["PriorFromModel"].execute(prior_copy, prior_neg)[0]
        os.environ["PRIOR_SWAP_PRIOR_DEVICE"] = "cuda:1"
        try:
            swapped_2gpu = nodes["PriorSwapCFG"].execute(ft, prior2, 1.0, 0.0, 1.0)[0]
        finally:
            os.environ.pop("PRIOR_SWAP_PRIOR_DEVICE")

    import comfy.cli_args

    mode = "lowvram" if comfy.cli_args.args.lowvram else "normal"
    if comfy.cli_args.args.reserve_vram:
        mode += f", reserve_vram {comfy.cli_args.args.reserve_vram:.1f} GB"
    result = {"model": name, "size": size, "steps": steps, "device": device_kind, "vram_mode": mode,
              "weights_MiB_each": round(weights / 2**20)}
    if device_kind == "cuda":
        result["cards"] = [torch.cuda.get_device_name(i) for i in range(gpus)]
    variants = [  # (label, model, environment) — all measured in this one process, stock first and last
        ("stock", ft, {}),
        ("swap", swapped, {}),
        ("swap_eager", swapped, {"PRIOR_SWAP_CUDA_GRAPHS": "0"}),
        ("swap_insight", insight, {}),
        ("swap_overlap", swapped, {"PRIOR_SWAP_OVERLAP": "1"}),
        ("swap_2gpu", swapped_2gpu, {}),
        ("stock_again", ft, {}),
    ] if device_kind == "cuda" else [("stock", ft, {}), ("swap", swapped, {}), ("swap_insight", insight, {})]
    variants = [v for v in variants if v[1] is not None and want(v[0])]
    outs, peaks, ms, first = {}, {}, {}, {}
    devices = list(range(min(gpus, 2)))

    def cache_of(label: str):
        fastpath = pack_module("py.fastpath")
        return fastpath.graph_cache_of(dict((v[0], v[1]) for v in variants)[label], "prior_swap_cfg")

    def pools_of(label: str) -> dict:
        """Ids of the CUDA-graph pools a variant replays from, per device (see _private_pool_idle)."""
        cache = cache_of(label)
        if cache is None:
            return {}
        separate = label == "swap_overlap"
        found: dict = {}
        for (index, tag), handle in cache.pools.items():
            if (tag is not None) == separate:
                found.setdefault(index, set()).add(tuple(handle))
        return found

    def run_variant(label, m, env, record_peak: bool = False):
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            if device_kind == "cuda":
                for d in devices:
                    torch.cuda.synchronize(d)
                    torch.cuda.reset_peak_memory_stats(d)
            t0 = time.perf_counter()
            out = sample(m, pos, neg, size, steps, 7.5)
            if device_kind == "cuda":
                for d in devices:
                    torch.cuda.synchronize(d)
            elapsed = time.perf_counter() - t0
        finally:
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        if device_kind == "cuda" and record_peak:
            pools = pools_of(label) if label.startswith("swap") else {}
            for d in devices:
                peak = torch.cuda.max_memory_allocated(d) + (_private_pool_idle(d, pools[d]) if d in pools else 0)
                peaks[(label, d)] = max(peaks.get((label, d), 0), peak)
        return elapsed, out

    captured, times = {}, {label: [] for label, _, _ in variants}
    # Peaks are those of the timed runs (steady state; first runs load models and capture graphs). Insight's
    # batch-2 graph enlarges the graph pool the swap shares with it, so the swap's own peak is taken before
    # insight first runs: phase 1 without it, then phase 2 interleaves it with the swap (for the
    # insight-vs-swap ratio; the swap's peak is not updated there).
    phases = [[v for v in variants if v[0] != "swap_insight"]]
    if any(v[0] == "swap_insight" for v in variants):
        phases.append([v for v in variants if v[0] in ("swap", "swap_insight")])
    frozen: set = set()
    for phase in phases:
        for label, m, env in phase:  # first run: loads the models, captures the CUDA graphs
            if label in first:
                continue
            first[label], _ = run_variant(label, m, env)
            cache = cache_of(label) if label.startswith("swap") else None
            if cache is not None:
                result[f"{label}_first_run_captures"] = cache.captures
                result[f"{label}_capture_ms"] = round(1000 * cache.capture_s)
            if label == "stock" and device_kind == "cuda":
                # the fine-tune alone is resident here: stock CFG's own peak, the base of the memory budget
                peaks["stock_alone"] = torch.cuda.max_memory_allocated(0)
        for _ in range(repeats):
            for label, m, env in phase:  # interleaved, so drifting clocks affect every variant alike
                elapsed, outs[label] = run_variant(label, m, env, record_peak=label not in frozen)
                times[label].append(elapsed)
                cache = cache_of(label) if label.startswith("swap") else None
                if cache is not None:  # graphs kept across runs: the timed runs should only replay
                    captured[label] = captured.get(label, 0) + cache.captures
        frozen.update(label for label, _, _ in phase)
    for label, n in captured.items():
        result[f"{label}_captures_in_timed_runs"] = n
    for label in times:
        ms[label] = 1000 * min(times[label]) / steps
        result[f"{label}_ms_per_step"] = round(ms[label], 2)
        result[f"{label}_first_run_ms"] = round(1000 * first[label])
    cache = cache_of("swap") if "swap" in ms else None
    if cache is not None and device_kind == "cuda":
        result["graph_pool_MiB"] = {f"cuda:{d}": round(b / 2**20) for d, b in sorted(cache.pool_bytes.items())}
    stock = min(ms["stock"], ms.get("stock_again", ms["stock"]))
    for label in ms:
        if label.startswith("swap"):
            result[f"ratio_{label}"] = round(ms[label] / stock, 3)
    if "swap_insight" in ms and "swap" in ms:
        result["insight_over_swap"] = round(ms["swap_insight"] / ms["swap"], 3)
    if "swap" in outs:
        ref = outs["swap"].float()
        for label in ("swap_eager", "swap_insight", "swap_overlap", "swap_2gpu"):
            if label in outs:  # the same image? (graph vs eager, measured vs not, one vs two GPUs)
                result[f"{label}_vs_swap_max_rel_diff"] = float((outs[label].float() - ref).abs().max() / ref.abs().max())
        result["finite"] = bool(torch.isfinite(ref).all())
    if device_kind == "cuda":
        result["peak_stock_MiB"] = round(peaks["stock_alone"] / 2**20)
        activations = peaks["stock_alone"] - weights
        budget = (2 * weights + activations) * 1.05
        for label in ms:
            if label.startswith("swap"):
                result[f"peak_{label}_MiB"] = round(peaks[(label, 0)] / 2**20)
                if label == "swap_2gpu":
                    result["peak_swap_2gpu_cuda1_MiB"] = round(peaks[(label, 1)] / 2**20)
                else:
                    result[f"peak_{label}_over_budget"] = round(peaks[(label, 0)] / budget, 3)
    outs.clear()
    mm.unload_all_models()
    if device_kind == "cuda":
        for d in devices[1:]:  # unload_all_models() only empties ComfyUI's main device
            mm.free_memory(1e30, torch.device("cuda", d))
        torch.cuda.empty_cache()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--models", default=None,
                        help="comma list of sd15,sdxl,sd35m (default: cuda sd15,sdxl; cpu sd15-small)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--variants", help="comma list of variants to run (default: all)")
    parser.add_argument("--lowvram", action="store_true", help="ComfyUI's --lowvram (partial loading)")
    parser.add_argument("--simulate-vram-gb", type=float,
                        help="reserve the rest of the card (ComfyUI's --reserve-vram) so only this much is usable")
    args = parser.parse_args()

    import logging

    pack_log = logging.getLogger("prior_swap_cfg")
    pack_log.setLevel(logging.INFO)
    pack_log.addHandler(logging.StreamHandler(sys.stdout))
    pack_log.propagate = False  # ComfyUI's root handler would print every line twice

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
    nodes = pack_module("nodes").NODE_CLASS_MAPPINGS  # V3 node classes by id (#17)
    from support.checkpoints import unet_config as small_unet

    if args.device == "cuda":
        plan = {"sd15": (SD15, 512), "sdxl": (SDXL, 1024), "sd35m": (SD35M, 1024)}
    else:
        small = {**SD15, **small_unet(4, [1, 2]), "num_res_blocks": [1, 1]}
        plan = {"sd15-small": (small, 64)}
    wanted = args.models.split(",") if args.models else [m for m in plan if m != "sd35m"]
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
