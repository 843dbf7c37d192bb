// Prior Swap CFG frontend extension: a colour of its own for PRIOR sockets and links, so the prior's
// wiring reads at a glance. (The schedule drawing and presets of the artist's loop come later.)
import { app } from "../../scripts/app.js";

const PRIOR_COLOR = "#b08cff";

app.registerExtension({
  name: "PriorSwapCFG.PriorType",
  async setup() {
    const canvas = app.canvas;
    if (canvas?.default_connection_color_byType) {
      canvas.default_connection_color_byType.PRIOR = PRIOR_COLOR;
    }
    const LGraphCanvas = globalThis.LGraphCanvas;
    if (LGraphCanvas?.link_type_colors) {
      LGraphCanvas.link_type_colors.PRIOR = PRIOR_COLOR;
    }
  },
});
