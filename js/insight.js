// Prior Swap Insight frontend: a live per-step curve on the PriorSwapInsight node (issue #11).
//
// The backend (py/insight.py) sends one "prior_swap.insight" websocket message per sampling step, tagged
// with prompt_id and the PriorSwapInsight node's id, and {done: true} when the run ends. This draws the
// drift ||u_ft - u_prior|| / ||u_ft|| (violet) and the two guidance magnitudes (grey: ||c - u_ft||, orange:
// ||c - u_prior||, scaled to their own maximum) as a small canvas widget on that node, while sampling runs;
// the last run stays drawn afterwards. The widget is not serialized (nothing reaches the prompt or the
// workflow's widgets_values). Prototype callbacks are chained, never replaced.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE = "PriorSwapInsight";
const EVENT = "prior_swap.insight";
const WIDGET = "prior_swap_insight_curve";
const HEIGHT = 96;
const DRIFT = "#9d4dff";
const OWN = "#9a9a9a";
const PRIOR = "#ff9a3c";

function chain(object, name, fn) {
  const previous = object[name];
  object[name] = function (...args) {
    const result = previous?.apply(this, args);
    fn.apply(this, args);
    return result;
  };
}

const fmt = (x) => (Number.isFinite(x) ? (Math.abs(x) < 1e3 ? `${+x.toPrecision(3)}` : x.toExponential(1)) : "–");

function polyline(ctx, points, colour) {
  if (!points.length) return;
  ctx.strokeStyle = colour;
  ctx.fillStyle = colour;
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
  ctx.stroke();
  for (const [x, y] of points) ctx.fillRect(x - 1.5, y - 1.5, 3, 3);
}

function curveWidget(node) {
  return {
    name: WIDGET,
    type: "prior_swap_insight",
    value: null,
    serialize: false, // never in widgets_values or the prompt
    options: { serialize: false },
    computeSize(width) {
      return [width, HEIGHT];
    },
    draw(ctx, node, widgetWidth, y) {
      const state = node.priorSwapInsight;
      const margin = 10;
      const x0 = margin, x1 = widgetWidth - margin, top = y + 16, bottom = y + HEIGHT - 6;
      ctx.save();
      ctx.fillStyle = "#1b1b1b";
      ctx.fillRect(x0, y + 2, x1 - x0, HEIGHT - 4);
      ctx.strokeStyle = "#444";
      ctx.strokeRect(x0, top, x1 - x0, bottom - top);
      ctx.font = "10px sans-serif";
      ctx.textBaseline = "top";
      ctx.fillStyle = "#bbb";
      const steps = state?.steps ?? [];
      if (!steps.length) {
        ctx.fillText("drift of the fine-tune's uncond: runs when sampling", x0 + 4, y + 4);
        ctx.restore();
        return;
      }
      const last = steps[steps.length - 1];
      const total = Math.max(state.total ?? steps.length, steps.length);
      const label = `drift ${fmt(last.rel_diff)} · step ${steps.length}/${total}${state.done ? "" : " …"}`;
      ctx.fillStyle = DRIFT;
      ctx.fillText(label, x0 + 4, y + 4);
      const px = (i) => x0 + (total > 1 ? (i / (total - 1)) * (x1 - x0) : (x1 - x0) / 2);
      const scaled = (key) => {
        const max = Math.max(...steps.map((s) => s[key]).filter(Number.isFinite), 1e-12);
        return steps.map((s, i) => [px(i), bottom - (Number.isFinite(s[key]) ? s[key] / max : 0) * (bottom - top - 2)]);
      };
      polyline(ctx, scaled("guid_ft"), OWN);
      polyline(ctx, scaled("guid_prior"), PRIOR);
      polyline(ctx, scaled("rel_diff"), DRIFT);
      ctx.restore();
    },
  };
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
        node.setDirtyCanvas?.(true, false);
      }
      app.graph?.setDirtyCanvas?.(true, false);
    });
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE) return;
    chain(nodeType.prototype, "onNodeCreated", function () {
      if (this.widgets?.some((w) => w.name === WIDGET)) return;
      this.addCustomWidget(curveWidget(this));
      this.priorSwapInsight = runs[String(this.id)] ?? null;
      const size = this.computeSize();
      this.setSize([Math.max(this.size[0], size[0], 240), Math.max(this.size[1], size[1])]);
    });
  },
});
