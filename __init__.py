"""Prior Swap CFG for ComfyUI: take CFG's unconditional branch from a better prior model.

Paper: "Unconditional Priors Matter! Improving Conditional Generation of Fine-Tuned Diffusion Models"
(arXiv 2503.20240), Eq. 7: eps = eps_prior(x, ∅) + γ · (eps_ft(x, c) − eps_prior(x, ∅)).

The nodes use ComfyUI's V3 schema (``comfy_api.latest``, ComfyUI 0.3.75 or newer); ComfyUI enters the
pack through ``comfy_entrypoint``.
"""
from .nodes import PriorSwapExtension

WEB_DIRECTORY = "./js"


async def comfy_entrypoint() -> PriorSwapExtension:
    return PriorSwapExtension()


__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
