"""What storing the prior's weights in fp8 costs in quality, on the toy pair (issue #20 item 2).

    python3 tools/host.py python tools/evaluate_fp8_prior.py                 # CPU, a few minutes
    python3 tools/host.py python tools/evaluate_fp8_prior.py --gammas 3 --dtypes fp16,fp8_e4m3fn

The class evaluation of ``tools/evaluate_toy_pair.py`` (its samplers, judge and bootstrap: tests/support/toy_eval.py;
the stock KSampler, euler/normal, the three training seeds of the class fine-tune), with the base prior loaded as
ComfyUI's ``UNETLoader`` loads a model with a ``weight_dtype``: stored in that dtype, cast to the compute dtype at
use. ``fp16`` is the prior as shipped (on the CPU computed in fp32, as ComfyUI's manual cast does there). Every
setting samples the same noise and classes, so the settings are paired: the interval of a difference resamples
the seeds, then the samples within them, with the same indices for both settings.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the harness: tests/support

from support.comfy_env import ROOT  # noqa: E402

SEEDS = (0, 1, 2)


def evaluate(per_class: int, gammas: list[float], weight_dtypes: list[str], steps: int, replicates: int,
             log=print) -> dict:
    """Stock CFG and the prior swap with the base prior stored in each of ``weight_dtypes``, per γ."""
    from support.toy_eval import ClassSampler, Judge, bootstrap, toy_and_nodes, weights

    toy, node_classes = toy_and_nodes()
    import torch

    t0 = time.time()
    judge = Judge(toy)
    sampler = ClassSampler(toy, per_class, steps, seed=0)
    empty = node_classes["PriorSwapToyCondition"].execute(toy.EMPTY)[0]
    finetunes = [toy.load_toy_model("finetune", weights(toy, "finetune", s)) for s in SEEDS]
    dtypes = {"fp16": torch.float16, "fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}
    stored, settings, images, pairs = {}, {}, {}, []
    for gamma in gammas:
        stock = f"stock CFG γ{gamma:g}"
        settings[stock] = [judge.judge(sampler.sample(m, gamma), sampler.labels) for m in finetunes]
    for name in weight_dtypes:
        base = toy.load_toy_model("base", weight_dtype=dtypes[name])
        stored[name] = sorted({str(p.dtype) for p in base.model.diffusion_model.parameters()})
        prior = node_classes["PriorFromModel"].execute(base, empty)[0]
        swapped = [node_classes["PriorSwapCFG"].execute(m, prior, 1.0, 0.0, 1.0)[0] for m in finetunes]
        for gamma in gammas:
            key = f"prior {name} γ{gamma:g}"
            samples = [sampler.sample(m, gamma) for m in swapped]
            images[(name, gamma)] = torch.cat(samples).float().clamp(-1, 1)
            settings[key] = [judge.judge(s, sampler.labels) for s in samples]
            pairs.append((key, f"stock CFG γ{gamma:g}"))
            if name != "fp16" and "fp16" in weight_dtypes:
                pairs.append((key, f"prior fp16 γ{gamma:g}"))
            log(f"[fp8 prior] {key} done ({time.time() - t0:.0f}s)")
    table = bootstrap(settings, judge.real_features, replicates=replicates, pairs=pairs)
    image_diff = {}  # mean relative difference of each image to the fp16 prior's (same noise and class)
    for (name, gamma), value in images.items():
        reference = images.get(("fp16", gamma))
        if name != "fp16" and reference is not None:
            image_diff[f"prior {name} γ{gamma:g}"] = float((value - reference).abs().mean() / reference.abs().mean())
    return {"table": table, "image_rel_diff_vs_fp16": image_diff, "stored_dtypes": stored,
            "settings": {"samples_per_seed": per_class * len(toy.CLASSES), "seeds": list(SEEDS), "steps": steps,
                         "gammas": gammas, "sampler": "euler/normal", "replicates": replicates,
                         "seconds": round(time.time() - t0)}}


def markdown(result: dict) -> str:
    """The docs' table: each prior storage's accuracy and FD, and its difference to the fp16 prior's."""
    table = result["table"]

    def cell(name: str, key: str, digits: int) -> str:
        c = table.get(name, {}).get(key)
        return "–" if c is None else f"{c['value']:+.{digits}f} ({c['low']:+.{digits}f} to {c['high']:+.{digits}f})"

    def plain(name: str, key: str, digits: int) -> str:
        c = table[name][key]
        return f"{c['value']:.{digits}f} ({c['low']:.{digits}f}–{c['high']:.{digits}f})"

    lines = ["| setting | γ | accuracy ↑ (95 % interval) | FD ↓ (95 % interval) | accuracy vs fp16 prior | "
             "FD vs fp16 prior | image vs fp16 prior (mean rel.) |", "|---|---|---|---|---|---|---|"]
    for gamma in result["settings"]["gammas"]:
        for name in [n for n in table if n.endswith(f"γ{gamma:g}") and " − " not in n]:
            label = name.rsplit(" γ", 1)[0].replace("prior ", "prior swap, base prior stored in ")
            diff = result["image_rel_diff_vs_fp16"].get(name)
            lines.append(f"| {label} | {gamma:g} | {plain(name, 'accuracy', 3)} | {plain(name, 'fd', 1)} | "
                         f"{cell(f'{name} − prior fp16 γ{gamma:g}', 'accuracy', 3)} | "
                         f"{cell(f'{name} − prior fp16 γ{gamma:g}', 'fd', 1)} | "
                         f"{'–' if diff is None else f'{diff:.3f}'} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=25, help="samples per class and training seed")
    parser.add_argument("--gammas", default="3,7.5")
    parser.add_argument("--dtypes", default="fp16,fp8_e4m3fn,fp8_e5m2", help="storage of the base prior's weights")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--replicates", type=int, default=400)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "fp8_prior_eval.json")
    args = parser.parse_args()
    result = evaluate(args.per_class, [float(g) for g in args.gammas.split(",")], args.dtypes.split(","), args.steps,
                      args.replicates)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(markdown(result))
    print(f"[fp8 prior] {result['settings']['seconds']} s; written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
