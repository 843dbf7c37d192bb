"""Nodes of the toy pair (py/toy_pair.py): the small base/fine-tune pair trained by this project."""
from __future__ import annotations

from ..py.toy_pair import CLASSES, EMPTY, load_toy_model, toy_conditioning

CATEGORY = "sampling/prior_swap/toy pair"


class PriorSwapToyModelLoader:
    """Load one model of the toy pair shipped with the pack."""

    DESCRIPTION = ("Loads the pack's toy pair, trained here on 16×16 coloured shapes: 'base' is an unconditional "
                   "model (use it as the prior), 'finetune' a class-conditional fine-tune of it trained with CFG "
                   "dropout on a fraction of the base's data. Pixel space: decode with Load VAE → pixel_space, start from Empty "
                   "Chroma Radiance Latent Image at 16×16.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (["finetune", "base"], {
                "tooltip": "finetune: the conditional model you sample; base: its unconditional prior."}),
        }}

    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The toy diffusion model (ComfyUI's UNetModel, ε-prediction, pixel space).",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self, model: str):
        return (load_toy_model(model),)


class PriorSwapToyCondition:
    """The toy pair's conditioning: which shape to draw (or ∅)."""

    DESCRIPTION = ("Conditioning for the toy pair, the way a text encoder makes it for a real model. One shape, "
                   "or a comma-separated list: a latent batch cycles through the list. 'empty' is ∅, the "
                   "unconditional condition (use it as the negative and as the prior's negative).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "shapes": ("STRING", {
                "default": "disk", "multiline": False,
                "tooltip": f"One of: {', '.join(CLASSES)}, or {EMPTY}. A comma-separated list makes a batch "
                           "of conditions."}),
        }}

    RETURN_TYPES = ("CONDITIONING",)
    RETURN_NAMES = ("conditioning",)
    OUTPUT_TOOLTIPS = ("Cross-attention conditioning of the toy pair.",)
    FUNCTION = "encode"
    CATEGORY = CATEGORY

    def encode(self, shapes: str):
        return (toy_conditioning(shapes),)


NODE_CLASS_MAPPINGS = {
    "PriorSwapToyModelLoader": PriorSwapToyModelLoader,
    "PriorSwapToyCondition": PriorSwapToyCondition,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "PriorSwapToyModelLoader": "Load Toy Pair Model (Prior Swap)",
    "PriorSwapToyCondition": "Toy Pair Condition (Prior Swap)",
}
