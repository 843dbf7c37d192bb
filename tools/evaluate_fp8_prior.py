"""What storing the prior's weights in fp8 costs in quality, on the toy pair (issue #20 item 2).

    python3 tools/host.py python tools/evaluate_fp8_prior.py                 # CPU, a few minutes
    python3 tools/host.py python tools/evaluate_fp8_prior.py --gammas 3 --dtypes fp16,fp8_e4m3fn

The evaluation of ``tools/evaluate_toy_pair.py`` (stock KSampler, euler/normal, the shipped classifier's
accuracy and Fréchet distance against 2000 held-out real shapes), with the base prior loaded as ComfyUI's
``UNETLoader`` loads a model with a ``weight_dtype``: ``set_inference_dtype(weight dtype, manual-cast compute
dtype)``, then the weights copied in (rounded to the storage dtype). ``fp16`` is the prior stored in fp16 (on the
CPU computed in fp32, as ComfyUI's manual cast does there); ``default`` is the dtype ComfyUI picks (fp32 on
the CPU). Every prior runs on the same noise, so the samples are paired: the interval given for each fp8 row is
a bootstrap (resampling the samples, the same indices for both rows) of its difference to the fp16 prior's row,
and of the fp16 row itself.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the harness: tests/support

from support.comfy_env import ROOT  # noqa: E402

DTYPES = ("default", "fp16", "fp8_e4m3fn", "fp8_e5m2")


def load_base(toy, weight_dtype: str):
    """The toy base model loaded as UNETLoader loads a diffusion model with ``weight_dtype`` (comfy.sd)."""
    import torch
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.utils

    if weight_dtype == "default":
        return toy.load_toy_model("base")
    dtype = {"fp16": torch.float16, "fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}[weight_dtype]
    state_dict = comfy.utils.load_torch_file(str(toy.weights_path("base")), safe_load=True)
    config = toy.toy_model_config()
    load_device = mm.get_torch_device()
    # comfy.sd.load_diffusion_model_state_dict with model_options {"dtype": dtype}
    config.set_inference_dtype(dtype, mm.unet_manual_cast(dtype, load_device, config.supported_inference_dtypes))
    model = config.get_model(state_dict, "").to(mm.unet_offload_device())
    model.load_model_weights(state_dict, "")
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=mm.unet_offload_device())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--gammas", default="3,7.5")
    parser.add_argument("--dtypes", default="fp16,fp8_e4m3fn,fp8_e5m2")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "fp8_prior_eval.json")
    args = parser.parse_args()

    from support.toy_eval import REAL_SEED, toy_and_nodes

    toy, pack_nodes = toy_and_nodes()
    import torch
    import nodes  # ComfyUI's stock KSampler

    t_start = time.time()
    finetune = pack_nodes["PriorSwapToyModelLoader"].execute("finetune")[0]
    empty = pack_nodes["PriorSwapToyCondition"].execute(toy.EMPTY)[0]
    count = args.per_class * len(toy.CLASSES)
    labels = torch.arange(count) % len(toy.CLASSES)
    positive = [[toy.class_context(labels), {}]]
    latent = {"samples": torch.zeros(count, 3, toy.IMAGE_SIZE, toy.IMAGE_SIZE)}
    classifier = toy.load_classifier()
    with torch.no_grad():
        real = toy.draw_shapes(torch.arange(2000) % len(toy.CLASSES), torch.Generator().manual_seed(REAL_SEED))
        real_features = classifier.features(real)

    def scored(model, gamma: float) -> dict:
        samples = nodes.KSampler().sample(model, args.seed, args.steps, gamma, "euler", "normal", positive, empty,
                                          latent)[0]["samples"]
        images = samples.float().clamp(-1, 1)
        with torch.no_grad():
            return {"correct": (classifier(images).argmax(1) == labels).float(),
                    "features": classifier.features(images), "images": images}

    def fd(features) -> float:
        return toy.frechet_distance(features, real_features)

    gen = torch.Generator().manual_seed(1234)
    boot = [torch.randint(0, count, (count,), generator=gen) for _ in range(args.bootstrap)]

    def interval(values: list) -> list:
        v = torch.tensor(values, dtype=torch.float64)
        return [round(float(v.quantile(0.025)), 4), round(float(v.quantile(0.975)), 4)]

    rows, stored = [], {}
    for weight_dtype in args.dtypes.split(","):
        base = load_base(toy, weight_dtype)
        stored[weight_dtype] = sorted({str(p.dtype) for p in base.model.diffusion_model.parameters()})
        prior = pack_nodes["PriorFromModel"].execute(base, empty)[0]
        swapped = pack_nodes["PriorSwapCFG"].execute(finetune, prior, 1.0, 0.0, 1.0)[0]
        for gamma in (float(g) for g in args.gammas.split(",")):
            t0 = time.time()
            s = scored(swapped, gamma)
            row = {"prior_weight_dtype": weight_dtype, "gamma": gamma, "accuracy": round(float(s["correct"].mean()), 4),
                   "fd": round(fd(s["features"]), 3), "seconds": round(time.time() - t0, 1), "_s": s}
            rows.append(row)
            print(f"[fp8 prior] {weight_dtype:<11} γ={gamma:<4} accuracy {row['accuracy']:.3f}  FD {row['fd']:.2f}  "
                  f"({row['seconds']:.0f}s)", flush=True)
    reference = "fp16" if "fp16" in args.dtypes.split(",") else args.dtypes.split(",")[0]
    for row in rows:
        ref = next(r for r in rows if r["prior_weight_dtype"] == reference and r["gamma"] == row["gamma"])
        s, r = row["_s"], ref["_s"]
        row["accuracy_ci95"] = interval([float(s["correct"][i].mean()) for i in boot])
        row["fd_ci95"] = interval([fd(s["features"][i]) for i in boot])
        if row is not ref:
            row[f"accuracy_minus_{reference}"] = round(row["accuracy"] - ref["accuracy"], 4)
            row[f"accuracy_minus_{reference}_ci95"] = interval(
                [float(s["correct"][i].mean() - r["correct"][i].mean()) for i in boot])
            row[f"fd_minus_{reference}"] = round(row["fd"] - ref["fd"], 3)
            row[f"fd_minus_{reference}_ci95"] = interval([fd(s["features"][i]) - fd(r["features"][i]) for i in boot])
            row[f"image_rel_diff_vs_{reference}"] = round(float(
                (s["images"] - r["images"]).abs().mean() / r["images"].abs().mean()), 4)
            row["same_class_decision_share"] = round(float((s["correct"] == r["correct"]).float().mean()), 4)
    for row in rows:
        row.pop("_s", None)
    result = {"rows": rows, "stored_dtypes": stored,
              "settings": {"per_class": args.per_class, "samples": count, "steps": args.steps, "seed": args.seed,
                           "bootstrap": args.bootstrap, "reference": reference, "sampler": "euler/normal",
                           "seconds": round(time.time() - t_start)}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
