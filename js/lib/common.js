// Shared by js/prior_swap.js and js/insight.js (imported as "./lib/common.js").
//
// ComfyUI lists every .js under the pack's WEB_DIRECTORY (subfolders included) and the frontend imports each
// listed URL as an ES module; the relative imports of the two scripts resolve to that same URL, so this module
// is fetched and evaluated once and both scripts share one instance. It registers no extension of its own.
//
// Graph connectivity goes through the LGraphNode methods that frontend 1.58 names in its deprecation notices
// (isInputConnected / getOutputNodes), never output.links / input.link; the bundled 1.32 has the same methods.

export const PRIOR_COLOR = "#9d4dff"; // violet like a MODEL (#b39ddb), but clearly apart from it

// Call `fn` after whatever `object[name]` did before (prototype callbacks are chained, never replaced).
export function chain(object, name, fn) {
  const previous = object[name];
  object[name] = function (...args) {
    const result = previous?.apply(this, args);
    fn.apply(this, args);
    return result;
  };
}

export const widgetOf = (node, name) => node?.widgets?.find((w) => w.name === name);

// Nodes linked to output `slot` of `node` (an empty list when none).
export function outputNodes(node, slot) {
  if (!node?.graph) return [];
  return node.getOutputNodes?.(slot) ?? [];
}

// Whether the input named `name` of `node` has a link.
export function inputConnected(node, name) {
  const slot = node?.findInputSlot?.(name) ?? -1;
  return slot >= 0 && !!node.graph && !!node.isInputConnected?.(slot);
}

// One <style> element per id, added once.
export function injectStyle(id, css) {
  if (document.getElementById(id)) return;
  const style = document.createElement("style");
  style.id = id;
  style.textContent = css;
  document.head.appendChild(style);
}

// The Vue ("Nodes 2.0") renderer's element of `node`, or null in the canvas renderer.
export function vueNodeElement(node) {
  return document.querySelector(`[data-node-id="${CSS.escape(String(node.id))}"]`);
}
