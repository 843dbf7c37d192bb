"""Nodes that make a PRIOR: from a checkpoint file, or from a MODEL and its conditioning."""
from __future__ import annotations

import folder_paths

from ..py.prior import PRIOR_TYPE, load_prior_checkpoint_by_name, make_prior

CATEGORY = "sampling/prior_swap"


class PriorCheckpointLoader:
    """Load a checkpoint to serve as the prior (its own text encoder encodes its negative prompt)."""

    DESCRIPTION = ("Loads a checkpoint as the PRIOR whose unconditional prediction replaces the fine-tune's "
                   "in CFG (paper Eq. 7). Use the fine-tune's base model (e.g. SD1.5 for an SD1.5 fine-tune) "
                   "or another model of the same latent space (SD2.1 for SD1.5 fine-tunes).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "ckpt_name": (folder_paths.get_filename_list("checkpoints"), {
                "tooltip": "The prior checkpoint, e.g. the base model your fine-tune was trained from."}),
            "negative_prompt": ("STRING", {
                "default": "", "multiline": True,
                "tooltip": "The prior's unconditional prompt, encoded by the prior's own CLIP. Leave empty for the "
                           "paper's setting (the empty prompt ∅); a negative prompt works here as in stock CFG."}),
        }}

    RETURN_TYPES = (PRIOR_TYPE, "MODEL", "CLIP")
    RETURN_NAMES = ("prior", "model", "clip")
    OUTPUT_TOOLTIPS = ("The prior with its encoded negative prompt; connect it to PriorSwapCFG or a guider.",
                       "The prior's diffusion model, for your own patches (then rebuild the prior with PriorFromModel).",
                       "The prior's text encoder.")
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self, ckpt_name: str, negative_prompt: str):
        return load_prior_checkpoint_by_name(ckpt_name, negative_prompt)


class PriorFromModel:
    """Make a PRIOR from a MODEL you already loaded (and patched) and its negative conditioning."""

    DESCRIPTION = ("Turns any MODEL into a PRIOR, with the negative conditioning encoded by that model's own "
                   "CLIP. Use it for priors with LoRAs, ModelSamplingDiscrete (v-prediction) or other patches.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The prior's diffusion model (the base model, or another one sharing "
                                           "the fine-tune's latent space)."}),
            "negative": ("CONDITIONING", {"tooltip": "The prior's unconditional/negative conditioning, encoded by "
                                                     "the prior's own CLIP (an empty prompt is the paper's ∅)."}),
        }}

    RETURN_TYPES = (PRIOR_TYPE,)
    RETURN_NAMES = ("prior",)
    OUTPUT_TOOLTIPS = ("The prior; connect it to PriorSwapCFG or a prior-swap guider.",)
    FUNCTION = "make"
    CATEGORY = CATEGORY

    def make(self, model, negative):
        return (make_prior(model, negative),)


NODE_CLASS_MAPPINGS = {
    "PriorCheckpointLoader": PriorCheckpointLoader,
    "PriorFromModel": PriorFromModel,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "PriorCheckpointLoader": "Load Prior Checkpoint",
    "PriorFromModel": "Prior From Model",
}
