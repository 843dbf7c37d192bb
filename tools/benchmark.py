"""Benchmark: ms per step and peak memory of stock CFG vs prior swap, measured in one run.

    python3 tools/host.py python tools/benchmark.py            # CPU: small SD1.5-width models, 64²
    python3 tools/benchmark.py --device cuda                   # on a CUDA machine with ComfyUI importable
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
Added by options (issue #20):

- ``--prior-weight-dtype fp8_e4m3fn|fp8_e5m2``: ``swap_fp8``, the same prior weights stored in fp8 and cast at use,
  built as ComfyUI's ``UNETLoader`` with that ``weight_dtype`` builds a model (``comfy.sd.load_diffusion_model``:
  ``set_inference_dtype(fp8, unet_manual_cast(fp8, …))``, then the weights copied in, rounded to fp8).
- ``--compile``: ``stock_compiled`` and ``swap_compiled``, the host's ``TorchCompileModel`` node (backend
  ``--compile-backend``) applied to the fine-tune and to the prior's MODEL, as a user would, before
  ``PriorFromModel``/``PriorSwapCFG``. The pack's CUDA graphs step aside for a model with another APPLY_MODEL
  wrapper, so the swap then runs the two compiled batch-1 forwards (``swap_compiled_fastpath`` says what ran);
  ``swap_compiled_overlap`` (CUDA) runs them side by side, the prior's on a second stream.
- ``--small-prior ssd1b|vega``: ``swap_small``, the SDXL fine-tune with a distilled SDXL as prior (Segmind's SSD-1B
  or Vega: SDXL's latent space and conditioning, 52 % / 29 % of its weights), the prior a card that cannot hold
  two SDXLs can hold beside the fine-tune. On the CPU ``sd15-tiny`` is the small prior of ``sd15-small``. With
  ``--prior-weight-dtype`` too: ``swap_small_fp8``, the smaller prior stored in fp8; ``swap_small_overlap`` (CUDA):
  ``swap_small`` with the prior on a second stream; likewise ``swap_fp8_overlap``.

Per variant it also reports what ComfyUI had loaded after its last timed run (``<variant>_loaded``: each model's
loaded vs total MiB, ``partial`` where ComfyUI loaded it in part and streams the rest every step;
``<variant>_offloaded``), its peak VRAM (``peak_<variant>_MiB``, the timed runs') and the fast path's replays and
eager calls with their reasons (``<variant>_fastpath``). With ``--simulate-vram-gb`` (a smaller card: ComfyUI's
``--reserve-vram``, one budget per process) the variants run one after the other (``--order blocked``: a
variant's first run, then its repeats), as a user runs one setting, instead of interleaved: interleaving two
settings that do not both fit would reload weights between runs and time the reloads. Every model is unloaded
before each block, so what the variant before left loaded in part (an fp16 prior beside the fp8 one) does not
take the budget of the next.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the harness: tests/support

from support.bench_models import (FP8, SD15, SD35M, SDXL, SSD1B, VEGA, build_model, conditioning, sample,  # noqa: E402
                                  sd15_small, sd15_tiny)
from support.comfy_env import import_comfy, load_pack, pack_module  # noqa: E402


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


def loaded_state(models: dict) -> list[dict]:
    """What ComfyUI holds loaded now: per model (``models``: label → BaseModel), loaded vs total MiB."""
    import comfy.model_management as mm

    state = []
    for lm in mm.current_loaded_models:
        patcher = lm.model
        if patcher is None:
            continue
        label = next((k for k, m in models.items() if patcher.model is m), "other")
        total, loaded = lm.model_memory(), lm.model_loaded_memory()
        state.append({"model": label, "loaded_MiB": round(loaded / 2**20), "total_MiB": round(total / 2**20),
                      "partial": bool(getattr(patcher, "model_lowvram", False) or loaded < total),
                      "device": str(lm.device)})
    return state


def _dynamo_graphs() -> int:
    """Graphs torch.compile has compiled in this process so far (0 where dynamo is not in use)."""
    try:
        from torch._dynamo.utils import counters
    except Exception:  # pragma: no cover
        return 0
    return int(counters["stats"]["unique_graphs"])


def bench(name: str, unet_config: dict, size: int, steps: int, repeats: int, device_kind: str, nodes,
          only: list[str] | None = None, prior_weight_dtype: str | None = None, compile_backend: str | None = None,
          blocked: bool = False, small_prior: tuple[str, dict] | None = None) -> dict:
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

    def swapped_with(prior_of: object, model: object = ft) -> object:
        """``model`` (default: the fine-tune) patched by Prior Swap CFG with ``prior_of`` as its prior."""
        prior = nodes["PriorFromModel"].execute(prior_of, prior_neg)[0]
        return nodes["PriorSwapCFG"].execute(model, prior, 1.0, 0.0, 1.0)[0]

    swapped = swapped_with(prior_model)
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
    swapped_fp8 = prior_fp8_model = None
    if prior_weight_dtype and (want("swap_fp8") or want("swap_fp8_overlap")):
        # The same prior weights (seed 2) stored in fp8, in a model object of their own.
        prior_fp8_model = build_model(unet_config, 2, device_kind, weight_dtype=getattr(torch, FP8[prior_weight_dtype]))
        swapped_fp8 = swapped_with(prior_fp8_model)
    swapped_small = small_prior_model = swapped_small_fp8 = small_prior_fp8_model = None
    if small_prior and (want("swap_small") or want("swap_small_overlap")):  # a smaller prior, same latent space (seed 3)
        small_prior_model = build_model(small_prior[1], 3, device_kind)
        swapped_small = swapped_with(small_prior_model)
    if small_prior and prior_weight_dtype and want("swap_small_fp8"):  # the smaller prior, stored in fp8
        small_prior_fp8_model = build_model(small_prior[1], 3, device_kind,
                                            weight_dtype=getattr(torch, FP8[prior_weight_dtype]))
        swapped_small_fp8 = swapped_with(small_prior_fp8_model)
    ft_compiled = swapped_compiled = None
    if compile_backend and any(want(v) for v in ("stock_compiled", "swap_compiled", "swap_compiled_overlap")):
        # As a user: TorchCompileModel on the fine-tune's MODEL and on the prior's, then the pack's nodes.
        from comfy_extras.nodes_torch_compile import TorchCompileModel

        # Stock CFG's batch-2 call and the swap's batch-1 calls are two shapes of one compiled forward; by
        # default torch.compile recompiles a second shape as a dynamic-shape graph. Each shape gets a static graph
        # of its own here, as a user who runs only stock or only the swap gets.
        import torch._dynamo

        torch._dynamo.config.automatic_dynamic_shapes = False
        ft_compiled = TorchCompileModel.execute(ft, compile_backend)[0]
        prior_compiled = TorchCompileModel.execute(prior_model, compile_backend)[0]
        swapped_compiled = swapped_with(prior_compiled, ft_compiled)

    import comfy.cli_args

    mode = "lowvram" if comfy.cli_args.args.lowvram else "normal"
    if comfy.cli_args.args.reserve_vram:
        mode += f", reserve_vram {comfy.cli_args.args.reserve_vram:.1f} GB"
    result = {"model": name, "size": size, "steps": steps, "device": device_kind, "vram_mode": mode,
              "weights_MiB_each": round(weights / 2**20), "order": "blocked" if blocked else "interleaved"}
    if prior_fp8_model is not None:
        result["prior_weight_dtype"] = prior_weight_dtype
        result["weights_MiB_prior_fp8"] = round(prior_fp8_model.model_size() / 2**20)
        result["swap_fp8_prior_stored_dtypes"] = sorted({str(p.dtype).replace("torch.", "") for p in
                                                         prior_fp8_model.model.diffusion_model.parameters()})
        cast = prior_fp8_model.model.manual_cast_dtype
        result["swap_fp8_prior_compute_dtype"] = str(cast).replace("torch.", "") if cast is not None else None
    if small_prior_model is not None or small_prior_fp8_model is not None:
        result["small_prior"] = small_prior[0]
    if small_prior_model is not None:
        result["weights_MiB_prior_small"] = round(small_prior_model.model_size() / 2**20)
    if small_prior_fp8_model is not None:
        result["weights_MiB_prior_small_fp8"] = round(small_prior_fp8_model.model_size() / 2**20)
    if compile_backend:
        result["compile_backend"] = compile_backend
        result["compile_shapes"] = "static per batch size (automatic_dynamic_shapes off)"
    if device_kind == "cuda":
        result["cards"] = [torch.cuda.get_device_name(i) for i in range(gpus)]
    variants = [  # (label, model, environment) — all measured in this one process, stock first and last
        ("stock", ft, {}),
        ("swap", swapped, {}),
        ("swap_eager", swapped, {"PRIOR_SWAP_CUDA_GRAPHS": "0"}),
        ("swap_insight", insight, {}),
        ("swap_overlap", swapped, {"PRIOR_SWAP_OVERLAP": "1"}),
        ("swap_2gpu", swapped_2gpu, {}),
        ("swap_fp8", swapped_fp8, {}),
        ("swap_fp8_overlap", swapped_fp8, {"PRIOR_SWAP_OVERLAP": "1"}),
        ("swap_small", swapped_small, {}),
        ("swap_small_fp8", swapped_small_fp8, {}),
        ("swap_small_overlap", swapped_small, {"PRIOR_SWAP_OVERLAP": "1"}),
        ("stock_compiled", ft_compiled, {}),
        ("swap_compiled", swapped_compiled, {}),
        ("swap_compiled_overlap", swapped_compiled, {"PRIOR_SWAP_OVERLAP": "1"}),  # the two compiled forwards side by side
        ("stock_again", ft, {}),
    ] if device_kind == "cuda" else [("stock", ft, {}), ("swap", swapped, {}), ("swap_insight", insight, {}),
                                     ("swap_fp8", swapped_fp8, {}), ("swap_small", swapped_small, {}),
                                     ("swap_small_fp8", swapped_small_fp8, {}),
                                     ("stock_compiled", ft_compiled, {}),
                                     ("swap_compiled", swapped_compiled, {})]
    variants = [v for v in variants if v[1] is not None and want(v[0])]
    outs, peaks, ms, first = {}, {}, {}, {}
    devices = list(range(min(gpus, 2)))
    named_models = {"finetune": ft.model, "prior": prior_model.model}
    if prior_fp8_model is not None:
        named_models["prior_fp8"] = prior_fp8_model.model
    if small_prior_model is not None:
        named_models["prior_small"] = small_prior_model.model
    if small_prior_fp8_model is not None:
        named_models["prior_small_fp8"] = small_prior_fp8_model.model
    loaded, fastpath_runs, compiled_graphs = {}, {}, {}

    def cache_of(label: str):
        """The GraphCache a variant's fast path replays from (its APPLY_MODEL wrapper's ``cache``), or None."""
        import comfy.patcher_extension

        model = dict((v[0], v[1]) for v in variants)[label]
        wrappers = model.get_wrappers(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "prior_swap_cfg")
        return wrappers[0].cache if wrappers else None

    def pools_of(label: str) -> dict:
        """Ids of the CUDA-graph pools a variant replays from, per device (see _private_pool_idle)."""
        cache = cache_of(label)
        if cache is None:
            return {}
        separate = label.endswith("overlap")  # replayed concurrently: each model's graphs in a pool of its own
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
            loaded[label] = loaded_state(named_models)  # before anything else is loaded
            cache = cache_of(label) if label.startswith("swap") else None
            if cache is not None:  # this run's replays and eager calls (counters start at zero every run)
                fastpath_runs[label] = {"replays": cache.replays, "eager": cache.eager,
                                        "eager_reasons": dict(cache.eager_reasons)}
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
    if blocked:  # one variant after the other: its first run, then its repeats (the swap's before insight's)
        phases = [[v] for v in variants]
    frozen: set = set()
    for phase in phases:
        if blocked:  # as a user who runs only this setting: nothing of the variant before stays loaded in part
            mm.unload_all_models()  # (its graphs go with its models: the fast path's ON_DETACH callback)
            mm.soft_empty_cache()
        for label, m, env in phase:  # first run: loads the models, captures the CUDA graphs
            if label in first:
                continue
            graphs_before = _dynamo_graphs()
            first[label], _ = run_variant(label, m, env)
            compiled_graphs[label] = _dynamo_graphs() - graphs_before
            cache = cache_of(label) if label.startswith("swap") else None
            if cache is not None:
                result[f"{label}_first_run_captures"] = cache.captures
                result[f"{label}_capture_ms"] = round(1000 * cache.capture_s)
            if label == "stock" and device_kind == "cuda":
                # the fine-tune alone is resident here: stock CFG's own peak, the base of the memory budget
                peaks["stock_alone"] = torch.cuda.max_memory_allocated(0)
        graphs_before = _dynamo_graphs()
        for _ in range(repeats):
            for label, m, env in phase:  # interleaved, so drifting clocks affect every variant alike
                elapsed, outs[label] = run_variant(label, m, env, record_peak=label not in frozen)
                times[label].append(elapsed)
                cache = cache_of(label) if label.startswith("swap") else None
                if cache is not None:  # graphs kept across runs: the timed runs should only replay
                    captured[label] = captured.get(label, 0) + cache.captures
        if any(label.endswith("_compiled") for label, _, _ in phase):  # recompiles would be timed: expect 0
            result["compiled_graphs_in_timed_runs"] = (result.get("compiled_graphs_in_timed_runs", 0)
                                                       + _dynamo_graphs() - graphs_before)
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
        for label in ("swap_eager", "swap_insight", "swap_overlap", "swap_2gpu", "swap_fp8", "swap_fp8_overlap",
                      "swap_compiled", "swap_compiled_overlap"):
            if label in outs:  # the same image? (graph vs eager, measured vs not, one vs two GPUs, fp8, compiled)
                result[f"{label}_vs_swap_max_rel_diff"] = float((outs[label].float() - ref).abs().max() / ref.abs().max())
        if "swap_fp8" in outs:  # what fp8 storage of the prior changes in the sampled latent, on average
            result["swap_fp8_vs_swap_mean_rel_diff"] = float((outs["swap_fp8"].float() - ref).abs().mean()
                                                             / ref.abs().mean())
        result["finite"] = bool(torch.isfinite(ref).all())
    if "swap_small_overlap" in outs and "swap_small" in outs:  # second stream: the same image?
        small = outs["swap_small"].float()
        result["swap_small_overlap_vs_swap_small_max_rel_diff"] = float(
            (outs["swap_small_overlap"].float() - small).abs().max() / small.abs().max())
    if "stock_compiled" in outs and "stock" in outs:
        ref = outs["stock"].float()
        result["stock_compiled_vs_stock_max_rel_diff"] = float((outs["stock_compiled"].float() - ref).abs().max()
                                                               / ref.abs().max())
    for label in ("swap_fp8", "swap_small", "swap_small_fp8", "swap_compiled", "swap_compiled_overlap",
                  "stock_compiled"):
        if label in outs:
            result[f"{label}_finite"] = bool(torch.isfinite(outs[label].float()).all())
    for label in ms:
        if label in loaded:
            result[f"{label}_loaded"] = loaded[label]
            result[f"{label}_offloaded"] = any(entry["partial"] for entry in loaded[label])
        if label in fastpath_runs:
            result[f"{label}_fastpath"] = fastpath_runs[label]
        if compiled_graphs.get(label):
            result[f"{label}_compiled_graphs_first_run"] = compiled_graphs[label]
    for label in ("swap_compiled", "swap_compiled_overlap"):
        if label in ms and "stock_compiled" in ms:
            result[f"ratio_{label}_to_stock_compiled"] = round(ms[label] / ms["stock_compiled"], 3)
    if device_kind == "cuda":
        result["peak_stock_MiB"] = round(peaks["stock_alone"] / 2**20)
        for label in ms:  # the timed runs' peaks of every variant (peak_stock_MiB: stock's first run, alone)
            if (label, 0) in peaks:
                result[f"peak_{label}_timed_MiB"] = round(peaks[(label, 0)] / 2**20)
        activations = peaks["stock_alone"] - weights
        budget = (2 * weights + activations) * 1.05
        for label in ms:
            if label.startswith("swap"):
                result[f"peak_{label}_MiB"] = round(peaks[(label, 0)] / 2**20)
                if label == "swap_2gpu":
                    result["peak_swap_2gpu_cuda1_MiB"] = round(peaks[(label, 1)] / 2**20)
                elif label.startswith("swap_small"):  # the fine-tune, the smaller prior, stock's activations
                    small_model = small_prior_fp8_model if label == "swap_small_fp8" else small_prior_model
                    small = (weights + small_model.model_size() + activations) * 1.05
                    result[f"peak_{label}_over_budget"] = round(peaks[(label, 0)] / small, 3)
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
                        help="comma list of sd15,sdxl,sd35m (default: cuda sd15,sdxl; cpu sd15-small, or sd15-tiny)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--variants", help="comma list of variants to run (default: all)")
    parser.add_argument("--lowvram", action="store_true", help="ComfyUI's --lowvram (partial loading)")
    parser.add_argument("--simulate-vram-gb", type=float,
                        help="reserve the rest of the card (ComfyUI's --reserve-vram) so only this much is usable")
    parser.add_argument("--prior-weight-dtype", choices=sorted(FP8),
                        help="add the variant swap_fp8: the prior's weights stored in this dtype (UNETLoader's "
                             "weight_dtype), cast to the compute dtype at use")
    parser.add_argument("--small-prior", choices=["ssd1b", "vega", "sd15-tiny"],
                        help="add the variant swap_small: a smaller model of the fine-tune's latent space as prior "
                             "(ssd1b/vega for sdxl, sd15-tiny for the CPU's sd15-small)")
    parser.add_argument("--compile", action="store_true",
                        help="add the variants stock_compiled and swap_compiled (TorchCompileModel on both models)")
    parser.add_argument("--compile-backend", default="inductor", choices=["inductor", "cudagraphs"],
                        help="TorchCompileModel's backend (default inductor)")
    parser.add_argument("--tag", help="a scenario name written into each result line (tools/bench_budgets.sh)")
    parser.add_argument("--order", choices=["auto", "interleaved", "blocked"], default="auto",
                        help="interleave the variants' timed runs, or run each variant's in a block (auto: "
                             "blocked under --simulate-vram-gb/--lowvram, where not every variant fits at once)")
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
    load_pack()
    nodes = pack_module("nodes").NODE_CLASS_MAPPINGS  # V3 node classes by id (#17)
    if args.device == "cuda":
        plan = {"sd15": (SD15, 512), "sdxl": (SDXL, 1024), "sd35m": (SD35M, 1024)}
    else:
        plan = {"sd15-small": (sd15_small(), 64), "sd15-tiny": (sd15_tiny(), 64)}  # tiny: quick checks (--compile)
    wanted = args.models.split(",") if args.models else [m for m in plan if m not in ("sd35m", "sd15-tiny")]
    small_priors = {"ssd1b": SSD1B, "vega": VEGA, "sd15-tiny": sd15_tiny()}
    results = []
    for name in wanted:
        cfg, size = plan[name]
        blocked = args.order == "blocked" or (args.order == "auto" and bool(args.simulate_vram_gb or args.lowvram))
        r = bench(name, cfg, size, args.steps, args.repeats, args.device, nodes,
                  args.variants.split(",") if args.variants else None, prior_weight_dtype=args.prior_weight_dtype,
                  compile_backend=args.compile_backend if args.compile else None, blocked=blocked,
                  small_prior=(args.small_prior, small_priors[args.small_prior]) if args.small_prior else None)
        if args.simulate_vram_gb:
            r["usable_vram_GB"] = args.simulate_vram_gb
        if args.tag:
            r = {"scenario": args.tag, **r}
        results.append(r)
        print(json.dumps(r), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
