"""Nodes that make a PRIOR: from a checkpoint file, or from a MODEL and its conditioning."""
from __future__ import annotations

import folder_paths
from comfy_api.latest import io

from ..py.prior import WEIGHT_DTYPES, load_prior_checkpoint_by_name, make_prior
from .common import CATEGORY, Prior, choice


class PriorCheckpointLoader(io.ComfyNode):
    """Load a checkpoint to serve as the prior (its own text encoder encodes its negative prompt)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PriorCheckpointLoader",
            display_name="Load Prior Checkpoint",
            category=CATEGORY,
            description=("Loads a checkpoint as the PRIOR whose unconditional prediction replaces the fine-tune's "
                         "in CFG (paper Eq. 7). Use the fine-tune's base model (e.g. SD1.5 for an SD1.5 fine-tune) "
                         "or another model of the same latent space (SD2.1 for SD1.5 fine-tunes)."),
            inputs=[
                io.Combo.Input("ckpt_name", options=folder_paths.get_filename_list("checkpoints"),
                               tooltip="The prior checkpoint, e.g. the base model your fine-tune was trained from."),
                io.String.Input("negative_prompt", default="", multiline=True,
                                tooltip="The prior's unconditional prompt, encoded by the prior's own CLIP. Leave "
                                        "empty for the paper's setting (the empty prompt ∅); a negative prompt works "
                                        "here as in stock CFG."),
                io.Combo.Input("weight_dtype", options=list(WEIGHT_DTYPES), default="default", optional=True,
                               tooltip="How the prior's weights are stored, as in Load Diffusion Model (UNETLoader): "
                                       "default keeps the checkpoint's precision; fp8_e4m3fn / fp8_e5m2 store them in "
                                       "8 bits (half the memory of fp16) and cast them to the compute dtype at use; "
                                       "fp8_e4m3fn_fast also uses fp8 matrix multiplication where the GPU has it. fp8 "
                                       "lets the fine-tune and the prior fit together on a smaller card, but rounds the "
                                       "prior's weights: its cost in quality is in docs/performance.md."),
            ],
            outputs=[
                Prior.Output(display_name="prior", tooltip="The prior with its encoded negative prompt; connect it "
                                                           "to PriorSwapCFG or a guider."),
                io.Model.Output(display_name="model", tooltip="The prior's diffusion model, for your own patches "
                                                              "(then rebuild the prior with PriorFromModel)."),
                io.Clip.Output(display_name="clip", tooltip="The prior's text encoder."),
            ],
        )

    @classmethod
    def validate_inputs(cls, ckpt_name: str | None = None, weight_dtype: str | None = None) -> bool | str:
        # ComfyUI 0.3.75 checks a V1 combo's value against its list but not a V3 one's: refuse a name that is not
        # in the checkpoints folder (a typo, '../..', an absolute path) before the prompt runs, as it did for V1.
        # (A linked input has no value here: None, not checked, as in V1.)
        if ckpt_name is not None and ckpt_name not in folder_paths.get_filename_list("checkpoints"):
            return f"'{ckpt_name}' is not in the checkpoints folder list. Refresh (press R) and pick one from the list."
        return choice("weight_dtype", weight_dtype, WEIGHT_DTYPES)

    @classmethod
    def execute(cls, ckpt_name: str, negative_prompt: str, weight_dtype: str = "default") -> io.NodeOutput:
        return io.NodeOutput(*load_prior_checkpoint_by_name(ckpt_name, negative_prompt, weight_dtype))


class PriorFromModel(io.ComfyNode):
    """Make a PRIOR from a MODEL you already loaded (and patched) and its negative conditioning."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PriorFromModel",
            display_name="Prior From Model",
            category=CATEGORY,
            description=("Turns any MODEL into a PRIOR, with the negative conditioning encoded by that model's own "
                         "CLIP. Use it for priors with LoRAs, ModelSamplingDiscrete (v-prediction) or other patches, "
                         "or for a prior stored in fp8: Load Diffusion Model (UNETLoader) with weight_dtype "
                         "fp8_e4m3fn/fp8_e5m2 gives a MODEL this node accepts as it is."),
            inputs=[
                io.Model.Input("model", tooltip="The prior's diffusion model (the base model, or another one sharing "
                                                "the fine-tune's latent space). A MODEL loaded with weight_dtype fp8 "
                                                "(Load Diffusion Model) works as it is: half the memory of fp16."),
                io.Conditioning.Input("negative", tooltip="The prior's unconditional/negative conditioning, encoded by "
                                                          "the prior's own CLIP (an empty prompt is the paper's ∅)."),
            ],
            outputs=[Prior.Output(display_name="prior",
                                  tooltip="The prior; connect it to PriorSwapCFG or a prior-swap guider.")],
        )

    @classmethod
    def execute(cls, model, negative) -> io.NodeOutput:
        return io.NodeOutput(make_prior(model, negative))


NODES = [PriorCheckpointLoader, PriorFromModel]
