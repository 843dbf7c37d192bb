"""js/insight.js in the host's real frontend (headless Chromium): the curve is drawn on the PriorSwapInsight
node while sampling runs and stays afterwards. Screenshot: out/browser/insight_curve.png.

Needs /usr/bin/chromium, like tests/test_browser.py (skipped without it unless PRIOR_SWAP_REQUIRE_BROWSER=1).
"""
from __future__ import annotations

import time

import pytest

from support import browser
from support.comfy_env import ROOT

ARTIFACTS = ROOT / "out" / "browser"


@pytest.fixture(scope="module")
def frontend(comfy):
    for fe in browser.open_frontend(comfy):
        fe.page.wait_for_function("() => window.app.extensions.some(e => e.name === 'prior_swap.insight')")
        yield fe


def test_curve_is_drawn_on_the_node_while_sampling_and_kept(frontend, comfy):
    fe = frontend
    ids = fe.load_sd15_ksampler(steps=3, seed=4242)
    # Put PriorSwapInsight between PriorSwapCFG and the KSampler, as an artist would.
    insight = fe.eval("""([swapId, ksId]) => {
        const g = window.app.graph, swap = g.getNodeById(swapId), ks = g.getNodeById(ksId);
        const node = window.LiteGraph.createNode('PriorSwapInsight');
        node.pos = [swap.pos[0], swap.pos[1] + swap.size[1] + 60];
        g.add(node);
        swap.connect(0, node, 0);
        node.connect(0, ks, ks.inputs.findIndex(i => i.name === 'model'));
        const w = node.widgets.find(w => w.name === 'prior_swap_insight_curve');
        const draw = w.draw;
        window.__insight = {draws: 0, live: 0};
        w.draw = function (ctx, n, ...rest) {
            window.__insight.draws++;
            const s = n.priorSwapInsight;
            if (s && s.steps.length && !s.done) window.__insight.live++;
            return draw.call(this, ctx, n, ...rest);
        };
        return node.id;
    }""", [ids["PriorSwapCFG"], ids["KSampler"]])
    fe.settle()
    prompt = fe.graph_to_prompt()["output"]
    assert prompt[str(insight)]["inputs"] == {"model": [str(ids["PriorSwapCFG"]), 0]}  # the widget is not sent
    fe.focus([ids["PriorSwapCFG"], insight, ids["KSampler"]], 1.1)
    fe.eval("() => window.app.queuePrompt(0)")  # what the Run button calls
    fe.page.wait_for_function(f"() => window.app.graph.getNodeById({insight}).priorSwapInsight?.done === true",
                              timeout=300_000)
    fe.settle()
    state = fe.eval(f"() => {{ const s = window.app.graph.getNodeById({insight}).priorSwapInsight; "
                    "return {steps: s.steps.map(m => m.rel_diff), total: s.total, done: s.done, "
                    "draws: window.__insight.draws, live: window.__insight.live}; }")
    assert len(state["steps"]) == 3 and state["total"] == 3 and all(v > 0 for v in state["steps"]), state
    assert state["live"] > 0, state  # drawn while sampling ran, not only at the end
    fe.page.mouse.move(2, 450)
    time.sleep(0.3)
    path = ARTIFACTS / "insight_curve.png"
    fe.page.screenshot(path=str(path))
    assert path.stat().st_size > 10_000
    # Kept afterwards: still on the node after further redraws.
    fe.focus([insight], 1.5)
    assert fe.eval(f"() => window.app.graph.getNodeById({insight}).priorSwapInsight.steps.length") == 3
    fe.page.screenshot(path=str(ARTIFACTS / "insight_curve_zoom.png"))
