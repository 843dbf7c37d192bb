"""PriorSwapCFG (a MODEL patch for any sampler) and the prior-swap guiders for SamplerCustomAdvanced."""
from __future__ import annotations

from comfy_api.latest import io

from ..py.guiders import prior_swap_dual_guider, prior_swap_guider
from ..py.routing import apply_prior_swap
from ..py.schedule import SwapSchedule
from .common import CATEGORY, Prior, choice


def _prior_input() -> io.Input:
    return Prior.Input("prior", tooltip="The prior that supplies the unconditional prediction (from "
                                        "Load Prior Checkpoint or Prior From Model).")


def _schedule_inputs() -> list[io.Input]:
    return [
        io.Float.Input("prior_weight", default=1.0, min=0.0, max=1.0, step=0.05,
                       tooltip="How much of the uncond comes from the prior: 1 = the paper's Eq. 7, 0 = stock CFG, "
                               "in between blends the model's own uncond with the prior's."),
        io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01,
                       tooltip="Where in sampling (0 = first step) the prior starts supplying the uncond."),
        io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01,
                       tooltip="Where in sampling (1 = last step) the prior stops; outside the range the model's "
                               "own uncond is used."),
    ]


def _guidance(name: str, default: float, tooltip: str) -> io.Input:
    return io.Float.Input(name, default=default, min=0.0, max=100.0, step=0.1, round=0.01, tooltip=tooltip)


STYLES = ["regular", "nested"]  # the host DualCFGGuider's


def _schedule(prior_weight: float, start_percent: float, end_percent: float) -> SwapSchedule:
    return SwapSchedule(prior_weight=prior_weight, start_percent=start_percent, end_percent=end_percent)


class PriorSwapCFG(io.ComfyNode):
    """Patch a MODEL so that CFG's negative branch is evaluated by the prior (works with the stock KSampler)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PriorSwapCFG",
            display_name="Prior Swap CFG",
            category=CATEGORY,
            description=("Unconditional Priors Matter (Eq. 7): CFG takes its unconditional/negative prediction from "
                         "the prior instead of the fine-tuned model. Connect the output to any KSampler; the "
                         "KSampler's cfg is γ. Pre/post-CFG patches (RescaleCFG, APG, CFGZero*…) keep working."),
            inputs=[
                io.Model.Input("model", tooltip="The fine-tuned model you sample (its conditional prediction is kept)."),
                _prior_input(),
                *_schedule_inputs(),
            ],
            outputs=[io.Model.Output(tooltip="The fine-tune, patched to take its uncond from the prior. Sample it "
                                             "with any KSampler.")],
        )

    @classmethod
    def execute(cls, model, prior, prior_weight: float, start_percent: float, end_percent: float) -> io.NodeOutput:
        return io.NodeOutput(apply_prior_swap(model, prior, _schedule(prior_weight, start_percent, end_percent)))


class PriorSwapGuider(io.ComfyNode):
    """CFG guider whose uncond comes from the prior, for SamplerCustomAdvanced."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PriorSwapGuider",
            display_name="Prior Swap Guider",
            category=CATEGORY,
            description=("A CFG GUIDER for SamplerCustomAdvanced with the unconditional prediction from the prior "
                         "(paper Eq. 7). 'negative' is only needed where the model's own uncond is still used."),
            inputs=[
                io.Model.Input("model", tooltip="The fine-tuned model (its conditional prediction is kept)."),
                _prior_input(),
                io.Conditioning.Input("positive", tooltip="The model's positive conditioning."),
                _guidance("cfg", 7.5, "Guidance scale γ of Eq. 7."),
                *_schedule_inputs(),
                io.Conditioning.Input("negative", optional=True,
                                      tooltip="The model's own negative conditioning; used only where prior_weight "
                                              "< 1 or outside start/end."),
            ],
            outputs=[io.Guider.Output(tooltip="Connect to SamplerCustomAdvanced.")],
        )

    @classmethod
    def execute(cls, model, prior, positive, cfg: float, prior_weight: float, start_percent: float,
                end_percent: float, negative=None) -> io.NodeOutput:
        schedule = _schedule(prior_weight, start_percent, end_percent)
        return io.NodeOutput(prior_swap_guider(model, prior, positive, negative, cfg, schedule))


class PriorSwapDualCFGGuider(io.ComfyNode):
    """DualCFGGuider (InstructPix2Pix-style) whose fully unconditional term comes from the prior (Eq. 8/9)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PriorSwapDualCFGGuider",
            display_name="Prior Swap Dual CFG Guider (IP2P)",
            category=CATEGORY,
            description=("ComfyUI's DualCFGGuider with the (no image, no text) term from the prior, paper Eq. 9: "
                         "prior(∅) + γ_I·(ft(image, ∅) − prior(∅)) + γ_T·(ft(image, text) − ft(image, ∅)). "
                         "Paper defaults for InstructPix2Pix: cfg_conds (γ_T) 7.5, cfg_cond2_negative (γ_I) 1.5."),
            inputs=[
                io.Model.Input("model", tooltip="The dual-condition fine-tune, e.g. InstructPix2Pix."),
                _prior_input(),
                io.Conditioning.Input("cond1", tooltip="Image + text: the positive output of "
                                                       "InstructPixToPixConditioning."),
                io.Conditioning.Input("cond2", tooltip="Image, no text: the negative output of "
                                                       "InstructPixToPixConditioning."),
                io.Conditioning.Input("negative", tooltip="No image, no text: the fine-tune's own (∅, ∅) term, "
                                                          "replaced by the prior where prior_weight is 1."),
                _guidance("cfg_conds", 7.5, "γ_T: text guidance, cond1 against cond2 (paper default 7.5)."),
                _guidance("cfg_cond2_negative", 1.5, "γ_I: image guidance, cond2 against the prior's uncond "
                                                     "(paper default 1.5)."),
                io.Combo.Input("style", options=STYLES,
                               tooltip="The host DualCFGGuider's formula; 'regular' is the paper's Eq. 9."),
                *_schedule_inputs(),
            ],
            outputs=[io.Guider.Output(tooltip="Connect to SamplerCustomAdvanced.")],
        )

    @classmethod
    def validate_inputs(cls, style: str | None = None) -> bool | str:
        return choice("style", style, STYLES)

    @classmethod
    def execute(cls, model, prior, cond1, cond2, negative, cfg_conds: float, cfg_cond2_negative: float,
                style: str, prior_weight: float, start_percent: float, end_percent: float) -> io.NodeOutput:
        schedule = _schedule(prior_weight, start_percent, end_percent)
        return io.NodeOutput(prior_swap_dual_guider(model, prior, cond1, cond2, negative, cfg_conds,
                                                    cfg_cond2_negative, style, schedule))


NODES = [PriorSwapCFG, PriorSwapGuider, PriorSwapDualCFGGuider]
