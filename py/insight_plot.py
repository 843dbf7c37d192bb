"""Draw a measured run (py/insight.py) as an image with PIL only (no matplotlib in ComfyUI's venv)."""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

BG, FG, GRID = (255, 255, 255), (30, 30, 30), (225, 225, 225)
DRIFT, OWN, PRIOR = (157, 77, 255), (110, 110, 110), (220, 120, 30)  # violet: the pack's PRIOR colour


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.2e}"


def draw_panel(draw: ImageDraw.ImageDraw, font, box: tuple, xs: list, series: list, y_label: str,
           x_label: str, x_ticks: list) -> None:
    """One plot: a frame, 5 y ticks, the given x ticks, polylines of ``series`` = [(label, colour, ys)]."""
    left, top, right, bottom = box
    finite = [y for _, _, ys in series for y in ys if math.isfinite(y)] or [0.0]
    lo, hi = min(0.0, min(finite)), max(finite)
    hi = hi if hi > lo else lo + 1.0
    x_lo, x_hi = min(xs), max(xs)
    x_span = (x_hi - x_lo) or 1.0

    def px(x: float) -> float:
        return left + (x - x_lo) / x_span * (right - left)

    def py(y: float) -> float:
        return bottom - (y - lo) / (hi - lo) * (bottom - top)

    for i in range(5):
        y = lo + (hi - lo) * i / 4
        draw.line([(left, py(y)), (right, py(y))], fill=GRID)
        draw.text((left - 4, py(y)), _fmt(y), fill=FG, font=font, anchor="rm")
    for x, text in x_ticks:
        draw.line([(px(x), bottom), (px(x), bottom + 4)], fill=FG)
        draw.text((px(x), bottom + 6), text, fill=FG, font=font, anchor="ma")
    draw.rectangle([left, top, right, bottom], outline=FG)
    draw.text((left, top - 4), y_label, fill=FG, font=font, anchor="ld")
    draw.text(((left + right) / 2, bottom + 20), x_label, fill=FG, font=font, anchor="ma")
    legend_x = right
    for label, colour, ys in reversed(series):
        points = [(px(x), py(y)) for x, y in zip(xs, ys) if math.isfinite(y)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for p in points:
            draw.ellipse([p[0] - 2, p[1] - 2, p[0] + 2, p[1] + 2], fill=colour)
        if len(series) > 1:
            w = draw.textlength(label, font=font)
            draw.text((legend_x, top - 4), label, fill=colour, font=font, anchor="rd")
            legend_x -= w + 12


def plot_run(record: dict, width: int = 640, height: int = 480, x_axis: str = "step") -> torch.Tensor:
    """The run's curves as an IMAGE tensor [1, height, width, 3] in 0–1.

    Top: the drift ‖u_ft − u_prior‖/‖u_ft‖; bottom: the guidance magnitudes ‖c − u‖ with each uncond.
    ``x_axis``: "step" (0 … N−1) or "sigma" (descending from left to right, as sampling runs).
    """
    steps = record["steps"]
    image = Image.new("RGB", (width, height), BG)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    if x_axis == "sigma":
        # Sampling goes from high to low sigma: plot −log σ so that it reads left to right (σ spans decades).
        xs = [-math.log(max(s["sigma"], 1e-12)) for s in steps]
        picks = sorted({0, len(steps) // 2, len(steps) - 1})
        ticks = [(xs[i], _fmt(steps[i]["sigma"])) for i in picks]
        x_label = "sigma (noise level, log scale; sampling runs left to right)"
    else:
        xs = [float(s["step"]) for s in steps]
        stride = max(1, math.ceil(len(steps) / 8))
        ticks = [(x, str(int(x))) for x in xs[::stride]]
        x_label = "step"
    title = "Prior Swap insight: where the fine-tune's own uncond and the prior's disagree"
    draw.text((width / 2, 6), title, fill=FG, font=font, anchor="ma")
    left, right = 64, width - 16
    mid = height // 2
    draw_panel(draw, font, (left, 40, right, mid - 30), xs,
           [("drift", DRIFT, [s["rel_diff"] for s in steps])], "||u_ft - u_prior|| / ||u_ft||", x_label, ticks)
    draw_panel(draw, font, (left, mid + 24, right, height - 40), xs,
           [("||c - u_ft|| (stock CFG)", OWN, [s["guid_ft"] for s in steps]),
            ("||c - u_prior|| (prior swap)", PRIOR, [s["guid_prior"] for s in steps])],
           "guidance magnitude", x_label, ticks)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)[None]
