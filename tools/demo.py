"""The main job: run a workflow of workflows/ on the real ComfyUI and write a PNG of stock CFG vs prior swap.

    python3 tools/host.py demo                                   # the toy pair: out/prior_swap_toy_grid.png
    python3 tools/host.py demo --workflow workflows/prior_swap_side_by_side_sd15.json [--models DIR]

The workflow is a UI-format file as the frontend saves it (converted with the server's /object_info, the way
the frontend's graphToPrompt does) or an API-format prompt.

The default is ``workflows/prior_swap_toy_pair.json``: the toy pair this project trained (shipped with the
pack, nothing to download) samples five shapes × four noises with stock CFG and with prior swap; the demo
lays the two batches out as a labelled grid (rows: shapes, columns: noises; left stock, right swap).

The SD1.5 workflows name the checkpoints users have (an SD1.5 fine-tune and v1-5-pruned-emaonly as prior).
No weights can be downloaded here, so without --models they run on small stand-ins built with ComfyUI's own
model classes and random weights: that PNG shows what the graph computes, not a picture worth looking at.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the harness: tests/support

from support.comfy_env import ROOT, import_comfy  # noqa: E402

# Real checkpoint names in the shared workflows → the stand-in that takes their place here.
STAND_INS = {
    "dreamshaper_8.safetensors": "sd15_finetune",
    "v1-5-pruned-emaonly.safetensors": "sd15_base",
}


def toy_grid(stock: list[Path], swap: list[Path], shapes: list[str]):
    """Lay out two batches (image i has shape i % len(shapes)) as one labelled PIL image."""
    from PIL import Image, ImageDraw, ImageFont

    tiles = [[Image.open(p).convert("RGB") for p in batch] for batch in (stock, swap)]
    tile = tiles[0][0].size[0]
    rows, cols = len(shapes), len(stock) // len(shapes)
    pad, label_w, head_h, gap = 4, 70, 24, 24
    block_w = cols * (tile + pad)
    grid = Image.new("RGB", (label_w + 2 * block_w + gap, head_h + rows * (tile + pad)), "white")
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    for b, title in enumerate(("stock CFG (fine-tune's own uncond)", "prior swap (uncond from the base)")):
        x0 = label_w + b * (block_w + gap)
        draw.text((x0 + block_w / 2, 6), title, fill="black", font=font, anchor="ma")
        for i, image in enumerate(tiles[b]):
            row, col = i % rows, i // rows
            grid.paste(image, (x0 + col * (tile + pad), head_h + row * (tile + pad)))
    for row, shape in enumerate(shapes):
        draw.text((4, head_h + row * (tile + pad) + tile / 2), shape, fill="black", font=font, anchor="lm")
    return grid


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workflow", type=Path, default=ROOT / "workflows" / "prior_swap_toy_pair.json")
    parser.add_argument("--out", type=Path, default=ROOT / "out")
    parser.add_argument("--models", type=Path, help="folder holding the workflow's real checkpoints")
    parser.add_argument("--steps", type=int, help="override the samplers' steps")
    parser.add_argument("--size", type=int, help="override the latent's width and height "
                        "(default with stand-ins: 256, so the CPU run takes about a minute)")
    args = parser.parse_args()

    import_comfy()
    from support import checkpoints
    from support.server import ComfyServer
    from support.ui_to_api import convert

    workflow = json.loads(args.workflow.read_text())
    base = Path(tempfile.mkdtemp(prefix="prior-swap-demo-"))
    server = ComfyServer(base)
    needs_checkpoints = any(name in args.workflow.read_text() for name in STAND_INS)
    if needs_checkpoints and args.models:
        for name in STAND_INS:
            (server.checkpoints / name).symlink_to(args.models.resolve() / name)
        print(f"[demo] using your checkpoints from {args.models}")
    elif needs_checkpoints:
        cache = ROOT / ".host" / "cache" / f"checkpoints-{checkpoints.cache_key()}"
        made = checkpoints.write_checkpoints(cache, sorted(set(STAND_INS.values())))
        for name, stand_in in STAND_INS.items():
            (server.checkpoints / name).symlink_to(made[stand_in])
        print("[demo] NOTE: no model weights can be downloaded here; the checkpoints named by the workflow are "
              "small random-weight stand-ins built with ComfyUI's own classes (SD1.5-detected UNet, CLIP-L, VAE). "
              "The image shows the graph's computation, not art.")
    size = args.size or (None if args.models or not needs_checkpoints else 256)
    t0 = time.time()
    server.start()
    try:
        prompt = convert(workflow, server.get("/object_info")) if "nodes" in workflow else workflow
        for node in prompt.values():
            inputs = node["inputs"]
            if args.steps and "steps" in inputs:
                inputs["steps"] = args.steps
            if size and node["class_type"] == "EmptyLatentImage":
                inputs["width"] = inputs["height"] = size
        entry = server.run(prompt)
    finally:
        server.stop()
    images = server.output_files(entry)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"[demo] ran {args.workflow.name} on the real ComfyUI in {time.time() - t0:.0f}s")
    stock = sorted(p for p in images if p.name.startswith("toy_stock"))
    swap = sorted(p for p in images if p.name.startswith("toy_swap"))
    if stock and swap:
        shapes = next(n["inputs"]["shapes"] for n in prompt.values() if n["class_type"] == "PriorSwapToyCondition"
                      and n["inputs"]["shapes"].strip() != "empty")
        target = args.out / "prior_swap_toy_grid.png"
        toy_grid(stock, swap, [s.strip() for s in shapes.split(",")]).save(target)
        print(f"[demo] wrote {target} (rows: shapes, columns: noises; left: stock CFG, right: prior swap, "
              "same seeds)")
    else:
        target = args.out / "prior_swap_side_by_side.png"
        shutil.copy(images[0], target)
        print(f"[demo] wrote {target} (left: stock CFG, right: prior swap, same seed)")
    shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
