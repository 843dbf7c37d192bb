"""Drive the real ComfyUI frontend, served by the test host, in headless Debian Chromium with playwright.

Two frontends: the one the host ComfyUI bundles (``comfyui-frontend-package`` in its venv, 1.32.9 for
0.3.75) and the newest one, installed by ``tools/host.py install`` into ``.host/frontends/<version>`` (a
folder of its own, so the host's bundled one stays as it is) and served with ``--front-end-root``.
``PRIOR_SWAP_FRONTEND`` picks the one the test session's server serves: ``bundled`` (default) or
``newest``; ``.ci/run`` runs the browser tests once with each.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
NEWEST_FRONTEND = "1.58.1"  # comfyui-frontend-package version tools/host.py installs beside the bundled one
FRONTENDS_DIR = ROOT / ".host" / "frontends"

CHROMIUM = os.environ.get("PRIOR_SWAP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PACK_MODULE = "comfyui-prior-swap"  # the pack's folder name in custom_nodes: its templates' route
EXTENSION = "PriorSwapCFG.PriorType"
PACK_SCRIPTS = f"/extensions/{PACK_MODULE}/"  # where the pack's scripts are served: a stack naming it is ours


def frontend_choice() -> str:
    choice = os.environ.get("PRIOR_SWAP_FRONTEND", "bundled").strip() or "bundled"
    if choice not in ("bundled", "newest"):
        raise ValueError(f"PRIOR_SWAP_FRONTEND={choice!r}: use 'bundled' or 'newest'")
    return choice


def newest_frontend_root() -> Path:
    return FRONTENDS_DIR / NEWEST_FRONTEND / "comfyui_frontend_package" / "static"


def frontend_args() -> list[str]:
    """ComfyUI arguments that serve the chosen frontend (none for the bundled one)."""
    if frontend_choice() == "bundled":
        return []
    root = newest_frontend_root()
    if not (root / "index.html").exists():
        raise RuntimeError(f"{root} missing: run python3 tools/host.py install")
    return ["--front-end-root", str(root)]


def frontend_version() -> str:
    """Version of the frontend the chosen server serves."""
    if frontend_choice() == "newest":
        return NEWEST_FRONTEND
    from importlib.metadata import version

    return version("comfyui_frontend_package")


def settings() -> dict:
    """Frontend settings for a test user: no first-run template browser, no update or survey pop-ups."""
    return {
        "Comfy.TutorialCompleted": True,
        "Comfy.InstalledVersion": frontend_version(),
        "Comfy.Release.Version": frontend_version(),
        "Comfy.Release.Status": "what's new seen",
        "Comfy.Minimap.Visible": False,
    }


# Browser-local state of the frontend: the "Nodes 2.0" banner counts as dismissed. Every console warning and
# error is also reported with its JavaScript stack (to __priorSwapConsole, exposed by Frontend), so a warning
# can be told to come from the pack's scripts, e.g. a deprecation notice raised inside a litegraph getter.
INIT_SCRIPT = """
try { localStorage.setItem('vueNodesBannerDismissed', 'true'); } catch (e) {}
// Keep every resource timing entry (the default buffer of 250 fills before the extensions load).
try { performance.setResourceTimingBufferSize(100000); } catch (e) {}
for (const level of ['warn', 'error']) {
  const original = console[level];
  console[level] = function (...args) {
    try {
      const text = args.map(a => (a instanceof Error ? a.message : typeof a === 'string' ? a : String(a))).join(' ');
      window.__priorSwapConsole?.(level, text, new Error().stack || '');
    } catch (e) {}
    return original.apply(this, args);
  };
}
"""


def write_user_settings(base: Path, extra: dict | None = None) -> None:
    """Settings of the frontend's default user, in the server's base directory (read when a page loads)."""
    folder = base / "user" / "default"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "comfy.settings.json"
    values = json.loads(path.read_text()) if path.exists() else {}
    values.update(settings())
    values.update(extra or {})
    path.write_text(json.dumps(values, indent=2))


class Frontend:
    """One browser page with the ComfyUI frontend of ``server`` loaded."""

    def __init__(self, page, server):
        self.page, self.server = page, server
        self.console: list[str] = []  # console errors and page errors, for assertions
        self.traced: list[dict] = []  # console warnings and errors with the stack that raised them
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        page.expose_function("__priorSwapConsole", lambda level, text, stack: self.traced.append(
            {"level": level, "text": text, "stack": stack}))
        page.add_init_script(INIT_SCRIPT)

    def pack_warnings(self) -> list[dict]:
        """Console warnings and errors raised from the pack's scripts (their stack runs through them)."""
        return [t for t in self.traced if PACK_SCRIPTS in t["stack"]]

    @property
    def version(self) -> str:
        return self.eval("() => window.__COMFYUI_FRONTEND_VERSION__ ?? null")

    def set_vue_nodes(self, enabled: bool) -> None:
        """Switch the "Nodes 2.0" (Vue) renderer on or off, as the settings dialog does."""
        self.eval("(on) => window.app.extensionManager.setting.set('Comfy.VueNodes.Enabled', on)", enabled)
        self.settle()

    def open(self, timeout_ms: int = 120_000) -> "Frontend":
        self.page.goto(self.server.url)
        self.page.wait_for_function(
            f"() => window.app?.graph && window.app.canvas && window.comfyAPI?.api?.api && "
            f"window.app.extensions?.some(e => e.name === {json.dumps(EXTENSION)})", timeout=timeout_ms)
        return self

    def eval(self, script: str, arg: Any = None) -> Any:
        return self.page.evaluate(script, arg)

    def templates(self) -> dict:
        """The custom-node templates as the frontend's template browser fetches them."""
        return self.eval("() => window.comfyAPI.api.api.getWorkflowTemplates()")

    def load_template(self, name: str, module: str = PACK_MODULE) -> None:
        """Fetch a pack template from the server and load it, as the template browser does."""
        self.eval("""async ([module, name]) => {
            const api = window.comfyAPI.api.api;
            const res = await fetch(api.apiURL(`/workflow_templates/${module}/${name}.json`));
            if (!res.ok) throw new Error(`template ${name}: HTTP ${res.status}`);
            await window.app.loadGraphData(await res.json(), true, true, name, {openSource: 'template'});
        }""", [module, name])
        self.settle()

    def load(self, workflow: dict) -> None:
        self.eval("async (wf) => { await window.app.loadGraphData(wf, true, true, 'test'); }", workflow)
        self.settle()

    def settle(self) -> None:
        """Let the canvas draw (DOM widgets are positioned on draw)."""
        self.eval("() => new Promise(r => { window.app.canvas.setDirty(true, true); "
                  "requestAnimationFrame(() => requestAnimationFrame(r)); })")

    def graph_to_prompt(self) -> dict:
        """``app.graphToPrompt()``: {'output': API prompt, 'workflow': the workflow as the frontend saves it}."""
        return self.eval("async () => { const p = await window.app.graphToPrompt(); "
                         "return JSON.parse(JSON.stringify({output: p.output, workflow: p.workflow})); }")

    def node_id(self, comfy_class: str) -> int:
        return self.eval("(c) => window.app.graph.nodes.find(n => n.comfyClass === c)?.id ?? null", comfy_class)

    def set_widget(self, node_id: int, name: str, value: Any) -> None:
        """Set a widget as the canvas does on user input: value, then the widget's callback, then redraw."""
        self.eval("""([id, name, value]) => {
            const node = window.app.graph.getNodeById(id);
            const w = node.widgets.find(w => w.name === name);
            if (!w) throw new Error(`no widget ${name}`);
            const old = w.value;
            w.value = value;
            w.callback?.(w.value, window.app.canvas, node, [0, 0], undefined);
            node.onWidgetChanged?.(name, w.value, old, w);
            node.graph?.setDirtyCanvas(true, true);
        }""", [node_id, name, value])
        self.settle()

    def overlaps(self) -> list:
        """Pairs of nodes whose boxes (title bar included) overlap, as the canvas lays them out."""
        return self.eval("""() => {
            const boxes = window.app.graph.nodes.map(n => [n.id, n.type, n.boundingRect.slice()]);
            const out = [];
            for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
                const [a, b] = [boxes[i][2], boxes[j][2]];
                if (a[0] < b[0] + b[2] && b[0] < a[0] + a[2] && a[1] < b[1] + b[3] && b[1] < a[1] + a[3])
                    out.push([boxes[i][0], boxes[i][1], boxes[j][0], boxes[j][1]]);
            }
            return out;
        }""")

    def focus(self, node_ids: list[int], scale: float = 1.0) -> None:
        """Centre the canvas on ``node_ids`` at ``scale``."""
        self.eval("""([ids, scale]) => {
            const canvas = window.app.canvas, nodes = ids.map(id => window.app.graph.getNodeById(id));
            const x0 = Math.min(...nodes.map(n => n.boundingRect[0])), y0 = Math.min(...nodes.map(n => n.boundingRect[1]));
            const x1 = Math.max(...nodes.map(n => n.boundingRect[0] + n.boundingRect[2]));
            const y1 = Math.max(...nodes.map(n => n.boundingRect[1] + n.boundingRect[3]));
            const [w, h] = [canvas.canvas.width / devicePixelRatio, canvas.canvas.height / devicePixelRatio];
            canvas.ds.scale = scale;
            canvas.ds.offset = [w / (2 * scale) - (x0 + x1) / 2, h / (2 * scale) - (y0 + y1) / 2];
            canvas.setDirty(true, true);
        }""", [node_ids, scale])
        self.settle()

    def widget_values(self, node_id: int) -> dict:
        return self.eval("(id) => Object.fromEntries(window.app.graph.getNodeById(id).widgets"
                         ".filter(w => w.name).map(w => [w.name, w.value]))", node_id)

    def load_sd15_ksampler(self, steps: int, seed: int) -> dict[str, int]:
        """The `prior_swap_sd15_ksampler` template on the test server's stand-ins at 64 px: node ids by class."""
        self.load_template("prior_swap_sd15_ksampler")
        ids = {kind: self.node_id(kind) for kind in ("CheckpointLoaderSimple", "PriorCheckpointLoader",
                                                      "EmptyLatentImage", "KSampler", "SaveImage", "PriorSwapCFG")}
        self.set_widget(ids["CheckpointLoaderSimple"], "ckpt_name", "sd15_finetune.safetensors")
        self.set_widget(ids["PriorCheckpointLoader"], "ckpt_name", "sd15_base.safetensors")
        self.set_widget(ids["EmptyLatentImage"], "width", 64)
        self.set_widget(ids["EmptyLatentImage"], "height", 64)
        self.set_widget(ids["KSampler"], "steps", steps)
        self.set_widget(ids["KSampler"], "seed", seed)
        return ids

    def reload_graph(self) -> dict:
        """Save the workflow as the frontend does, reload the page and load the saved JSON: returns it."""
        saved = self.graph_to_prompt()["workflow"]
        self.page.reload()
        self.open()
        self.load(saved)
        return saved


def launch(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


ARTIFACTS_ROOT = ROOT / "out" / "browser"


def artifacts() -> Path:
    """Screenshots of this session's frontend: out/browser/<bundled|newest>/ (ignored by git)."""
    folder = ARTIFACTS_ROOT / frontend_choice()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def require_chromium() -> None:
    """Skip without Debian's Chromium, or fail where PRIOR_SWAP_REQUIRE_BROWSER is set (CI)."""
    import pytest

    if Path(CHROMIUM).exists():
        return
    message = f"{CHROMIUM} not found: apt-get install -y chromium (.ci/run does)"
    if os.environ.get("PRIOR_SWAP_REQUIRE_BROWSER"):
        pytest.fail(message)
    pytest.skip(message)


def open_frontend(comfy, settings: dict | None = None):
    """Generator for a pytest fixture: the real frontend of ``comfy`` in headless Chromium, closed after."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    write_user_settings(comfy.base, settings)
    artifacts()
    with sync_playwright() as p:
        chromium = launch(p)
        page = chromium.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(60_000)
        try:
            yield Frontend(page, comfy).open()
        finally:
            chromium.close()
