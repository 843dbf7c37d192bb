"""Evaluate the toy pair through the real ComfyUI: stock CFG vs prior swap at several guidance scales.

    python3 tests/host.py python tests/evaluate_toy_pair.py            # CPU, a few minutes
    python3 tests/host.py python tests/evaluate_toy_pair.py --per-class 10 --gammas 3   # quick look

Sampling goes through ComfyUI's stock ``KSampler`` node (euler, normal schedule) in this process, on the
fine-tune as loaded by the pack's ``PriorSwapToyModelLoader``, with the pack's ``PriorFromModel`` and
``PriorSwapCFG`` nodes for the swap (prior = the base, negative ∅). Each setting draws the same noise
(``--seed``) for a class-balanced batch. A classifier trained on real shapes (``tests/train_toy_pair.py``)
judges each batch:

- accuracy: the share of samples classified as the shape they were conditioned on;
- FD: the Fréchet distance between the classifier's penultimate features of the samples and of
  held-out real shapes (2000, drawn with a seed never used in training) — lower is closer to real data.

It also samples ∅ alone (cfg 1) from the base and the fine-tune: the paper's premise is that the
fine-tune's unconditional samples are worse than its base's.
Writes ``toy_eval.json``, ``toy_eval.md`` (the table) and ``toy_eval.png`` (the plot) to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support.comfy_env import ROOT, import_comfy, load_pack, pack_module  # noqa: E402

REAL_SEED = 777_777  # the held-out real images: a seed the training script never uses


def _toy_and_nodes():
    """py/toy_pair.py and the pack's node classes, imported as ComfyUI imports the pack."""
    import_comfy()
    return pack_module("py.toy_pair"), pack_module("nodes").NODE_CLASS_MAPPINGS  # V3 node classes by id (#17)


def uncond_denoising_loss(patcher, toy, real, seed: int = 0) -> float:
    """Held-out ε-prediction error of a model's ∅ branch on real shapes: the diffusion training loss, at
    noise levels drawn uniformly from the model's own schedule (ComfyUI's ``model_sampling``). Lower means
    a better model of the data distribution, the quantity CFG's uncond stands for."""
    import torch

    model = patcher.model
    gen = torch.Generator().manual_seed(seed)
    sigmas = model.model_sampling.sigmas.float()
    sigma = sigmas[torch.randint(0, sigmas.shape[0], (real.shape[0],), generator=gen)]
    noise = torch.randn(real.shape, generator=gen)
    noisy = real + sigma.view(-1, 1, 1, 1) * noise
    context = toy.class_context(torch.full((real.shape[0],), len(toy.CLASSES)))
    dtype = model.get_dtype()
    with torch.no_grad():
        denoised = model.apply_model(noisy.to(dtype), sigma.to(dtype), c_crossattn=context.to(dtype)).float()
    eps = (noisy - denoised) / sigma.view(-1, 1, 1, 1)
    return float((eps - noise).pow(2).mean())


def evaluate(per_class: int = 30, gammas: tuple = (1.5, 3.0, 5.0, 7.5), steps: int = 20, seed: int = 0,
             finetune: Path | None = None, base: Path | None = None, log=print) -> dict:
    """Sample and score every setting; returns ``{"rows": [...], "settings": {...}}``."""
    toy, pack_nodes = _toy_and_nodes()
    import torch
    import nodes  # ComfyUI's own node module: the stock KSampler

    def load(which: str, path: Path | None):
        if path is None:
            return pack_nodes["PriorSwapToyModelLoader"].execute(which)[0]
        return toy.load_toy_model(which, path)

    finetune_model, base_model = load("finetune", finetune), load("base", base)
    empty = pack_nodes["PriorSwapToyCondition"].execute(toy.EMPTY)[0]
    prior = pack_nodes["PriorFromModel"].execute(base_model, empty)[0]
    swapped = pack_nodes["PriorSwapCFG"].execute(finetune_model, prior, 1.0, 0.0, 1.0)[0]

    count = per_class * len(toy.CLASSES)
    labels = torch.arange(count) % len(toy.CLASSES)
    positive = [[toy.class_context(labels), {}]]
    latent = {"samples": torch.zeros(count, 3, toy.IMAGE_SIZE, toy.IMAGE_SIZE)}
    classifier = toy.load_classifier()
    with torch.no_grad():
        real = toy.draw_shapes(torch.arange(2000) % len(toy.CLASSES), torch.Generator().manual_seed(REAL_SEED))
        real_features = classifier.features(real)
        real_accuracy = (classifier(real).argmax(1) == torch.arange(2000) % len(toy.CLASSES)).float().mean().item()

    def run(model, cfg: float, cond: list) -> dict:
        t0 = time.time()
        samples = nodes.KSampler().sample(model, seed, steps, cfg, "euler", "normal", cond, empty, latent)[0]["samples"]
        images = samples.float().clamp(-1, 1)
        with torch.no_grad():
            logits = classifier(images)
            fd = toy.frechet_distance(classifier.features(images), real_features)
        return {"accuracy": (logits.argmax(1) == labels).float().mean().item(), "fd": fd, "seconds": time.time() - t0}

    rows = []
    uncond_loss = {which: uncond_denoising_loss(m, toy, real) for which, m in
                   (("base", base_model), ("finetune", finetune_model))}
    log(f"[toy eval] held-out ε-error of the ∅ branch: base {uncond_loss['base']:.5f}, "
        f"fine-tune {uncond_loss['finetune']:.5f}")

    def add(method: str, gamma: float | None, cond: list, model) -> None:
        row = {"method": method, "gamma": gamma, **run(model, gamma or 1.0, cond)}
        if cond is not positive:
            row["accuracy"] = None  # ∅ samples have no condition to match
        rows.append(row)
        log(f"[toy eval] {method:<22} γ={gamma if gamma is not None else '-':<4} accuracy "
            f"{'-' if row['accuracy'] is None else format(row['accuracy'], '.3f')}  FD {row['fd']:.3f}  "
            f"({row['seconds']:.0f}s)")

    empty_batch = [[toy.class_context(torch.full((count,), len(toy.CLASSES))), {}]]
    add("∅ only, base", None, empty_batch, base_model)
    add("∅ only, fine-tune", None, empty_batch, finetune_model)
    add("no guidance (γ=1)", 1.0, positive, finetune_model)
    for gamma in gammas:
        add("stock CFG", gamma, positive, finetune_model)
        add("prior swap", gamma, positive, swapped)
    return {"rows": rows, "uncond_loss": uncond_loss, "settings": {"per_class": per_class, "samples": count, "steps": steps, "seed": seed,
                                       "sampler": "euler/normal", "real_images": 2000,
                                       "classifier_accuracy_on_real": real_accuracy,
                                       "finetune": str(finetune or "shipped"), "base": str(base or "shipped")}}


def table(result: dict) -> str:
    """The result as a Markdown table."""
    lines = ["| setting | γ | condition accuracy ↑ | FD ↓ |", "|---|---|---|---|"]
    for row in result["rows"]:
        acc = "–" if row["accuracy"] is None else f"{row['accuracy']:.3f}"
        gamma = "–" if row["gamma"] is None else f"{row['gamma']:g}"
        lines.append(f"| {row['method']} | {gamma} | {acc} | {row['fd']:.2f} |")
    s = result["settings"]
    lines.append("")
    lines.append(f"{s['samples']} samples per setting ({s['per_class']} per class, seed {s['seed']}), "
                 f"{s['steps']} steps {s['sampler']}; FD on the classifier's 64-d features against "
                 f"{s['real_images']} held-out real shapes; the classifier is {s['classifier_accuracy_on_real']:.3f} "
                 "accurate on them.")
    if "uncond_loss" in result:
        loss = result["uncond_loss"]
        lines.append("")
        lines.append(f"Held-out ε-prediction error of the ∅ branch on those real shapes (the training loss, noise "
                     f"levels uniform over the schedule; lower is better): base {loss['base']:.5f}, "
                     f"fine-tune {loss['finetune']:.5f}.")
    return "\n".join(lines)


def plot(result: dict, path: Path, width: int = 720, height: int = 520) -> None:
    """FD and accuracy against γ, stock CFG vs prior swap, as a PNG (PIL only)."""
    from PIL import Image, ImageDraw, ImageFont

    import_comfy()
    insight_plot = pack_module("py.insight_plot")
    by = {m: [r for r in result["rows"] if r["method"] == m] for m in ("stock CFG", "prior swap")}
    gammas = [r["gamma"] for r in by["stock CFG"]]
    image = Image.new("RGB", (width, height), insight_plot.BG)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.text((width / 2, 6), "Toy pair through ComfyUI: stock CFG vs prior swap (prior = base)",
              fill=insight_plot.FG, font=font, anchor="ma")
    ticks = [(g, f"{g:g}") for g in gammas]
    mid = height // 2
    for box, key, label in (((64, 40, width - 16, mid - 30), "fd", "FD to real shapes (lower is better)"),
                            ((64, mid + 24, width - 16, height - 40), "accuracy", "condition accuracy")):
        insight_plot.draw_panel(draw, font, box, gammas,
                                [("stock CFG", insight_plot.OWN, [r[key] for r in by["stock CFG"]]),
                                 ("prior swap", insight_plot.PRIOR, [r[key] for r in by["prior swap"]])],
                                label, "guidance scale (KSampler cfg)", ticks)
    image.save(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--gammas", default="1.5,3,5,7.5")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--finetune", type=Path, help="fine-tune weights (default: the shipped toy_finetune)")
    parser.add_argument("--base", type=Path, help="base weights (default: the shipped toy_base)")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "toy_eval")
    args = parser.parse_args()

    t0 = time.time()
    result = evaluate(args.per_class, tuple(float(g) for g in args.gammas.split(",")), args.steps, args.seed,
                      args.finetune, args.base)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "toy_eval.json").write_text(json.dumps(result, indent=1))
    (args.out / "toy_eval.md").write_text(table(result) + "\n")
    plot(result, args.out / "toy_eval.png")
    print(table(result))
    print(f"[toy eval] {time.time() - t0:.0f}s; wrote {args.out}/toy_eval.{{json,md,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
