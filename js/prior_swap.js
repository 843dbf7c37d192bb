// Prior Swap CFG frontend extension.
//
// - PRIOR sockets and links get a colour of their own, so the prior's wiring reads at a glance.
// - PriorSwapCFG, PriorSwapGuider and PriorSwapDualCFGGuider get a "schedule" widget (a DOM widget, so it
//   works in the canvas renderer and in the Vue "Nodes 2.0" renderer): a bar over sampling (0 % → 100 %)
//   whose violet band is where the prior supplies the uncond (start_percent → end_percent) and whose height
//   is prior_weight; below it γ and what the node will do (or why it will refuse to run), and a preset menu
//   with the paper's settings (InstructPix2Pix γ_T 7.5 / γ_I 1.5, Stable Zero123 γ 5).
// - Inputs that do not apply are greyed out: start/end_percent while prior_weight is 0 (stock CFG).
//
// Nothing here is saved with the workflow: the widget has serialize false (not in widgets_values, not in
// the prompt), and everything it shows is derived from the node's own widgets and links, so it is the same
// after saving and reloading. Prototype callbacks are chained, never replaced. Connectivity is read through
// node.getOutputNodes / node.isInputConnected (./lib/common.js), not the deprecated output.links / input.link.
import { app } from "../../scripts/app.js";
import { PRIOR_COLOR, chain, injectStyle as addStyle, inputConnected, outputNodes, vueNodeElement, widgetOf }
  from "./lib/common.js";

const OWN_COLOR = "#5a5a5a";
const WIDGET = "prior_swap_schedule";
const CLASS = "prior-swap-schedule";
const FULL_SWAP = { prior_weight: 1, start_percent: 0, end_percent: 1 };

// Presets per node: `values` are set on the node's widgets, `samplerCfg` on the cfg (γ) of the samplers
// that the patched MODEL feeds (PriorSwapCFG leaves γ to the KSampler).
export const PRESETS = {
  PriorSwapCFG: [
    { id: "eq7", label: "Paper Eq. 7: full swap", values: FULL_SWAP },
    { id: "zero123", label: "Stable Zero123 (paper): full swap, KSampler cfg γ 5", values: FULL_SWAP, samplerCfg: 5 },
    { id: "off", label: "Stock CFG (prior off)", values: { prior_weight: 0 } },
  ],
  PriorSwapGuider: [
    { id: "eq7", label: "Paper Eq. 7: full swap, γ 7.5", values: { ...FULL_SWAP, cfg: 7.5 } },
    { id: "zero123", label: "Stable Zero123 (paper): full swap, γ 5", values: { ...FULL_SWAP, cfg: 5 } },
    { id: "off", label: "Stock CFG (prior off)", values: { prior_weight: 0 } },
  ],
  PriorSwapDualCFGGuider: [
    {
      id: "ip2p",
      label: "InstructPix2Pix (paper): γ_T 7.5, γ_I 1.5",
      values: { ...FULL_SWAP, cfg_conds: 7.5, cfg_cond2_negative: 1.5, style: "regular" },
    },
    { id: "off", label: "Stock DualCFGGuider (prior off)", values: { prior_weight: 0 } },
  ],
};
const OFF_ATTR = "data-prior-swap-unused"; // on a Vue node's widget row that does not apply (greyed out)
const WATCHED = ["prior_weight", "start_percent", "end_percent", "cfg", "cfg_conds", "cfg_cond2_negative", "style"];

const STYLE = `
body { --color-datatype-PRIOR: ${PRIOR_COLOR}; }
.${CLASS} { box-sizing: border-box; display: flex; flex-direction: column; gap: 3px; padding: 2px 4px;
  font: 11px/1.25 sans-serif; color: var(--input-text, #ddd); overflow: hidden; }
.${CLASS} svg { display: block; width: 100%; height: 26px; }
.${CLASS} .ps-axis { display: flex; justify-content: space-between; font-size: 10px; opacity: .7; }
.${CLASS} .ps-status, .${CLASS} .ps-gamma { min-height: 14px; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
.${CLASS} .ps-gamma { opacity: .8; }
.${CLASS} .ps-status.ps-error { color: #ff6b6b; }
.${CLASS} .ps-status.ps-off { opacity: .75; }
.${CLASS} select { width: 100%; font-size: 11px; padding: 1px 2px; border-radius: 4px;
  background: var(--comfy-input-bg, #222); color: var(--input-text, #ddd); border: 1px solid var(--border-color, #444); }
[${OFF_ATTR}] { opacity: .35; filter: grayscale(1); }
`;

const injectStyle = () => addStyle(`${CLASS}-style`, STYLE);

const valueOf = (node, name, fallback) => {
  const v = widgetOf(node, name)?.value;
  return v === undefined || v === null || v === "" ? fallback : v;
};
const pct = (x) => `${Math.round(x * 100)}%`;
const fmt = (x) => (Number.isFinite(x) ? `${+x.toFixed(2)}` : "?");

// Nodes downstream of `node`'s MODEL output that have a `cfg` widget (KSampler, KSamplerAdvanced, CFGGuider, …),
// looking through model patches (nodes with a MODEL output) up to a few hops.
export function downstreamSamplers(node, depth = 5, seen = new Set()) {
  const found = [];
  if (!node?.graph || depth <= 0 || seen.has(node.id)) return found;
  seen.add(node.id);
  (node.outputs ?? []).forEach((output, slot) => {
    if (output.type !== "MODEL") return;
    for (const target of outputNodes(node, slot)) {
      if (widgetOf(target, "cfg")) found.push(target);
      else found.push(...downstreamSamplers(target, depth - 1, seen));
    }
  });
  return [...new Set(found)];
}

// What the node will do with its current values: the state drawn by the widget.
export function scheduleState(node) {
  const weight = Number(valueOf(node, "prior_weight", 1));
  const start = Number(valueOf(node, "start_percent", 0));
  const end = Number(valueOf(node, "end_percent", 1));
  let gamma;
  if (node.comfyClass === "PriorSwapDualCFGGuider") {
    gamma = `γ_T ${fmt(Number(valueOf(node, "cfg_conds", 0)))} · γ_I ${fmt(Number(valueOf(node, "cfg_cond2_negative", 0)))}`;
  } else if (node.comfyClass === "PriorSwapGuider") {
    gamma = `γ ${fmt(Number(valueOf(node, "cfg", 0)))}`;
  } else {
    const cfgs = [...new Set(downstreamSamplers(node).map((s) => fmt(Number(widgetOf(s, "cfg").value))))];
    gamma = cfgs.length ? `γ ${cfgs.join(", ")} (KSampler cfg)` : "γ: the cfg of the KSampler it feeds";
  }
  const partial = start > 0 || end < 1;
  let level = "ok";
  let message;
  if (start > end) {
    level = "error";
    message = `start_percent ${pct(start)} is after end_percent ${pct(end)}: swap them`;
  } else if (weight <= 0) {
    level = "off";
    message = "prior_weight 0: stock CFG, the prior is not used";
  } else if (node.comfyClass === "PriorSwapGuider" && (weight < 1 || partial) && !inputConnected(node, "negative")) {
    level = "error";
    message = "connect 'negative' (the model's own): prior_weight < 1 or a partial range uses it";
  } else {
    const share = weight >= 1 ? "the uncond" : `${pct(weight)} of the uncond`;
    message = `prior gives ${share} from ${pct(start)} to ${pct(end)}`;
  }
  return { weight, start, end, gamma, level, message, key: [weight, start, end, gamma, level, message].join("|") };
}

function svgBar(state) {
  const W = 200, H = 22, top = 2;
  const inRange = Math.max(0, state.end - state.start);
  const bandH = H * Math.max(0, Math.min(1, state.weight));
  const ticks = [0.25, 0.5, 0.75]
    .map((t) => `<line x1="${t * W}" x2="${t * W}" y1="${top}" y2="${top + H}" stroke="#000" stroke-opacity=".35" stroke-width="1"/>`)
    .join("");
  return `<svg viewBox="0 0 ${W} ${H + 4}" preserveAspectRatio="none" aria-label="prior swap schedule">
    <rect class="ps-track" x="0" y="${top}" width="${W}" height="${H}" rx="3" fill="${OWN_COLOR}"/>
    <rect class="ps-band" x="${state.start * W}" y="${top + H - bandH}" width="${inRange * W}" height="${bandH}"
          fill="${PRIOR_COLOR}" fill-opacity="${state.level === "error" ? 0.35 : 0.95}"/>
    ${ticks}
  </svg>`;
}

function render(node) {
  const widget = widgetOf(node, WIDGET);
  const el = widget?.element;
  if (!el) return;
  const state = scheduleState(node);
  // start/end do not apply while the prior is off: grey them out (not saved; recomputed on load).
  for (const name of ["start_percent", "end_percent"]) {
    const w = widgetOf(node, name);
    if (w) w.disabled = state.weight <= 0;
  }
  greyVueRows(node, state.weight <= 0);
  if (el.dataset.key === state.key) return;
  el.dataset.key = state.key;
  Object.assign(el.dataset, {
    weight: String(state.weight),
    start: String(state.start),
    end: String(state.end),
    level: state.level,
  });
  el.querySelector(".ps-bar").innerHTML = svgBar(state);
  const status = el.querySelector(".ps-status");
  status.textContent = state.message;
  status.title = state.message;
  status.className = `ps-status ps-${state.level}`;
  const gamma = el.querySelector(".ps-gamma");
  gamma.textContent = state.gamma;
  gamma.title = state.gamma;
  node.setDirtyCanvas?.(true, true);
}

// The Vue renderer draws widgets as its own components and shows `disabled` weakly or not at all (1.32: not
// at all; 1.58: only the +/- buttons dim): mark the rows of the inputs that do not apply, so the stylesheet
// greys them out. Vue mounts (and may re-mount) a node's element after the graph loads, so the marks are
// applied again whenever elements are added to the page (see the observer in setup).
function rowsOf(nodeElement, name) {
  const named = nodeElement.querySelector(`[data-widget-name="${CSS.escape(name)}"]`); // frontend 1.58
  if (named) return named;
  const field = nodeElement.querySelector(`[aria-label="${CSS.escape(name)}"]`); // frontend 1.32
  const container = field?.closest(".lg-node-widgets");
  return container ? [...container.children].find((row) => row.contains(field)) : null;
}

function greyVueRows(node, off) {
  const nodeElement = vueNodeElement(node);
  if (!nodeElement) return;
  for (const name of ["start_percent", "end_percent"]) {
    const row = rowsOf(nodeElement, name);
    if (row && row.hasAttribute(OFF_ATTR) !== off) row.toggleAttribute(OFF_ATTR, off);
  }
}

let greyingQueued = false;
function greyAllVueRows() {
  if (greyingQueued) return;
  greyingQueued = true;
  requestAnimationFrame(() => {
    greyingQueued = false;
    for (const node of app.graph?.nodes ?? []) {
      if (PRESETS[node.comfyClass]) greyVueRows(node, Number(valueOf(node, "prior_weight", 1)) <= 0);
    }
  });
}

// Every schedule of the graph again: after a workflow is configured (all widgets hold the workflow's values,
// the KSampler's cfg included) and after a sampler's cfg changes. The canvas renderer also re-renders on draw;
// the Vue renderer draws no canvas widgets, so these are what keep γ right there.
function renderAll() {
  for (const node of app.graph?.nodes ?? []) {
    if (PRESETS[node.comfyClass]) render(node);
  }
}

export function applyPreset(node, preset) {
  const graph = node.graph;
  graph?.beforeChange?.();
  for (const [name, value] of Object.entries(preset.values)) {
    const w = widgetOf(node, name);
    if (!w) continue;
    w.value = value;
    w.callback?.(w.value, app.canvas, node);
  }
  if (preset.samplerCfg !== undefined) {
    for (const sampler of downstreamSamplers(node)) {
      const w = widgetOf(sampler, "cfg");
      w.value = preset.samplerCfg;
      w.callback?.(w.value, app.canvas, sampler);
      sampler.setDirtyCanvas?.(true, true);
    }
  }
  graph?.afterChange?.();
  render(node);
}

function addScheduleWidget(node) {
  injectStyle();
  const el = document.createElement("div");
  el.className = CLASS;
  el.title = "Prior swap schedule: the violet band is where in sampling the prior supplies the uncond; " +
    "its height is prior_weight. Grey: the model's own uncond (the sampler's negative).";
  el.innerHTML = `<div class="ps-bar"></div>
    <div class="ps-axis"><span>0%</span><span>sampling →</span><span>100%</span></div>
    <div class="ps-status"></div>
    <div class="ps-gamma"></div>
    <select class="ps-presets" title="Apply a preset of the paper"></select>`;
  const select = el.querySelector("select");
  const presets = PRESETS[node.comfyClass] ?? [];
  select.innerHTML = `<option value="">Presets…</option>` +
    presets.map((p) => `<option value="${p.id}">${p.label}</option>`).join("");
  select.addEventListener("change", () => {
    const preset = presets.find((p) => p.id === select.value);
    select.value = "";
    if (preset) applyPreset(node, preset);
  });
  // Keep canvas shortcuts (Delete, Ctrl+Z, …) from firing while the menu has focus.
  select.addEventListener("keydown", (e) => e.stopPropagation());
  const widget = node.addDOMWidget(WIDGET, "prior_swap_schedule", el, {
    serialize: false, // not sent to the server
    hideOnZoom: true,
    getValue: () => undefined,
    setValue: () => {},
    getMinHeight: () => 130, // the DOM widget keeps a 10 px margin above and below
    getMaxHeight: () => 130,
    onDraw: () => render(node), // cheap when nothing changed; catches a KSampler's cfg edited elsewhere
  });
  widget.serialize = false; // not in widgets_values: the backend's widget order stays as it is
  for (const name of WATCHED) {
    const w = widgetOf(node, name);
    if (w) chain(w, "callback", () => render(node));
  }
  render(node);
  return widget;
}

// The colour palette re-assigns every known type's colour ("" where the palette has none) whenever it loads,
// so a plain assignment is lost: keep PRIOR's colour unless a palette sets one of its own.
function pinTypeColor(table, type, color) {
  if (!table) return;
  let fromPalette = table[type];
  Object.defineProperty(table, type, {
    configurable: true,
    enumerable: true,
    get: () => fromPalette || color,
    set: (value) => {
      fromPalette = value;
    },
  });
}

app.registerExtension({
  name: "PriorSwapCFG.PriorType",
  async setup() {
    pinTypeColor(app.canvas?.default_connection_color_byType, "PRIOR", PRIOR_COLOR);
    pinTypeColor(globalThis.LGraphCanvas?.link_type_colors, "PRIOR", PRIOR_COLOR);
    injectStyle(); // also gives the Vue renderer's PRIOR sockets the colour (--color-datatype-PRIOR)
    // Elements added to the page (Vue node elements among them): re-apply the greying once per frame.
    new MutationObserver((records) => {
      if (records.some((r) => r.addedNodes.length) && document.querySelector("[data-node-id]")) greyAllVueRows();
    }).observe(document.body, { childList: true, subtree: true });
  },
});

app.registerExtension({
  name: "PriorSwapCFG.Schedule",
  async afterConfigureGraph() {
    renderAll();
  },
  nodeCreated(node) {
    // A sampler's γ is shown on the Prior Swap CFG that feeds it: follow edits of its cfg in either renderer.
    const cfg = PRESETS[node.comfyClass] ? null : widgetOf(node, "cfg");
    if (cfg) chain(cfg, "callback", () => renderAll());
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!PRESETS[nodeData.name]) return;
    const proto = nodeType.prototype;
    chain(proto, "onNodeCreated", function () {
      addScheduleWidget(this);
    });
    chain(proto, "onConfigure", function () {
      render(this);
    });
    chain(proto, "onConnectionsChange", function () {
      render(this);
    });
    chain(proto, "onWidgetChanged", function () {
      render(this);
    });
  },
});
