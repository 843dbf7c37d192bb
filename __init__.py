"""Prior Swap CFG for ComfyUI: take CFG's unconditional branch from a better prior model.

Paper: "Unconditional Priors Matter! Improving Conditional Generation of Fine-Tuned Diffusion Models"
(arXiv 2503.20240), Eq. 7: eps = eps_prior(x, ∅) + γ · (eps_ft(x, c) − eps_prior(x, ∅)).
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./js"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
