"""Thumbnails of the shared workflows for ComfyUI's template browser: ``workflows/<name>.jpg``.

    python3 tools/host.py python tools/make_thumbnails.py            # every workflow
    python3 tools/host.py python tools/make_thumbnails.py NAME...    # only these (file stems)

The template browser shows ``/api/workflow_templates/<pack>/<name>.jpg`` next to each custom-node template.
This draws each workflow in the real frontend (headless Chromium, as in tests/test_browser.py), with the
pack's extension, fitted to the picture, and saves it as a 640×480 JPEG.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the harness: tests/support

from support.comfy_env import ROOT, import_comfy  # noqa: E402

SIZE = (640, 480)
VIEWPORT = {"width": 1600, "height": 1200}
MARGIN = 30


def main(names: list[str]) -> int:
    import_comfy()
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from support import browser
    from support.server import ComfyServer

    base = Path(tempfile.mkdtemp(prefix="prior-swap-thumbnails-"))
    browser.write_user_settings(base, {"LiteGraph.Canvas.MinFontSizeForLOD": 0, "Comfy.NodeBadge.NodeSourceBadgeMode": "None"})
    server = ComfyServer(base).start()
    try:
        with sync_playwright() as p:
            chromium = browser.launch(p)
            page = chromium.new_page(viewport=VIEWPORT)
            fe = browser.Frontend(page, server).open()
            paths = sorted((ROOT / "workflows").glob("*.json"))
            unknown = set(names) - {p.stem for p in paths}
            if unknown:
                raise SystemExit(f"no such workflow(s): {', '.join(sorted(unknown))}")
            for path in paths:
                if names and path.stem not in names:
                    continue
                fe.load_template(path.stem)
                # Fit every node and group into the area right of the side bar and below the top bar.
                box = fe.eval("""(margin) => {
                    const canvas = window.app.canvas, g = window.app.graph;
                    const rects = [...g.nodes.map(n => n.boundingRect), ...(g.groups ?? []).map(gr => gr._bounding ?? gr.bounding)];
                    const x0 = Math.min(...rects.map(r => r[0])), y0 = Math.min(...rects.map(r => r[1]));
                    const x1 = Math.max(...rects.map(r => r[0] + r[2])), y1 = Math.max(...rects.map(r => r[1] + r[3]));
                    const el = canvas.canvas.getBoundingClientRect();
                    const area = {left: el.left + 70, top: el.top + 110, right: el.right - margin, bottom: el.bottom - margin};
                    const scale = Math.min((area.right - area.left) / (x1 - x0), (area.bottom - area.top) / (y1 - y0));
                    canvas.ds.scale = scale;
                    canvas.ds.offset = [(area.left - el.left) / scale - x0, (area.top - el.top) / scale - y0];
                    canvas.setDirty(true, true);
                    return {x: area.left, y: area.top, width: (x1 - x0) * scale, height: (y1 - y0) * scale};
                }""", MARGIN)
                page.mouse.move(VIEWPORT["width"] // 2, VIEWPORT["height"] - 5)  # on empty canvas: no menu, no tooltip
                fe.settle()
                page.wait_for_timeout(500)  # DOM widgets (notes, text boxes) follow the canvas a frame later
                shot = base / f"{path.stem}.png"
                page.screenshot(path=str(shot), clip=box)
                with Image.open(shot) as im:
                    im = im.convert("RGB")
                    im.thumbnail(SIZE, Image.LANCZOS)
                    canvas = Image.new("RGB", SIZE, im.getpixel((0, 0)))
                    canvas.paste(im, ((SIZE[0] - im.width) // 2, (SIZE[1] - im.height) // 2))
                    target = path.with_suffix(".jpg")
                    canvas.save(target, "JPEG", quality=85, optimize=True)
                print("wrote", target.relative_to(ROOT))
            chromium.close()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
