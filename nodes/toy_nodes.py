"""Nodes of the toy pair (py/toy_pair.py): the small base/fine-tune pair trained by this project."""
from __future__ import annotations

from comfy_api.latest import io

from ..py.toy_pair import CLASSES, EMPTY, load_toy_model, toy_conditioning
from .common import CATEGORY as PACK_CATEGORY, choice

CATEGORY = f"{PACK_CATEGORY}/toy pair"
# Added with the edit model (#19), after the description and tooltip the V1 nodes had:
EDIT_DESCRIPTION = (" 'edit' is an InstructPix2Pix-style fine-tune of the base: give it the source image through "
                    "InstructPixToPixConditioning and 'make it a <shape>' (a shape name) as the condition, and sample "
                    "it with Dual CFG Guider or Prior Swap Dual CFG Guider.")
EDIT_TOOLTIP = " edit: the edit model, for the dual guiders."
TOY_MODELS = ["finetune", "base", "edit"]


class PriorSwapToyModelLoader(io.ComfyNode):
    """Load one model of the toy pair shipped with the pack."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PriorSwapToyModelLoader",
            display_name="Load Toy Pair Model (Prior Swap)",
            category=CATEGORY,
            description=("Loads the pack's toy pair, trained here on 16×16 coloured shapes: 'base' is an "
                         "unconditional model (use it as the prior), 'finetune' a class-conditional fine-tune of it "
                         "trained with CFG dropout on a fraction of the base's data. Pixel space: decode with Load "
                         "VAE → pixel_space, start from Empty Chroma Radiance Latent Image at 16×16." + EDIT_DESCRIPTION),
            inputs=[io.Combo.Input("model", options=TOY_MODELS,
                                   tooltip="finetune: the conditional model you sample; base: its unconditional "
                                           "prior." + EDIT_TOOLTIP)],
            # The output is named "model" like the input; V3 ids must differ, so only the display name says it.
            outputs=[io.Model.Output(display_name="model", tooltip="The toy diffusion model (ComfyUI's UNetModel, "
                                                                   "ε-prediction, pixel space).")],
        )

    @classmethod
    def validate_inputs(cls, model: str | None = None) -> bool | str:
        return choice("model", model, TOY_MODELS)

    @classmethod
    def execute(cls, model: str) -> io.NodeOutput:
        return io.NodeOutput(load_toy_model(model))


class PriorSwapToyCondition(io.ComfyNode):
    """The toy pair's conditioning: which shape to draw (or ∅)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PriorSwapToyCondition",
            display_name="Toy Pair Condition (Prior Swap)",
            category=CATEGORY,
            description=("Conditioning for the toy pair, the way a text encoder makes it for a real model. One shape, "
                         "or a comma-separated list: a latent batch cycles through the list. 'empty' is ∅, the "
                         "unconditional condition (use it as the negative and as the prior's negative)."),
            inputs=[io.String.Input("shapes", default="disk", multiline=False,
                                    tooltip=f"One of: {', '.join(CLASSES)}, or {EMPTY}. A comma-separated list makes "
                                            "a batch of conditions.")],
            outputs=[io.Conditioning.Output(display_name="conditioning",
                                            tooltip="Cross-attention conditioning of the toy pair.")],
        )

    @classmethod
    def execute(cls, shapes: str) -> io.NodeOutput:
        return io.NodeOutput(toy_conditioning(shapes))


NODES = [PriorSwapToyModelLoader, PriorSwapToyCondition]
