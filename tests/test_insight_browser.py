"""js/insight.js in the real frontend (headless Chromium), in the canvas and the Vue ("Nodes 2.0") renderer:
the curve is drawn on the PriorSwapInsight node while sampling runs and stays afterwards.

The frontend is the host's bundled one, or the newest with PRIOR_SWAP_FRONTEND=newest (support/browser.py).
Screenshots: out/browser/<bundled|newest>/insight_curve_<renderer>.png.

Needs /usr/bin/chromium, like tests/test_browser.py (skipped without it unless PRIOR_SWAP_REQUIRE_BROWSER=1).
"""
from __future__ import annotations

import time

import pytest

from support import browser

CURVE = "prior_swap_insight_curve"


# After every test: no console warning or error from the pack's scripts (conftest.py).
pytestmark = pytest.mark.usefixtures("no_warning_from_the_pack")


@pytest.fixture(scope="module")
def frontend(comfy_server):
    for fe in browser.open_frontend(comfy_server):
        fe.page.wait_for_function("() => window.app.extensions.some(e => e.name === 'prior_swap.insight')")
        yield fe


def curve(fe: browser.Frontend, node_id: int) -> dict:
    """The curve widget's DOM: what it shows, how many points each line has, and whether it is on screen."""
    return fe.eval("""([id, name]) => {
        const w = window.app.graph.getNodeById(id).widgets.find(w => w.name === name);
        const el = w?.element;
        if (!el) return null;
        const r = el.getBoundingClientRect();
        const points = (cls) => el.querySelector(`.${cls} polyline`)?.getAttribute('points').trim().split(/\\s+/).length ?? 0;
        return {steps: +el.dataset.steps, level: el.dataset.level, label: el.querySelector('.pi-label').textContent,
                drift: points('pi-drift'), own: points('pi-own'), prior: points('pi-prior'),
                visible: el.isConnected && r.width > 100 && r.height > 40 && getComputedStyle(el).display !== 'none',
                serialize: w.serialize};
    }""", [node_id, CURVE])


@pytest.mark.parametrize("renderer", ["canvas", "vue"])
def test_curve_is_drawn_on_the_node_while_sampling_and_kept(frontend, comfy_server, renderer):
    fe = frontend
    fe.set_vue_nodes(renderer == "vue")
    try:
        # A seed per renderer: the same prompt again would come from ComfyUI's cache, sampling nothing.
        ids = fe.load_sd15_ksampler(steps=3, seed=4242 if renderer == "canvas" else 4243)
        # Put PriorSwapInsight between PriorSwapCFG and the KSampler, as an artist would.
        insight = fe.eval("""([swapId, ksId]) => {
            const g = window.app.graph, swap = g.getNodeById(swapId), ks = g.getNodeById(ksId);
            const node = window.LiteGraph.createNode('PriorSwapInsight');
            node.pos = [swap.pos[0], swap.pos[1] + swap.size[1] + 60];
            g.add(node);
            swap.connect(0, node, 0);
            node.connect(0, ks, ks.inputs.findIndex(i => i.name === 'model'));
            return node.id;
        }""", [ids["PriorSwapCFG"], ids["KSampler"]])
        fe.settle()
        before = curve(fe, insight)
        assert before["level"] == "idle" and before["steps"] == 0 and before["serialize"] is False
        prompt = fe.graph_to_prompt()["output"]
        assert prompt[str(insight)]["inputs"] == {"model": [str(ids["PriorSwapCFG"]), 0]}  # the widget is not sent
        fe.focus([ids["PriorSwapCFG"], insight, ids["KSampler"]], 1.1)
        fe.page.wait_for_function("([id, name]) => window.app.graph.getNodeById(id).widgets"
                                  ".find(w => w.name === name).element.getBoundingClientRect().width > 100",
                                  arg=[insight, CURVE])
        # Record what the widget shows each time it changes: it must show steps before the run is done.
        fe.eval("""([id, name]) => {
            const el = window.app.graph.getNodeById(id).widgets.find(w => w.name === name).element;
            window.__insightSeen = [];
            new MutationObserver(() => window.__insightSeen.push([+el.dataset.steps, el.dataset.level]))
                .observe(el, {attributes: true, subtree: true, childList: true});
        }""", [insight, CURVE])
        fe.eval("() => window.app.queuePrompt(0)")  # what the Run button calls
        fe.page.wait_for_function(f"() => window.app.graph.getNodeById({insight}).priorSwapInsight?.done === true",
                                  timeout=300_000)
        fe.settle()
        state = fe.eval(f"() => {{ const s = window.app.graph.getNodeById({insight}).priorSwapInsight; "
                        "return {steps: s.steps.map(m => m.rel_diff), total: s.total, done: s.done}; }")
        assert len(state["steps"]) == 3 and state["total"] == 3 and all(v > 0 for v in state["steps"]), state
        seen = fe.eval("() => window.__insightSeen")
        assert any(steps > 0 and level == "live" for steps, level in seen), seen  # drawn while sampling ran
        shown = curve(fe, insight)
        assert shown["visible"] and shown["level"] == "done" and shown["steps"] == 3
        assert (shown["drift"], shown["own"], shown["prior"]) == (3, 3, 3)
        assert shown["label"].startswith("drift ") and shown["label"].endswith("step 3/3")
        fe.page.mouse.move(2, 450)
        time.sleep(0.3)
        path = browser.artifacts() / f"insight_curve_{renderer}.png"
        fe.page.screenshot(path=str(path))
        assert path.stat().st_size > 10_000
        # Kept afterwards: still on the node after further redraws.
        fe.focus([insight], 1.5)
        assert curve(fe, insight)["steps"] == 3
        fe.page.screenshot(path=str(browser.artifacts() / f"insight_curve_{renderer}_zoom.png"))
    finally:
        fe.set_vue_nodes(False)
