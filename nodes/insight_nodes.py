"""PriorSwapInsight (opt-in per-step measurement of what the prior changes) and its plot node (issue #11)."""
from __future__ import annotations

from ..py.errors import PriorSwapError
from ..py.insight import last_run, mark
from ..py.insight_plot import plot_run

CATEGORY = "sampling/prior_swap"


class PriorSwapInsight:
    """Mark a prior-swapped MODEL so that sampling records, per step, how far the fine-tune's uncond drifts."""

    DESCRIPTION = ("Shows where in sampling the fine-tune's own unconditional prediction and the prior's disagree. "
                   "Put it after Prior Swap CFG (or before a Prior Swap guider). Each step records sigma, the drift "
                   "||u_ft − u_prior|| / ||u_ft|| and the guidance magnitudes ||c − u_ft|| and ||c − u_prior||; the "
                   "curve is drawn on this node while sampling runs, and Prior Swap Insight Plot turns it into an "
                   "image. Costs one extra uncond forward of the fine-tune per step (batched with its cond, as "
                   "stock CFG does); the image is the same as without this node.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The fine-tune as patched by Prior Swap CFG (or the model you give a "
                                           "Prior Swap guider). It is cloned, not changed."}),
        }, "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The same model, measured while it samples. Connect to the KSampler (and to Prior Swap "
                       "Insight Plot).",)
    FUNCTION = "mark"
    CATEGORY = CATEGORY

    def mark(self, model, unique_id=None):
        return (mark(model, unique_id),)


class PriorSwapInsightPlot:
    """The last measured run of a PriorSwapInsight model as an IMAGE."""

    DESCRIPTION = ("Draws the last run measured by Prior Swap Insight as an image you can save or preview: top, the "
                   "drift ||u_ft − u_prior|| / ||u_ft|| of the fine-tune's own uncond from the prior's; bottom, the "
                   "guidance magnitudes with each uncond. Connect the sampler's LATENT so the plot is drawn after "
                   "sampling.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The MODEL output of Prior Swap Insight (the one the sampler used)."}),
            "samples": ("LATENT", {"tooltip": "The sampler's output; only used so that the plot is drawn after the "
                                              "run it shows."}),
            "x_axis": (["step", "sigma"], {"tooltip": "What the x axis shows: the step number, or the noise level "
                                                      "sigma (high to low, as sampling runs)."}),
            "width": ("INT", {"default": 640, "min": 256, "max": 4096, "step": 8,
                              "tooltip": "Width of the plot image in pixels."}),
            "height": ("INT", {"default": 480, "min": 256, "max": 4096, "step": 8,
                               "tooltip": "Height of the plot image in pixels."}),
        }}

    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The plot, an image of width × height. Save it next to the output to share the curve.",)
    FUNCTION = "plot"
    CATEGORY = CATEGORY

    def plot(self, model, samples, x_axis: str, width: int, height: int):
        record = last_run(model)
        if record is None:
            raise PriorSwapError("PriorSwapInsightPlot: 'model' is not the output of Prior Swap Insight; connect "
                                 "the MODEL that Prior Swap Insight returns (the one the sampler used).")
        if not record["steps"]:
            raise PriorSwapError("PriorSwapInsightPlot: the measured model has not sampled a step with the prior yet "
                                 "(is Prior Swap CFG before Prior Swap Insight, and cfg ≠ 1?).")
        return (plot_run(record, width, height, x_axis),)


NODE_CLASS_MAPPINGS = {"PriorSwapInsight": PriorSwapInsight, "PriorSwapInsightPlot": PriorSwapInsightPlot}
NODE_DISPLAY_NAME_MAPPINGS = {"PriorSwapInsight": "Prior Swap Insight (measure per step)",
                              "PriorSwapInsightPlot": "Prior Swap Insight Plot"}
