"""GUIDER objects for SamplerCustomAdvanced: ComfyUI's own guiders, sampling a prior-swapped MODEL."""
from __future__ import annotations

from typing import Any

from .composition import check_guider_negative
from .errors import PriorSwapError
from .prior import Prior
from .routing import apply_prior_swap
from .schedule import SwapSchedule


def _model_negative(model: Any, prior: Prior, negative: list | None, schedule: SwapSchedule, node: str) -> list:
    """The fine-tune's own negative: needed only where the schedule still uses the model's uncond."""
    if negative is not None:
        return negative
    if schedule.full:
        # The slot is always filled by the prior; the prior's conditioning only marks it.
        return prior.negative
    raise PriorSwapError(
        f"{node}: prior_weight < 1 or a partial start/end range uses the model's own uncond, so connect "
        "'negative' (encoded by the model's own CLIP).")


def prior_swap_guider(model: Any, prior: Prior, positive: list, negative: list | None, cfg: float,
                      schedule: SwapSchedule) -> Any:
    """A CFGGuider over a prior-swapped clone of ``model`` (Eq. 7)."""
    import comfy.samplers

    node = "PriorSwapGuider"
    patched = apply_prior_swap(model, prior, schedule, node)  # checks the prior and the schedule first
    check_guider_negative(model, negative, node)
    guider = comfy.samplers.CFGGuider(patched)
    guider.set_conds(positive, _model_negative(model, prior, negative, schedule, node))
    guider.set_cfg(cfg)
    return guider


def prior_swap_dual_guider(model: Any, prior: Prior, cond1: list, cond2: list, negative: list,
                           cfg_conds: float, cfg_cond2_negative: float, style: str,
                           schedule: SwapSchedule) -> Any:
    """ComfyUI's DualCFGGuider over a prior-swapped model: only the (∅, ∅) term comes from the prior.

    Term order is the host's: ``negative`` = ε(∅, ∅), ``cond2`` = ε(c_I, ∅), ``cond1`` = ε(c_I, c_T);
    "regular": neg + cfg_cond2_negative·(cond2 − neg) + cfg_conds·(cond1 − cond2) — paper Eq. 9 with
    γ_I = cfg_cond2_negative and γ_T = cfg_conds.
    """
    try:
        from comfy_extras.nodes_custom_sampler import Guider_DualCFG
    except ImportError as e:  # pragma: no cover - every ComfyUI since 2024 has it
        raise PriorSwapError("PriorSwapDualCFGGuider needs ComfyUI's DualCFGGuider (comfy_extras).") from e

    guider = Guider_DualCFG(apply_prior_swap(model, prior, schedule, "PriorSwapDualCFGGuider"))
    guider.set_conds(cond1, cond2, negative)
    guider.set_cfg(cfg_conds, cfg_cond2_negative, nested=(style == "nested"))
    return guider
