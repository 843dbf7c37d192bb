"""PriorSwapCFG (a MODEL patch for any sampler) and the prior-swap guiders for SamplerCustomAdvanced."""
from __future__ import annotations

from ..py.guiders import prior_swap_dual_guider, prior_swap_guider
from ..py.prior import PRIOR_TYPE
from ..py.routing import SwapSchedule, apply_prior_swap

CATEGORY = "sampling/prior_swap"

PRIOR_INPUT = (PRIOR_TYPE, {"tooltip": "The prior that supplies the unconditional prediction (from "
                                       "Load Prior Checkpoint or Prior From Model)."})
SCHEDULE_INPUTS = {
    "prior_weight": ("FLOAT", {
        "default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05,
        "tooltip": "How much of the uncond comes from the prior: 1 = the paper's Eq. 7, 0 = stock CFG, "
                   "in between blends the model's own uncond with the prior's."}),
    "start_percent": ("FLOAT", {
        "default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01,
        "tooltip": "Where in sampling (0 = first step) the prior starts supplying the uncond."}),
    "end_percent": ("FLOAT", {
        "default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
        "tooltip": "Where in sampling (1 = last step) the prior stops; outside the range the model's own "
                   "uncond is used."}),
}


def _schedule(prior_weight: float, start_percent: float, end_percent: float) -> SwapSchedule:
    return SwapSchedule(prior_weight=prior_weight, start_percent=start_percent, end_percent=end_percent)


class PriorSwapCFG:
    """Patch a MODEL so that CFG's negative branch is evaluated by the prior (works with the stock KSampler)."""

    DESCRIPTION = ("Unconditional Priors Matter (Eq. 7): CFG takes its unconditional/negative prediction from "
                   "the prior instead of the fine-tuned model. Connect the output to any KSampler; the "
                   "KSampler's cfg is γ. Pre/post-CFG patches (RescaleCFG, APG, CFGZero*…) keep working.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The fine-tuned model you sample (its conditional prediction is kept)."}),
            "prior": PRIOR_INPUT,
            **SCHEDULE_INPUTS,
        }}

    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The fine-tune, patched to take its uncond from the prior. Sample it with any KSampler.",)
    FUNCTION = "patch"
    CATEGORY = CATEGORY

    def patch(self, model, prior, prior_weight: float, start_percent: float, end_percent: float):
        return (apply_prior_swap(model, prior, _schedule(prior_weight, start_percent, end_percent)),)


class PriorSwapGuider:
    """CFG guider whose uncond comes from the prior, for SamplerCustomAdvanced."""

    DESCRIPTION = ("A CFG GUIDER for SamplerCustomAdvanced with the unconditional prediction from the prior "
                   "(paper Eq. 7). 'negative' is only needed where the model's own uncond is still used.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The fine-tuned model (its conditional prediction is kept)."}),
                "prior": PRIOR_INPUT,
                "positive": ("CONDITIONING", {"tooltip": "The model's positive conditioning."}),
                "cfg": ("FLOAT", {"default": 7.5, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                                  "tooltip": "Guidance scale γ of Eq. 7."}),
                **SCHEDULE_INPUTS,
            },
            "optional": {
                "negative": ("CONDITIONING", {"tooltip": "The model's own negative conditioning; used only where "
                                                         "prior_weight < 1 or outside start/end."}),
            },
        }

    RETURN_TYPES = ("GUIDER",)
    OUTPUT_TOOLTIPS = ("Connect to SamplerCustomAdvanced.",)
    FUNCTION = "get_guider"
    CATEGORY = CATEGORY

    def get_guider(self, model, prior, positive, cfg: float, prior_weight: float, start_percent: float,
                   end_percent: float, negative=None):
        schedule = _schedule(prior_weight, start_percent, end_percent)
        return (prior_swap_guider(model, prior, positive, negative, cfg, schedule),)


class PriorSwapDualCFGGuider:
    """DualCFGGuider (InstructPix2Pix-style) whose fully unconditional term comes from the prior (Eq. 8/9)."""

    DESCRIPTION = ("ComfyUI's DualCFGGuider with the (no image, no text) term from the prior, paper Eq. 9: "
                   "prior(∅) + γ_I·(ft(image, ∅) − prior(∅)) + γ_T·(ft(image, text) − ft(image, ∅)). "
                   "Paper defaults for InstructPix2Pix: cfg_conds (γ_T) 7.5, cfg_cond2_negative (γ_I) 1.5.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The dual-condition fine-tune, e.g. InstructPix2Pix."}),
            "prior": PRIOR_INPUT,
            "cond1": ("CONDITIONING", {"tooltip": "Image + text: the positive output of InstructPixToPixConditioning."}),
            "cond2": ("CONDITIONING", {"tooltip": "Image, no text: the negative output of InstructPixToPixConditioning."}),
            "negative": ("CONDITIONING", {"tooltip": "No image, no text: the fine-tune's own (∅, ∅) term, replaced by "
                                                     "the prior where prior_weight is 1."}),
            "cfg_conds": ("FLOAT", {"default": 7.5, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                                    "tooltip": "γ_T: text guidance, cond1 against cond2 (paper default 7.5)."}),
            "cfg_cond2_negative": ("FLOAT", {"default": 1.5, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                                             "tooltip": "γ_I: image guidance, cond2 against the prior's uncond "
                                                        "(paper default 1.5)."}),
            "style": (["regular", "nested"], {"tooltip": "The host DualCFGGuider's formula; 'regular' is the "
                                                         "paper's Eq. 9."}),
            **SCHEDULE_INPUTS,
        }}

    RETURN_TYPES = ("GUIDER",)
    OUTPUT_TOOLTIPS = ("Connect to SamplerCustomAdvanced.",)
    FUNCTION = "get_guider"
    CATEGORY = CATEGORY

    def get_guider(self, model, prior, cond1, cond2, negative, cfg_conds: float, cfg_cond2_negative: float,
                   style: str, prior_weight: float, start_percent: float, end_percent: float):
        schedule = _schedule(prior_weight, start_percent, end_percent)
        return (prior_swap_dual_guider(model, prior, cond1, cond2, negative, cfg_conds, cfg_cond2_negative,
                                       style, schedule),)


NODE_CLASS_MAPPINGS = {
    "PriorSwapCFG": PriorSwapCFG,
    "PriorSwapGuider": PriorSwapGuider,
    "PriorSwapDualCFGGuider": PriorSwapDualCFGGuider,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "PriorSwapCFG": "Prior Swap CFG",
    "PriorSwapGuider": "Prior Swap Guider",
    "PriorSwapDualCFGGuider": "Prior Swap Dual CFG Guider (IP2P)",
}
