"""Evaluate the toy models through the real ComfyUI on the CPU: premise, prior swap, prior-quality sweep, edits.

    python3 tools/host.py python tools/evaluate_toy_pair.py           # the evidence page's tables and plots
    python3 tools/host.py python tools/evaluate_toy_pair.py --quick   # a smaller look (fewer samples, one γ)

Four measurements, each with bootstrap 95 % intervals over the three training seeds of the fine-tunes and
the samples within them (tests/support/toy_eval.py), on models shipped in py/toy_pair/ (trained by
tools/train_toy_pair.py):

1. **Premise**: on held-out broad data (real shapes never drawn in training), the held-out ε-error of each
   model's ∅ branch (through ComfyUI's ``apply_model``) and the FD of ∅-only samples — is the fine-tune's
   ∅ worse than the base's?
2. **Prior swap on the class fine-tune**: the stock ``KSampler`` with the fine-tune (stock CFG) against the
   same with the pack's ``PriorFromModel`` (base, ∅) → ``PriorSwapCFG`` (prior swap), at several γ, with the
   same noise: condition accuracy (the judge's class = the asked-for class) and FD to real shapes.
3. **Sweep**: priors of increasing ∅ quality — the base's EMA at earlier steps and a separate small model
   (Autoguidance's weaker model) — each as the prior at one γ; gain against stock CFG and the prior's ∅ error.
4. **Edits** (InstructPix2Pix-style): the stock ``DualCFGGuider`` against the pack's
   ``PriorSwapDualCFGGuider`` (prior = base) at γ_T 7.5 / γ_I 1.5 and a grid around it: edit accuracy (the
   judge sees the instructed shape), squared error to the true edit, FD.

Writes ``toy_eval.json``, ``toy_eval.md`` (the tables) and ``toy_eval_*.png`` (the plots) to ``--out``.
A difference is called a gain only when its interval excludes zero.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.comfy_env import ROOT  # noqa: E402
from support.toy_eval import (ClassSampler, EditSampler, Judge, bootstrap, interval_difference,  # noqa: E402
                              interval_mean, toy_and_nodes, uncond_errors, weights)

SEEDS = (0, 1, 2)
SWEEP_PRIORS = ("base_step100", "base_step300", "base_step1000", "base", "small")
EDIT_GRID = ((7.5, 1.5), (5.0, 1.5), (10.0, 1.5), (7.5, 1.0), (7.5, 2.0))


def evaluate(per_class: int = 25, gammas: tuple = (1.5, 3.0, 5.0, 7.5), sweep_gamma: float = 3.0,
             edit_grid: tuple = EDIT_GRID, edits: int = 100, steps: int = 20, seeds: tuple = SEEDS,
             sweep_priors: tuple = SWEEP_PRIORS, weights_dir: Path | None = None, replicates: int = 400,
             log=print) -> dict:
    """Every measurement; returns a JSON-able dict of tables (values with their intervals) and settings."""
    toy, node_classes = toy_and_nodes()
    import torch

    t0 = time.time()
    judge = Judge(toy, weights_dir=weights_dir)
    empty = node_classes["PriorSwapToyCondition"].execute(toy.EMPTY)[0]

    def load(name: str, seed: int = 0):
        return toy.load_toy_model(name, weights(toy, name, seed, weights_dir))

    base = load("base")
    finetunes = [load("finetune", s) for s in seeds]
    edit_models = [load("edit", s) for s in seeds]
    priors = {name: (base if name == "base" else load(name)) for name in sweep_priors}
    prior_of = {name: node_classes["PriorFromModel"].execute(m, empty)[0] for name, m in priors.items()}

    # 1. premise: held-out ∅ error (paired: same images, noise and levels for every model) and ∅ samples
    held_out = judge.real
    errors = {name: uncond_errors(m, toy, held_out) for name, m in priors.items()}
    for s, m in zip(seeds, finetunes):
        errors[f"finetune seed {s}"] = uncond_errors(m, toy, held_out)
    for s, m in zip(seeds, edit_models):
        errors[f"edit seed {s}"] = uncond_errors(m, toy, held_out, concat=True)
    ft_pooled = torch.stack([errors[f"finetune seed {s}"] for s in seeds]).mean(0)
    edit_pooled = torch.stack([errors[f"edit seed {s}"] for s in seeds]).mean(0)
    premise_error = {name: interval_mean(e) for name, e in errors.items()}
    premise_error["finetune (mean of seeds) − base"] = interval_difference(ft_pooled, errors["base"])
    premise_error["edit (mean of seeds) − base"] = interval_difference(edit_pooled, errors["base"])
    log(f"[toy eval] premise: ∅ error base {premise_error['base']['value']:.5f}, fine-tune − base "
        f"{premise_error['finetune (mean of seeds) − base']['value']:+.5f} ({time.time() - t0:.0f}s)")

    sampler = ClassSampler(toy, per_class, steps, seed=0)
    uncond_runs = {"base": [judge.judge(sampler.sample(base, 1.0, conditioned=False))] * len(seeds),
                   "finetune": [judge.judge(sampler.sample(m, 1.0, conditioned=False)) for m in finetunes]}
    premise_fd = bootstrap(uncond_runs, judge.real_features, keys=("fd",), replicates=replicates,
                           pairs=[("finetune", "base")])
    log(f"[toy eval] ∅-only FD base {premise_fd['base']['fd']['value']:.1f}, fine-tune "
        f"{premise_fd['finetune']['fd']['value']:.1f} ({time.time() - t0:.0f}s)")

    # 2. prior swap on the class fine-tune, and 3. the sweep at one γ (its "base" column is part 2's)
    swapped = {name: [node_classes["PriorSwapCFG"].execute(m, prior, 1.0, 0.0, 1.0)[0] for m in finetunes]
               for name, prior in prior_of.items()}

    def runs(models, cfg):
        return [judge.judge(sampler.sample(m, cfg), sampler.labels) for m in models]

    settings = {"no guidance": runs(finetunes, 1.0)}
    for gamma in gammas:
        settings[f"stock CFG γ{gamma:g}"] = runs(finetunes, gamma)
        settings[f"prior swap γ{gamma:g}"] = runs(swapped["base"], gamma)
        log(f"[toy eval] γ {gamma:g} done ({time.time() - t0:.0f}s)")
    if f"stock CFG γ{sweep_gamma:g}" not in settings:
        settings[f"stock CFG γ{sweep_gamma:g}"] = runs(finetunes, sweep_gamma)
    for name in sweep_priors:
        key = f"prior swap γ{sweep_gamma:g}" if name == "base" else f"prior {name} γ{sweep_gamma:g}"
        if key not in settings:
            settings[key] = runs(swapped[name], sweep_gamma)
            log(f"[toy eval] sweep prior {name} done ({time.time() - t0:.0f}s)")
    pairs = [(f"prior swap γ{g:g}", f"stock CFG γ{g:g}") for g in gammas]
    pairs += [(f"prior {n} γ{sweep_gamma:g}", f"stock CFG γ{sweep_gamma:g}") for n in sweep_priors if n != "base"]
    if "base" in sweep_priors:  # each sweep prior against the final base: is a weaker prior better or worse?
        pairs += [(f"prior {n} γ{sweep_gamma:g}", f"prior swap γ{sweep_gamma:g}") for n in sweep_priors if n != "base"]
    classes = bootstrap(settings, judge.real_features, replicates=replicates, pairs=pairs)

    # 4. edits
    edit_sampler = EditSampler(toy, node_classes, edits, steps, seed=0)
    edit_settings = {}
    for text_scale, image_scale in edit_grid:
        tag = f"γ_T {text_scale:g} γ_I {image_scale:g}"
        for method, prior in (("DualCFGGuider", None), ("prior swap", prior_of["base"])):
            edit_settings[f"{method} {tag}"] = [
                judge.judge(edit_sampler.sample(m, prior, text_scale, image_scale), edit_sampler.labels,
                            edit_sampler.target) for m in edit_models]
        log(f"[toy eval] edits {tag} done ({time.time() - t0:.0f}s)")
    edit_pairs = [(f"prior swap γ_T {t:g} γ_I {i:g}", f"DualCFGGuider γ_T {t:g} γ_I {i:g}") for t, i in edit_grid]
    edit_table = bootstrap(edit_settings, judge.real_features, keys=("accuracy", "fd", "error"),
                           replicates=replicates, pairs=edit_pairs)

    return {"premise": {"uncond_error": premise_error, "uncond_fd": premise_fd},
            "classes": classes, "edits": edit_table,
            "settings": {"samples_per_seed": per_class * len(toy.CLASSES), "edits_per_seed": edits, "steps": steps,
                         "sampler": "euler/normal", "seeds": list(seeds), "gammas": list(gammas),
                         "sweep_gamma": sweep_gamma, "sweep_priors": list(sweep_priors),
                         "edit_grid": [list(p) for p in edit_grid], "real_images": judge.real.shape[0],
                         "classifier_accuracy_on_real": judge.accuracy_on_real, "replicates": replicates,
                         "seconds": round(time.time() - t0)}}


# --- tables --------------------------------------------------------------------------------------

def _ci(cell: dict | None, digits: int = 3) -> str:
    if cell is None:
        return "–"
    return f"{cell['value']:.{digits}f} [{cell['low']:.{digits}f}, {cell['high']:.{digits}f}]"


def _gain(cell: dict | None, lower_is_better: bool, digits: int = 3) -> str:
    """A difference with its interval, in bold when the interval says it is a gain."""
    if cell is None:
        return "–"
    text = f"{cell['value']:+.{digits}f} [{cell['low']:+.{digits}f}, {cell['high']:+.{digits}f}]"
    gain = cell["high"] < 0 if lower_is_better else cell["low"] > 0
    loss = cell["low"] > 0 if lower_is_better else cell["high"] < 0
    return f"**{text}**" if gain else (f"{text} (worse)" if loss else text)


def tables(result: dict) -> str:
    """The result as Markdown tables."""
    s, prem = result["settings"], result["premise"]
    err, fd = prem["uncond_error"], prem["uncond_fd"]
    lines = ["### 1. Premise: the ∅ branch on held-out broad data", "",
             "| model | held-out ∅ ε-error ↓ | ∅-only samples FD ↓ |", "|---|---|---|"]
    for name, cell in err.items():
        if "−" in name:
            continue
        fd_cell = fd["base"]["fd"] if name == "base" else None
        lines.append(f"| {name} | {_ci(cell, 5)} | {_ci(fd_cell, 1)} |")
    lines.append(f"| fine-tune (seeds pooled) | – | {_ci(fd['finetune']['fd'], 1)} |")
    lines.append(f"| **fine-tune − base** | {_gain(err['finetune (mean of seeds) − base'], True, 5)} | "
                 f"{_gain(fd['finetune − base']['fd'], True, 1)} |")
    lines.append(f"| **edit − base** | {_gain(err['edit (mean of seeds) − base'], True, 5)} | – |")
    lines += ["", "A negative difference would mean the fine-tune's ∅ is *better* than the base's.", "",
              "### 2. Class fine-tune: stock CFG vs prior swap (prior = base)", "",
              "| γ | accuracy, stock ↑ | accuracy, swap ↑ | Δ accuracy | FD, stock ↓ | FD, swap ↓ | Δ FD |",
              "|---|---|---|---|---|---|---|"]
    c = result["classes"]
    ng = c["no guidance"]
    lines.append(f"| 1 (no guidance) | {_ci(ng['accuracy'])} | – | – | {_ci(ng['fd'], 1)} | – | – |")
    for g in s["gammas"]:
        st, sw, d = c[f"stock CFG γ{g:g}"], c[f"prior swap γ{g:g}"], c[f"prior swap γ{g:g} − stock CFG γ{g:g}"]
        lines.append(f"| {g:g} | {_ci(st['accuracy'])} | {_ci(sw['accuracy'])} | {_gain(d['accuracy'], False)} | "
                     f"{_ci(st['fd'], 1)} | {_ci(sw['fd'], 1)} | {_gain(d['fd'], True, 1)} |")
    g = s["sweep_gamma"]
    lines += ["", f"### 3. Sweep: priors of increasing ∅ quality, each as the prior at γ {g:g}", "",
              "| prior | its held-out ∅ ε-error ↓ | accuracy ↑ | Δ accuracy vs stock | FD ↓ | Δ FD vs stock |",
              "|---|---|---|---|---|---|"]
    lines.append(f"| the fine-tune itself (stock CFG) | {_ci(err['finetune seed 0'], 5)} (seed 0) | "
                 f"{_ci(c[f'stock CFG γ{g:g}']['accuracy'])} | 0 | {_ci(c[f'stock CFG γ{g:g}']['fd'], 1)} | 0 |")
    for name in sorted(s["sweep_priors"], key=lambda n: -err[n]["value"]):
        key = f"prior swap γ{g:g}" if name == "base" else f"prior {name} γ{g:g}"
        d = c[f"{key} − stock CFG γ{g:g}"]
        lines.append(f"| {name} | {_ci(err[name], 5)} | {_ci(c[key]['accuracy'])} | {_gain(d['accuracy'], False)} | "
                     f"{_ci(c[key]['fd'], 1)} | {_gain(d['fd'], True, 1)} |")
    if "base" in s["sweep_priors"]:
        lines += ["", f"Each prior against the final base as prior (same γ {g:g}, same noise):", "",
                  "| prior | Δ accuracy vs the base as prior | Δ FD vs the base as prior |", "|---|---|---|"]
        for name in sorted(s["sweep_priors"], key=lambda n: -err[n]["value"]):
            if name != "base":
                d = c[f"prior {name} γ{g:g} − prior swap γ{g:g}"]
                lines.append(f"| {name} | {_gain(d['accuracy'], False)} | {_gain(d['fd'], True, 1)} |")
    lines += ["", "### 4. Edits: DualCFGGuider vs PriorSwapDualCFGGuider (prior = base)", "",
              "| γ_T, γ_I | edit accuracy, stock ↑ | swap ↑ | Δ | error to the true edit, stock ↓ | swap ↓ | Δ | "
              "FD, stock ↓ | swap ↓ | Δ |", "|---|---|---|---|---|---|---|---|---|---|"]
    e = result["edits"]
    for t, i in s["edit_grid"]:
        tag = f"γ_T {t:g} γ_I {i:g}"
        st, sw, d = e[f"DualCFGGuider {tag}"], e[f"prior swap {tag}"], e[f"prior swap {tag} − DualCFGGuider {tag}"]
        lines.append(f"| {t:g}, {i:g} | {_ci(st['accuracy'])} | {_ci(sw['accuracy'])} | {_gain(d['accuracy'], False)} | "
                     f"{_ci(st['error'], 4)} | {_ci(sw['error'], 4)} | {_gain(d['error'], True, 4)} | "
                     f"{_ci(st['fd'], 1)} | {_ci(sw['fd'], 1)} | {_gain(d['fd'], True, 1)} |")
    lines += ["", f"{s['samples_per_seed']} class samples and {s['edits_per_seed']} edits per training seed "
              f"(seeds {', '.join(map(str, s['seeds']))}, the same noise for every setting), {s['steps']} steps "
              f"{s['sampler']}. Values pool the seeds; [low, high] is a bootstrap 95 % interval "
              f"({s['replicates']} replicates resampling seeds, then samples within them). **Bold**: the interval "
              f"excludes zero in the better direction; *(worse)*: in the worse one. FD on the judge's 64-d features "
              f"against {s['real_images']} held-out real shapes (judge accuracy on them "
              f"{s['classifier_accuracy_on_real']:.3f}). {s['seconds']} s."]
    return "\n".join(lines)


# --- plots ---------------------------------------------------------------------------------------

def _panel(draw, font, box, xs, series, y_label, x_label, ticks):
    """Points with 95 % interval bars and lines: series = [(label, colour, [cell])], cell = value/low/high."""
    left, top, right, bottom = box
    values = [v for _, _, cells in series for cell in cells for v in (cell["low"], cell["high"], cell["value"])]
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.08 or 1.0
    lo, hi = lo - pad, hi + pad
    x_lo, x_hi = min(xs), max(xs)
    span = (x_hi - x_lo) or 1.0

    def px(x):
        return left + 12 + (x - x_lo) / span * (right - left - 24)

    def py(y):
        return bottom - (y - lo) / (hi - lo) * (bottom - top)

    for k in range(5):
        y = lo + (hi - lo) * k / 4
        draw.line([(left, py(y)), (right, py(y))], fill=(60, 60, 60))
        draw.text((left - 4, py(y)), f"{y:.3g}", fill=(220, 220, 220), font=font, anchor="rm")
    for x, text in ticks:
        draw.text((px(x), bottom + 6), text, fill=(220, 220, 220), font=font, anchor="ma")
    draw.rectangle([left, top, right, bottom], outline=(220, 220, 220))
    draw.text((left, top - 4), y_label, fill=(220, 220, 220), font=font, anchor="ld")
    draw.text(((left + right) / 2, bottom + 20), x_label, fill=(220, 220, 220), font=font, anchor="ma")
    legend_x = right
    for n, (label, colour, cells) in enumerate(series):
        shift = (n - (len(series) - 1) / 2) * 4
        points = [(px(x) + shift, py(c["value"])) for x, c in zip(xs, cells)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for (x, _), c in zip(points, cells):
            draw.line([(x, py(c["low"])), (x, py(c["high"]))], fill=colour, width=1)
            draw.ellipse([x - 3, py(c["value"]) - 3, x + 3, py(c["value"]) + 3], fill=colour)
        draw.text((legend_x, top - 4), label, fill=colour, font=font, anchor="rd")
        legend_x -= draw.textlength(label, font=font) + 12


def plots(result: dict, out: Path) -> list[Path]:
    """Three PNGs: γ sweep of the class pair, gain against the prior's ∅ error, edits over the grid.
    (Labels in ASCII: PIL's default font has no Greek letters.)"""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    stock, swap = (230, 140, 60), (80, 170, 240)
    s, c, e = result["settings"], result["classes"], result["edits"]
    paths = []

    def figure(name: str, title: str, panels: list) -> None:
        image = Image.new("RGB", (760, 260 * len(panels) + 40), (24, 24, 24))
        draw = ImageDraw.Draw(image)
        draw.text((380, 8), title, fill=(230, 230, 230), font=font, anchor="ma")
        for k, (xs, series, y_label, x_label, ticks) in enumerate(panels):
            top = 50 + 260 * k
            _panel(draw, font, (70, top, 740, top + 190), xs, series, y_label, x_label, ticks)
        image.save(out / name)
        paths.append(out / name)

    gammas = s["gammas"]
    ticks = [(g, f"{g:g}") for g in gammas]
    figure("toy_eval_classes.png", "Class fine-tune through ComfyUI: stock CFG vs prior swap (95 % intervals)",
           [(gammas, [("stock CFG", stock, [c[f"stock CFG γ{g:g}"][k] for g in gammas]),
                      ("prior swap", swap, [c[f"prior swap γ{g:g}"][k] for g in gammas])],
             label, "guidance scale (KSampler cfg)", ticks)
            for k, label in (("accuracy", "condition accuracy (higher is better)"),
                             ("fd", "FD to real shapes (lower is better)"))])
    g = s["sweep_gamma"]
    err = result["premise"]["uncond_error"]
    names = sorted(s["sweep_priors"], key=lambda n: -err[n]["value"])  # worst prior left, best right
    xs = list(range(len(names)))
    keys = [f"prior swap γ{g:g}" if n == "base" else f"prior {n} γ{g:g}" for n in names]
    ticks = [(x, f"{n} ({err[n]['value']:.4f})") for x, n in zip(xs, names)]
    figure("toy_eval_sweep.png", f"Gain over stock CFG at cfg {g:g}, priors ordered by their held-out error",
           [(xs, [("prior swap minus stock CFG", swap, [c[f"{k} − stock CFG γ{g:g}"][key] for k in keys])],
             label, "prior (its held-out eps-error of the empty condition; right: better)", ticks)
            for key, label in (("accuracy", "change in condition accuracy (above 0: gain)"),
                               ("fd", "change in FD (below 0: gain)"))])
    grid = s["edit_grid"]
    xs = list(range(len(grid)))
    ticks = [(k, f"{t:g} / {i:g}") for k, (t, i) in enumerate(grid)]
    figure("toy_eval_edits.png", "Edits: DualCFGGuider vs PriorSwapDualCFGGuider (95 % intervals)",
           [(xs, [("DualCFGGuider", stock, [e[f"DualCFGGuider γ_T {t:g} γ_I {i:g}"][k] for t, i in grid]),
                  ("prior swap", swap, [e[f"prior swap γ_T {t:g} γ_I {i:g}"][k] for t, i in grid])],
             label, "cfg_conds / cfg_cond2_negative (text / image guidance)", ticks)
            for k, label in (("accuracy", "edit accuracy (higher is better)"),
                             ("error", "squared error to the true edit (lower is better)"),
                             ("fd", "FD to real shapes (lower is better)"))])
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # The defaults keep a CPU run of an idle 2-core machine under 15 minutes; more samples narrow the intervals.
    parser.add_argument("--per-class", type=int, default=25, help="class samples per class and training seed")
    parser.add_argument("--edits", type=int, default=100, help="edits per training seed")
    parser.add_argument("--gammas", default="1.5,3,5,7.5")
    parser.add_argument("--sweep-gamma", type=float, default=3.0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--replicates", type=int, default=400)
    parser.add_argument("--sweep-priors", default=",".join(SWEEP_PRIORS),
                        help="the sweep's priors: base, base_stepN (the base's checkpoints), small")
    parser.add_argument("--weights", type=Path, help="a folder of trained toy models (default: the shipped ones)")
    parser.add_argument("--quick", action="store_true", help="5 per class, 20 edits, γ 3 only, one edit setting")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "toy_eval")
    args = parser.parse_args()

    kwargs = {}
    if args.quick:
        args.per_class, args.edits, args.gammas, args.replicates = 5, 20, "3", 100
        kwargs["edit_grid"] = ((7.5, 1.5),)
    result = evaluate(args.per_class, tuple(float(g) for g in args.gammas.split(",")), args.sweep_gamma,
                      edits=args.edits, steps=args.steps,
                      sweep_priors=tuple(args.sweep_priors.split(",")), weights_dir=args.weights, replicates=args.replicates,
                      **kwargs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "toy_eval.json").write_text(json.dumps(result, indent=1, allow_nan=False,
                                                       default=lambda o: None if isinstance(o, float) and
                                                       not math.isfinite(o) else o))
    (args.out / "toy_eval.md").write_text(tables(result) + "\n")
    plots(result, args.out)
    print(tables(result))
    print(f"[toy eval] {result['settings']['seconds']}s; wrote {args.out}/toy_eval.json, .md and toy_eval_*.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
