// Prior Swap Insight frontend: a live per-step curve on the PriorSwapInsight node (issue #11).
//
// The backend (py/insight.py) sends one "prior_swap.insight" websocket message per sampling step, tagged
// with prompt_id and the PriorSwapInsight node's id, and {done: true} when the run ends. This draws the
// drift ||u_ft - u_prior|| / ||u_ft|| (violet) and the two guidance magnitudes (grey: ||c - u_ft||, orange:
// ||c - u_prior||, each scaled to its own maximum) on that node, while sampling runs; the last run stays
// drawn afterwards. The curve is an SVG in a DOM widget (like the schedule of js/prior_swap.js), so it shows
// in the canvas renderer and in the Vue "Nodes 2.0" renderer alike, and it is redrawn when a message comes,
// not when the canvas draws. The widget is not serialized (nothing reaches the prompt or the workflow's
// widgets_values). Prototype callbacks are chained, never replaced.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { PRIOR_COLOR, chain, injectStyle, widgetOf } from "./lib/common.js";

const NODE = "PriorSwapInsight";
const EVENT = "prior_swap.insight";
const WIDGET = "prior_swap_insight_curve";
const CLASS = "prior-swap-insight";
const HEIGHT = 96; // the widget's height in the node; the SVG's own units are W × H below
const W = 220, H = 70, TOP = 4, BOTTOM = H - 2;
const DRIFT = PRIOR_COLOR;
const OWN = "#9a9a9a";
const PRIOR = "#ff9a3c";
const IDLE = "drift of the fine-tune's uncond: runs when sampling";

const STYLE = `
.${CLASS} { box-sizing: border-box; display: flex; flex-direction: column; gap: 2px; padding: 2px 4px;
  font: 10px/1.25 sans-serif; color: #bbb; overflow: hidden; }
.${CLASS} .pi-label { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; min-height: 13px; }
.${CLASS} .pi-label.pi-live, .${CLASS} .pi-label.pi-done { color: ${DRIFT}; }
.${CLASS} svg { display: block; width: 100%; flex: 1; min-height: 40px; background: #1b1b1b; border-radius: 3px; }
`;

const fmt = (x) => (Number.isFinite(x) ? (Math.abs(x) < 1e3 ? `${+x.toPrecision(3)}` : x.toExponential(1)) : "–");

function polyline(points, colour, cls) {
  if (!points.length) return "";
  const path = points.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" ");
  const dots = points.map(([x, y]) => `<rect x="${(x - 1.5).toFixed(1)}" y="${(y - 1.5).toFixed(1)}" width="3" height="3"/>`)
    .join("");
  return `<g class="${cls}" fill="${colour}"><polyline points="${path}" fill="none" stroke="${colour}"
    stroke-width="1.5" vector-effect="non-scaling-stroke"/>${dots}</g>`;
}

// The SVG and label of a run state (null: nothing measured yet).
export function drawing(state) {
  const steps = state?.steps ?? [];
  if (!steps.length) return { label: IDLE, level: "idle", svg: "" };
  const last = steps[steps.length - 1];
  const total = Math.max(state.total ?? steps.length, steps.length);
  const label = `drift ${fmt(last.rel_diff)} · step ${steps.length}/${total}${state.done ? "" : " …"}`;
  const px = (i) => (total > 1 ? (i / (total - 1)) * (W - 8) + 4 : W / 2);
  const scaled = (key) => {
    const max = Math.max(...steps.map((s) => s[key]).filter(Number.isFinite), 1e-12);
    return steps.map((s, i) => [px(i), BOTTOM - (Number.isFinite(s[key]) ? s[key] / max : 0) * (BOTTOM - TOP)]);
  };
  const svg = polyline(scaled("guid_ft"), OWN, "pi-own") + polyline(scaled("guid_prior"), PRIOR, "pi-prior") +
    polyline(scaled("rel_diff"), DRIFT, "pi-drift");
  return { label, level: state.done ? "done" : "live", svg };
}

function render(node) {
  const el = widgetOf(node, WIDGET)?.element;
  if (!el) return;
  const state = node.priorSwapInsight;
  const { label, level, svg } = drawing(state);
  const labelEl = el.querySelector(".pi-label");
  labelEl.textContent = label;
  labelEl.title = label;
  labelEl.className = `pi-label pi-${level}`;
  el.querySelector("svg").innerHTML = `<rect x="0.5" y="${TOP - 0.5}" width="${W - 1}" height="${BOTTOM - TOP + 1}"
    fill="none" stroke="#444" vector-effect="non-scaling-stroke"/>${svg}`;
  el.dataset.steps = String(state?.steps?.length ?? 0);
  el.dataset.level = level;
  node.setDirtyCanvas?.(true, false);
}

function addCurveWidget(node) {
  injectStyle(`${CLASS}-style`, STYLE);
  const el = document.createElement("div");
  el.className = CLASS;
  el.title = "Per sampling step: drift ||u_ft − u_prior|| / ||u_ft|| (violet), guidance magnitudes ||c − u_ft|| " +
    "(grey) and ||c − u_prior|| (orange), each scaled to its maximum";
  el.innerHTML = `<div class="pi-label"></div>
    <svg viewBox="0 0 ${W} ${H}" preserveAspectRatio="none" aria-label="prior swap insight curve"></svg>`;
  const widget = node.addDOMWidget(WIDGET, "prior_swap_insight", el, {
    serialize: false, // not sent to the server
    hideOnZoom: true,
    getValue: () => undefined,
    setValue: () => {},
    getMinHeight: () => HEIGHT,
    getMaxHeight: () => HEIGHT,
  });
  widget.serialize = false; // not in widgets_values
  return widget;
}

// What the backend sent, kept per node id so a message that arrives before the node is found is not lost.
export const runs = {};

app.registerExtension({
  name: "prior_swap.insight",
  async setup() {
    api.addEventListener(EVENT, ({ detail }) => {
      if (!detail || detail.node == null) return;
      const id = String(detail.node);
      let state = runs[id];
      if (!state || state.prompt_id !== detail.prompt_id || (state.done && !detail.done)) {
        state = runs[id] = { prompt_id: detail.prompt_id, steps: [], total: detail.total_steps, done: false };
      }
      if (detail.done) state.done = true;
      else state.steps.push(detail);
      if (detail.total_steps != null) state.total = detail.total_steps;
      const node = app.graph?.getNodeById?.(Number(id)) ?? app.graph?.getNodeById?.(id);
      if (node) {
        node.priorSwapInsight = state;
        render(node);
      }
    });
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE) return;
    chain(nodeType.prototype, "onNodeCreated", function () {
      if (widgetOf(this, WIDGET)) return;
      addCurveWidget(this);
      this.priorSwapInsight = runs[String(this.id)] ?? null;
      render(this);
      const size = this.computeSize();
      this.setSize([Math.max(this.size[0], size[0], 240), Math.max(this.size[1], size[1])]);
    });
    chain(nodeType.prototype, "onConfigure", function () {
      // A loaded node gets its id from the workflow after onNodeCreated: show that id's last run.
      this.priorSwapInsight = runs[String(this.id)] ?? this.priorSwapInsight ?? null;
      render(this);
    });
  },
});
