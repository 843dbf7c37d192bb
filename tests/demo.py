"""The main job: run a workflow of workflows/ on the real ComfyUI and write a side-by-side PNG.

    python3 tests/host.py demo [--workflow workflows/prior_swap_side_by_side_sd15.json] [--out out/]

The workflow is a UI-format file as the frontend saves it (converted with the server's /object_info, the way
the frontend's graphToPrompt does) or an API-format prompt. It names the checkpoints users have (an SD1.5 fine-tune and v1-5-pruned-emaonly as prior).
Here no weights can be downloaded, so the embedded default substitutes small stand-ins built with
ComfyUI's own model classes and random weights: the PNG shows what the graph computes (stock CFG on
the left, prior swap on the right), not a picture worth looking at. Point --models at a folder with
the real checkpoints to run it for real.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support.comfy_env import ROOT, import_comfy  # noqa: E402

# Real checkpoint names in the shared workflows → the stand-in that takes their place here.
STAND_INS = {
    "dreamshaper_8.safetensors": "sd15_finetune",
    "v1-5-pruned-emaonly.safetensors": "sd15_base",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workflow", type=Path, default=ROOT / "workflows" / "prior_swap_side_by_side_sd15.json")
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
    if args.models:
        for name in STAND_INS:
            (server.checkpoints / name).symlink_to(args.models.resolve() / name)
        print(f"[demo] using your checkpoints from {args.models}")
    else:
        cache = ROOT / ".host" / "cache" / f"checkpoints-{checkpoints.cache_key()}"
        made = checkpoints.write_checkpoints(cache, sorted(set(STAND_INS.values())))
        for name, stand_in in STAND_INS.items():
            (server.checkpoints / name).symlink_to(made[stand_in])
        print("[demo] NOTE: no model weights can be downloaded here; the checkpoints named by the workflow are "
              "small random-weight stand-ins built with ComfyUI's own classes (SD1.5-detected UNet, CLIP-L, VAE). "
              "The image shows the graph's computation, not art.")
    size = args.size or (None if args.models else 256)
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
    target = args.out / "prior_swap_side_by_side.png"
    shutil.copy(images[0], target)
    print(f"[demo] ran {args.workflow.relative_to(ROOT)} on the real ComfyUI in {time.time() - t0:.0f}s")
    print(f"[demo] wrote {target} (left: stock CFG, right: prior swap, same seed)")
    shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
