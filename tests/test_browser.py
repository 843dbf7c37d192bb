"""The artist's loop in the real ComfyUI frontend, served by the test host, in headless Debian Chromium.

The frontend is the one the host bundles (1.32.9 for ComfyUI 0.3.75) or, with PRIOR_SWAP_FRONTEND=newest,
the newest one (1.58.1, served with --front-end-root; support/browser.py); .ci/run runs both.

- Every workflow of workflows/ is opened the way the template browser opens it (fetched from
  /api/workflow_templates/<pack>/<name>.json, then ``app.loadGraphData``); the frontend's own
  ``app.graphToPrompt()`` must give exactly what ``support.ui_to_api.convert`` gives, and exporting it
  again must give the same nodes, widget values and links as the file.
- The pack's extension (js/prior_swap.js) draws the schedule on the prior-swap nodes, follows widget
  changes, applies the paper's presets, greys out inputs that do not apply, and all of it survives saving
  and reloading the workflow without changing the node's widget values for the backend.
- Descriptions and tooltips show in the frontend; the Run button queues the workflow and it runs.

- The Vue ("Nodes 2.0") renderer shows the same: the schedule, γ read from the workflow's values at load and
  following the KSampler's cfg, and the inputs that do not apply greyed out.
- No console warning or error comes from the pack's scripts (their stack is checked after every test): in
  particular none of the newest frontend's deprecation notices (output.links, input.link).
- The shared module js/lib/common.js is fetched and evaluated once, though ComfyUI lists it as an extension
  and both scripts import it.

Screenshots are kept in out/browser/<bundled|newest>/ (ignored by git) as test artifacts.

Needs /usr/bin/chromium (``apt-get install -y chromium``; .ci/run installs it). Without it these tests are
skipped, unless PRIOR_SWAP_REQUIRE_BROWSER=1 (set by .ci/run), which makes a missing browser a failure.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from support import browser
from support.comfy_env import ROOT
from support.ui_to_api import convert

WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
PACK_NODES = ["PriorCheckpointLoader", "PriorFromModel", "PriorSwapCFG", "PriorSwapGuider", "PriorSwapDualCFGGuider"]
SCHEDULE = ".prior-swap-schedule"
BACKEND_WIDGETS = {  # what the backend expects in widgets_values, in order
    "PriorSwapCFG": ["prior_weight", "start_percent", "end_percent"],
    "PriorSwapGuider": ["cfg", "prior_weight", "start_percent", "end_percent"],
    "PriorSwapDualCFGGuider": ["cfg_conds", "cfg_cond2_negative", "style", "prior_weight", "start_percent",
                               "end_percent"],
}


# After every test: no console warning or error from the pack's scripts (conftest.py).
pytestmark = pytest.mark.usefixtures("no_warning_from_the_pack")


@pytest.fixture(scope="module")
def frontend(comfy_server):
    yield from browser.open_frontend(comfy_server, {"LiteGraph.Node.TooltipDelay": 100})


def schedule(fe: browser.Frontend, node_id: int) -> dict:
    """What the extension shows on a node: its DOM widget's state, band geometry, status and visibility."""
    return fe.eval("""(id) => {
        const node = window.app.graph.getNodeById(id);
        const w = node.widgets.find(w => w.name === 'prior_swap_schedule');
        const el = w?.element;
        if (!el) return null;
        const band = el.querySelector('.ps-band'), r = el.getBoundingClientRect();
        return {level: el.dataset.level, weight: +el.dataset.weight, start: +el.dataset.start, end: +el.dataset.end,
                band: ['x', 'width', 'height'].map(a => +band.getAttribute(a)),
                status: el.querySelector('.ps-status').textContent,
                gamma: el.querySelector('.ps-gamma').textContent,
                presets: [...el.querySelectorAll('select option')].map(o => o.value).filter(Boolean),
                visible: r.width > 50 && r.height > 30 && getComputedStyle(el).display !== 'none'
                         && el.isConnected,
                disabled: Object.fromEntries(node.widgets.filter(w => w.name?.endsWith('_percent'))
                                             .map(w => [w.name, !!w.disabled]))};
    }""", node_id)


def screenshot(fe: browser.Frontend, name: str) -> Path:
    fe.page.mouse.move(2, 450)  # off the canvas: no hover tooltip in the picture
    fe.page.locator(".node-tooltip").wait_for(state="hidden")
    path = browser.artifacts() / f"{name}.png"
    fe.page.screenshot(path=str(path))
    assert path.stat().st_size > 10_000
    return path


def saved_node(saved: dict, node_id: int) -> dict:
    found = [n for n in saved["nodes"] if str(n["id"]) == str(node_id)]  # 1.58 may give ids as strings
    assert found, f"node {node_id} not in the saved workflow: {[(n['id'], n['type']) for n in saved['nodes']]}"
    return found[0]


def test_frontend_lists_the_pack_templates(frontend):
    templates = frontend.templates()
    assert sorted(templates[browser.PACK_MODULE]) == sorted(p.stem for p in WORKFLOWS)


def test_prior_links_have_their_own_colour(frontend):
    """The colour survives the palette, which re-assigns every type's colour when it loads."""
    frontend.load_template("prior_swap_sd15_ksampler")
    colours = frontend.eval("() => [LGraphCanvas.link_type_colors.PRIOR, "
                            "window.app.canvas.default_connection_color_byType.PRIOR, "
                            "LGraphCanvas.link_type_colors.MODEL]")
    assert colours[0] == colours[1] == "#9d4dff" and colours[2] != colours[0]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_frontend_graph_to_prompt_equals_converter(frontend, object_info, path):
    """The converter used to run the workflows is validated against the frontend's own graphToPrompt."""
    workflow = json.loads(path.read_text())
    frontend.console.clear()
    frontend.load_template(path.stem)
    result = frontend.graph_to_prompt()
    expected, got = convert(workflow, object_info), result["output"]
    # An untitled node's _meta.title (ignored by the server) is its type in 1.32 and the display name from
    # the frontend's own locale tables in 1.58: only titles the workflow sets are compared.
    untitled = {str(n["id"]) for n in workflow["nodes"] if not n.get("title")}
    for node_id in untitled & set(got) & set(expected):
        shown = got[node_id].get("_meta", {}).get("title")
        assert isinstance(shown, str) and shown, (node_id, shown)
        got[node_id]["_meta"] = expected[node_id].get("_meta")
    assert got == expected
    # Saving it again in the frontend gives the same graph: the file is what the frontend saves.
    exported = {n["id"]: n for n in result["workflow"]["nodes"]}
    for node in workflow["nodes"]:
        again = exported[node["id"]]
        # (the newest frontend leaves out an empty widgets_values)
        assert again["type"] == node["type"] and (again.get("widgets_values") or []) == node["widgets_values"], node["id"]
        assert [(i["name"], i["link"]) for i in again.get("inputs", [])] == [(i["name"], i["link"]) for i in node["inputs"]]
        assert [o.get("links") or [] for o in again.get("outputs", [])] == [o["links"] for o in node["outputs"]]
    assert sorted(map(list, result["workflow"]["links"])) == sorted(workflow["links"])
    assert frontend.overlaps() == [], "nodes overlap once the frontend lays them out"
    errors = [c for c in frontend.console if c.startswith("pageerror") or "prior_swap" in c]
    assert not errors, errors


def test_descriptions_and_tooltips_reach_the_frontend(frontend, object_info):
    """Every pack node's description and every input's tooltip are in the frontend's node definitions."""
    defs = frontend.eval("""(names) => Object.fromEntries(names.map(n => {
        const d = LiteGraph.registered_node_types[n]?.nodeData;
        return [n, d && {description: d.description, input: d.input}];
    }))""", PACK_NODES)
    for name in PACK_NODES:
        assert defs[name] and defs[name]["description"], name
        for group in ("required", "optional"):
            for input_name, spec in (defs[name]["input"].get(group) or {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{name}.{input_name} has no tooltip"


def test_hovering_a_widget_shows_its_tooltip(frontend, object_info):
    frontend.load_template("prior_swap_sd15_ksampler")
    node_id = frontend.node_id("PriorSwapCFG")
    frontend.focus([node_id], 1.0)
    x, y = frontend.eval("""(id) => {
        const canvas = window.app.canvas, node = window.app.graph.getNodeById(id);
        const w = node.widgets.find(w => w.name === 'prior_weight');
        const [cx, cy] = canvas.ds.convertOffsetToCanvas([node.pos[0] + 60, node.pos[1] + w.y + 10]);
        const rect = canvas.canvas.getBoundingClientRect();
        return [rect.left + cx, rect.top + cy];
    }""", node_id)
    frontend.page.mouse.move(x - 5, y)
    frontend.page.mouse.move(x, y)
    tooltip = frontend.page.locator(".node-tooltip")
    tooltip.wait_for(state="visible", timeout=10_000)
    expected = object_info["PriorSwapCFG"]["input"]["required"]["prior_weight"][1]["tooltip"]
    assert tooltip.inner_text().strip() == expected


def test_schedule_widget_follows_edits_presets_and_survives_reload(frontend):
    """Load a workflow, change widgets, use a preset: the drawing follows, and save + reload keeps it all."""
    frontend.load_template("prior_swap_sd15_ksampler")
    node_id, sampler_id = frontend.node_id("PriorSwapCFG"), frontend.node_id("KSampler")
    shown = schedule(frontend, node_id)
    assert shown["visible"] and shown["level"] == "ok" and shown["band"] == [0, 200, 22]
    assert shown["gamma"] == "γ 7.5 (KSampler cfg)"  # γ read from the KSampler that the patched MODEL feeds
    assert shown["presets"] == ["eq7", "zero123", "off"]

    frontend.set_widget(node_id, "start_percent", 0.25)
    frontend.set_widget(node_id, "prior_weight", 0.5)
    shown = schedule(frontend, node_id)
    assert (shown["weight"], shown["start"], shown["end"]) == (0.5, 0.25, 1.0)
    assert shown["band"] == [50, 150, 11]  # from 25 % to 100 % of the 200-unit bar, half its height
    assert shown["status"] == "prior gives 50% of the uncond from 25% to 100%"
    frontend.focus([node_id, sampler_id], 1.1)
    screenshot(frontend, "schedule_edited")

    saved = frontend.reload_graph()  # export as the frontend saves, reload the page, open the saved JSON
    # The backend's widgets_values are untouched: exactly its three values, in its order.
    assert saved_node(saved, node_id)["widgets_values"] == [0.5, 0.25, 1.0]
    prompt = frontend.graph_to_prompt()["output"][str(node_id)]["inputs"]
    assert set(prompt) == {"model", "prior", *BACKEND_WIDGETS["PriorSwapCFG"]}
    shown = schedule(frontend, node_id)
    assert shown["visible"] and (shown["weight"], shown["start"], shown["band"]) == (0.5, 0.25, [50, 150, 11])

    # A preset is a real click in the DOM widget's menu: full swap, and γ 5 on the KSampler it feeds.
    frontend.focus([node_id, sampler_id], 1.1)
    frontend.page.locator(f"{SCHEDULE} select").select_option("zero123")
    frontend.settle()
    values = frontend.widget_values(node_id)
    assert (values["prior_weight"], values["start_percent"], values["end_percent"]) == (1, 0, 1)
    assert frontend.widget_values(sampler_id)["cfg"] == 5
    shown = schedule(frontend, node_id)
    assert shown["band"] == [0, 200, 22] and shown["gamma"] == "γ 5 (KSampler cfg)"
    assert frontend.eval(f"() => document.querySelector('{SCHEDULE} select').value") == ""  # menu resets

    # Inputs that do not apply: with the prior off, start/end are greyed out; a reversed range is flagged.
    frontend.set_widget(node_id, "prior_weight", 0.0)
    shown = schedule(frontend, node_id)
    assert shown["level"] == "off" and shown["disabled"] == {"start_percent": True, "end_percent": True}
    saved = frontend.reload_graph()
    assert saved_node(saved, node_id)["widgets_values"] == [0.0, 0.0, 1.0]
    shown = schedule(frontend, node_id)
    assert shown["level"] == "off" and shown["disabled"] == {"start_percent": True, "end_percent": True}
    frontend.focus([node_id], 1.3)
    screenshot(frontend, "schedule_prior_off")
    frontend.set_widget(node_id, "prior_weight", 1.0)
    frontend.set_widget(node_id, "start_percent", 0.8)
    frontend.set_widget(node_id, "end_percent", 0.2)
    shown = schedule(frontend, node_id)
    assert shown["level"] == "error" and "swap them" in shown["status"]
    assert shown["disabled"] == {"start_percent": False, "end_percent": False}
    frontend.focus([node_id], 1.3)
    screenshot(frontend, "schedule_reversed_range")


def test_guider_presets_and_missing_negative(frontend):
    frontend.load_template("prior_swap_ip2p_sd15")
    dual = frontend.node_id("PriorSwapDualCFGGuider")
    frontend.set_widget(dual, "cfg_conds", 3.0)
    frontend.set_widget(dual, "cfg_cond2_negative", 4.0)
    assert schedule(frontend, dual)["gamma"] == "γ_T 3 · γ_I 4"
    frontend.focus([dual], 1.1)
    frontend.page.locator(f"{SCHEDULE} select").select_option("ip2p")
    values = frontend.widget_values(dual)
    assert (values["cfg_conds"], values["cfg_cond2_negative"], values["style"]) == (7.5, 1.5, "regular")
    assert schedule(frontend, dual)["gamma"] == "γ_T 7.5 · γ_I 1.5"
    screenshot(frontend, "dual_guider_ip2p_preset")

    frontend.load_template("prior_swap_custom_sampler_guider")
    guider = frontend.node_id("PriorSwapGuider")
    frontend.eval("(id) => { const n = window.app.graph.getNodeById(id); "
                  "n.disconnectInput(n.inputs.findIndex(i => i.name === 'negative')); }", guider)
    frontend.settle()
    assert schedule(frontend, guider)["level"] == "ok"  # a full swap does not need the model's own negative
    frontend.set_widget(guider, "prior_weight", 0.5)
    shown = schedule(frontend, guider)
    assert shown["level"] == "error" and "connect 'negative'" in shown["status"]


def test_run_button_queues_the_workflow_and_it_runs(frontend, comfy_server):
    """The artist's last step: press Run in the frontend; ComfyUI executes the graph and shows the image."""
    ids = frontend.load_sd15_ksampler(steps=2, seed=2024)
    frontend.set_widget(ids["PriorSwapCFG"], "start_percent", 0.5)
    before = set(comfy_server.get("/history"))
    frontend.page.get_by_test_id("queue-button").click()
    deadline = time.time() + 300
    new = []
    while time.time() < deadline and not new:
        new = [k for k in comfy_server.get("/history") if k not in before]
        time.sleep(0.5)
    assert new, "pressing Run queued nothing"
    entry = comfy_server.wait(new[0])
    prompt = entry["prompt"][2]
    assert prompt[str(ids["PriorSwapCFG"])]["inputs"]["start_percent"] == 0.5  # the edited widget was sent
    images = comfy_server.output_files(entry)
    assert len(images) == 1 and images[0].exists()
    # The frontend received the result and shows it on the SaveImage node.
    frontend.page.wait_for_function(
        "(id) => window.app.nodeOutputs?.[String(id)]?.images?.length > 0", arg=ids["SaveImage"], timeout=60_000)
    frontend.focus([ids["PriorSwapCFG"], ids["KSampler"], ids["SaveImage"]], 0.9)
    screenshot(frontend, "run_result")


def vue_edit(fe: browser.Frontend, node_id: int, name: str, value) -> None:
    """Change a widget as the Vue renderer's widget components do: value, then callback (no onWidgetChanged)."""
    fe.eval("""([id, name, value]) => {
        const w = window.app.graph.getNodeById(id).widgets.find(w => w.name === name);
        w.value = value;
        w.callback?.(value);
    }""", [node_id, name, value])
    fe.page.wait_for_timeout(100)


def greyed_rows(fe: browser.Frontend, node_id: int) -> dict:
    """In the Vue renderer: per start/end input, whether its row is marked and drawn greyed out."""
    return fe.eval("""(id) => {
        const node = document.querySelector(`[data-node-id="${id}"]`);
        const out = {};
        for (const name of ['start_percent', 'end_percent', 'prior_weight']) {
            const row = [...node.querySelectorAll('[data-prior-swap-unused]')]
                .find(r => r.querySelector(`[aria-label="${name}"]`) || r.dataset.widgetName === name);
            out[name] = row ? +getComputedStyle(row).opacity : 1;
        }
        return out;
    }""", node_id)


def test_vue_node_renderer_shows_the_schedule_gamma_and_greying(frontend):
    """'Nodes 2.0' (the Vue renderer) draws no canvas widgets: the DOM widget, γ and the greying still show."""
    frontend.set_vue_nodes(True)
    try:
        frontend.load_template("prior_swap_sd15_ksampler")
        node_id, sampler_id = frontend.node_id("PriorSwapCFG"), frontend.node_id("KSampler")
        frontend.page.wait_for_function(
            f"() => [...document.querySelectorAll('{SCHEDULE}')].some(e => e.getBoundingClientRect().width > 50)")
        frontend.focus([node_id, sampler_id], 1.0)
        shown = schedule(frontend, node_id)
        assert shown["visible"] and shown["band"] == [0, 200, 22]
        # γ is the workflow's KSampler cfg at load (7.5), not the KSampler's default (8) ...
        assert frontend.widget_values(sampler_id)["cfg"] == 7.5
        assert shown["gamma"] == "γ 7.5 (KSampler cfg)"
        # ... and follows an edit of that cfg made in the Vue renderer.
        vue_edit(frontend, sampler_id, "cfg", 6.0)
        assert schedule(frontend, node_id)["gamma"] == "γ 6 (KSampler cfg)"
        vue_edit(frontend, node_id, "end_percent", 0.6)
        assert schedule(frontend, node_id)["band"] == [0, 120, 22]
        screenshot(frontend, "vue_nodes_schedule")
        # Prior off: start/end do not apply and are drawn greyed out; on again: not.
        vue_edit(frontend, node_id, "prior_weight", 0.0)
        frontend.page.wait_for_function(
            f"() => document.querySelectorAll('[data-node-id=\"{node_id}\"] [data-prior-swap-unused]').length === 2")
        rows = greyed_rows(frontend, node_id)
        assert rows["start_percent"] < 0.5 and rows["end_percent"] < 0.5 and rows["prior_weight"] == 1, rows
        assert schedule(frontend, node_id)["disabled"] == {"start_percent": True, "end_percent": True}
        screenshot(frontend, "vue_nodes_prior_off")
        vue_edit(frontend, node_id, "prior_weight", 1.0)
        rows = greyed_rows(frontend, node_id)
        assert rows == {"start_percent": 1, "end_percent": 1, "prior_weight": 1}, rows
        # Reloading a workflow saved with the prior off greys them out again, in the Vue renderer too.
        vue_edit(frontend, node_id, "prior_weight", 0.0)
        saved = frontend.reload_graph()
        assert saved_node(saved, node_id)["widgets_values"] == [0.0, 0.0, 0.6]
        frontend.page.wait_for_function(
            f"() => document.querySelectorAll('[data-node-id=\"{node_id}\"] [data-prior-swap-unused]').length === 2")
        assert schedule(frontend, node_id)["gamma"] == "γ 6 (KSampler cfg)"
    finally:
        frontend.set_vue_nodes(False)


def test_shared_module_loaded_once(frontend, comfy_server):
    """ComfyUI lists js/lib/common.js as an extension and both scripts import it: one fetch, one instance."""
    scripts = comfy_server.get("/extensions")
    assert f"/extensions/{browser.PACK_MODULE}/lib/common.js" in scripts
    fetched = frontend.eval("() => performance.getEntriesByType('resource').map(e => new URL(e.name).pathname)"
                            ".filter(p => p.startsWith('/extensions/comfyui-prior-swap/'))")
    assert sorted(fetched) == sorted(["/extensions/comfyui-prior-swap/prior_swap.js",
                                      "/extensions/comfyui-prior-swap/insight.js",
                                      "/extensions/comfyui-prior-swap/lib/common.js"]), fetched
    names = frontend.eval("() => window.app.extensions.map(e => e.name)"
                          ".filter(n => /prior.?swap/i.test(n))")
    assert sorted(names) == ["PriorSwapCFG.PriorType", "PriorSwapCFG.Schedule", "prior_swap.insight"]
