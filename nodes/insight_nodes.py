"""PriorSwapInsight (opt-in per-step measurement of what the prior changes) and its plot node (issue #11)."""
from __future__ import annotations

from comfy_api.latest import io

from ..py.errors import PriorSwapError
from ..py.insight import last_run, mark
from ..py.insight_plot import plot_run
from .common import CATEGORY, choice


class PriorSwapInsight(io.ComfyNode):
    """Mark a prior-swapped MODEL so that sampling records, per step, how far the fine-tune's uncond drifts."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PriorSwapInsight",
            display_name="Prior Swap Insight (measure per step)",
            category=CATEGORY,
            description=("Shows where in sampling the fine-tune's own unconditional prediction and the prior's "
                         "disagree. Put it after Prior Swap CFG (or before a Prior Swap guider). Each step records "
                         "sigma, the drift ||u_ft − u_prior|| / ||u_ft|| and the guidance magnitudes ||c − u_ft|| and "
                         "||c − u_prior||; the curve is drawn on this node while sampling runs, and Prior Swap Insight "
                         "Plot turns it into an image. Costs one extra uncond forward of the fine-tune per step "
                         "(batched with its cond, as stock CFG does); the image is the same as without this node."),
            inputs=[io.Model.Input("model", tooltip="The fine-tune as patched by Prior Swap CFG (or the model you give "
                                                    "a Prior Swap guider). It is cloned, not changed.")],
            outputs=[io.Model.Output(tooltip="The same model, measured while it samples. Connect to the KSampler (and "
                                             "to Prior Swap Insight Plot).")],
            # The node id the frontend draws the live curve on (insight messages carry it).
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model) -> io.NodeOutput:
        # cls.hidden is filled by ComfyUI's executor; a direct call (scripts, tests) has no node id.
        node_id = cls.hidden.unique_id if cls.hidden is not None else None
        return io.NodeOutput(mark(model, node_id))


X_AXES = ["step", "sigma"]


class PriorSwapInsightPlot(io.ComfyNode):
    """The last measured run of a PriorSwapInsight model as an IMAGE."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PriorSwapInsightPlot",
            display_name="Prior Swap Insight Plot",
            category=CATEGORY,
            description=("Draws the last run measured by Prior Swap Insight as an image you can save or preview: top, "
                         "the drift ||u_ft − u_prior|| / ||u_ft|| of the fine-tune's own uncond from the prior's; "
                         "bottom, the guidance magnitudes with each uncond. Connect the sampler's LATENT so the plot "
                         "is drawn after sampling."),
            inputs=[
                io.Model.Input("model", tooltip="The MODEL output of Prior Swap Insight (the one the sampler used)."),
                io.Latent.Input("samples", tooltip="The sampler's output; only used so that the plot is drawn after "
                                                   "the run it shows."),
                io.Combo.Input("x_axis", options=X_AXES,
                               tooltip="What the x axis shows: the step number, or the noise level sigma (high to "
                                       "low, as sampling runs)."),
                io.Int.Input("width", default=640, min=256, max=4096, step=8,
                             tooltip="Width of the plot image in pixels."),
                io.Int.Input("height", default=480, min=256, max=4096, step=8,
                             tooltip="Height of the plot image in pixels."),
            ],
            outputs=[io.Image.Output(tooltip="The plot, an image of width × height. Save it next to the output to "
                                             "share the curve.")],
        )

    @classmethod
    def validate_inputs(cls, x_axis: str | None = None) -> bool | str:
        return choice("x_axis", x_axis, X_AXES)

    @classmethod
    def execute(cls, model, samples, x_axis: str, width: int, height: int) -> io.NodeOutput:
        record = last_run(model)
        if record is None:
            raise PriorSwapError("PriorSwapInsightPlot: 'model' is not the output of Prior Swap Insight; connect "
                                 "the MODEL that Prior Swap Insight returns (the one the sampler used).")
        if not record["steps"]:
            raise PriorSwapError("PriorSwapInsightPlot: the measured model has not sampled a step with the prior yet "
                                 "(is Prior Swap CFG before Prior Swap Insight, and cfg ≠ 1?).")
        return io.NodeOutput(plot_run(record, width, height, x_axis))


NODES = [PriorSwapInsight, PriorSwapInsightPlot]
