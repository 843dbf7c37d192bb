"""How the prior swap composes with the host's other guidance and sampling nodes (issue #16).

``docs/compatibility.md`` is the table: one row per host node, what it means together with the swap and the
test that holds the code to it. This module is the code side of that table, called from ``routing.py``:

* :func:`find_slot` — which cond list of a ``calc_cond_batch`` call the prior supplies. The guider's
  ``negative`` (CFGGuider, DualCFGGuider: the (∅, ∅) term), but PerpNegGuider's ``empty_negative_prompt``
  (its ∅ base; the negative prompt stays the fine-tune's). Lists are recognised by identity or by the
  ``uuid`` of their cond dicts, which survives the host's copies (``CFGGuider.sample``, ``process_conds`` and
  the context-window handler's per-window copies).
* :func:`check_run` — refusals raised when sampling starts (OUTER_SAMPLE), before the first step, for the
  nodes whose meaning with a separate prior is not defined here: Self-Attention Guidance, the deprecated
  PerpNeg node, SkipLayerGuidanceDiTSimple with a prior of another architecture.
* :func:`release_shared_hooks`, :func:`prior_call_options` — per prior call: a hook LoRA that the fine-tune's
  conds patched into a BaseModel the prior shares is taken off first, and the blocks another node skips in
  this call's uncond (SkipLayerGuidanceDiTSimple's ``patches_replace["dit"]``) are skipped in the prior too.
"""
from __future__ import annotations

import logging
import re
from typing import Any

from .errors import PriorSwapError

log = logging.getLogger("prior_swap_cfg")

NODE = "Prior Swap CFG"

# The host nodes recognised below, by the class their closures were defined in and that class's module file.
# ComfyUI imports comfy_extras files under their path without ".py" (".../comfy_extras/nodes_sag"), a plain
# import under "comfy_extras.nodes_sag": compare the last part.
_SAG = ("nodes_sag", "SelfAttentionGuidance")
_PERPNEG = ("nodes_perpneg", "PerpNeg")
_SLG_SIMPLE = ("nodes_slg", "SkipLayerGuidanceDiTSimple")


# -- which slot the prior supplies ------------------------------------------------------------------------
def swap_key(guider: Any) -> str | None:
    """The key of the guider's conds that the prior replaces, or None when the guider has no uncond.

    PerpNegGuider (``empty_negative_prompt`` present): its ∅ base; its ``negative`` is a negative *prompt*
    that stays the fine-tune's. Every other guider: ``negative`` (CFGGuider, DualCFGGuider's (∅, ∅)).
    BasicGuider has neither: the prior has no role there (Eq. 7 at γ = 1 is the fine-tune's cond).
    """
    conds = getattr(guider, "conds", None) or {}
    for key in ("empty_negative_prompt", "negative"):
        if conds.get(key):
            return key
    return None


def _uuids(cond_list: list) -> set:
    return {c.get("uuid") for c in cond_list if isinstance(c, dict)} - {None}


def find_slot(guider: Any, conds: list) -> int | None:
    """Index of the list the prior supplies in a ``calc_cond_batch`` call's ``conds``, or None.

    By identity first; else by the ``uuid`` every cond dict gets from ``convert_cond`` (kept by every copy
    the host makes: context windows hand over per-window copies of the dicts). A list counts only when all
    its dicts belong to the target list, so the positive or a middle cond is never taken for it.
    """
    key = swap_key(guider)
    if key is None:
        return None
    target = guider.conds[key]
    for i, c in enumerate(conds):
        if c is target:
            return i
    ids = _uuids(target)
    if ids:
        for i, c in enumerate(conds):
            if c and all(isinstance(x, dict) and x.get("uuid") in ids for x in c):
                return i
    # Another pack may rebuild the list from the guider's very dicts (no uuid: an older host).
    objects = {id(c) for c in target}
    for i, c in enumerate(conds):
        if c and all(id(x) in objects for x in c):
            return i
    return None


# -- refusals before sampling ------------------------------------------------------------------------------
def _defined_by(fn: Any, node: tuple[str, str]) -> bool:
    """Whether ``fn`` is a closure made by the host node ``node`` = (module file, class name)."""
    module = re.split(r"[./\\]", getattr(fn, "__module__", "") or "")[-1]
    owner = (getattr(fn, "__qualname__", "") or "").split(".", 1)[0]
    return module == node[0] and owner == node[1]


def _functions(model_options: dict, key: str) -> list:
    value = model_options.get(key)
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _replaces(model_options: dict) -> dict:
    return (model_options.get("transformer_options") or {}).get("patches_replace") or {}


def uses_sag(model_options: dict) -> bool:
    """Self-Attention Guidance: its post-CFG function or its attn1 recorder is on the model."""
    if any(_defined_by(f, _SAG) for f in _functions(model_options, "sampler_post_cfg_function")):
        return True
    return any(_defined_by(f, _SAG) for f in (_replaces(model_options).get("attn1") or {}).values())


def uses_deprecated_perpneg(model_options: dict) -> bool:
    return any(_defined_by(f, _PERPNEG) for f in _functions(model_options, "sampler_cfg_function"))


def uses_slg_simple(model_options: dict) -> bool:
    return any(_defined_by(f, _SLG_SIMPLE) for f in _functions(model_options, "sampler_calc_cond_batch_function"))


def architecture(patcher: Any) -> str:
    """The class of a ModelPatcher's diffusion network (UNetModel, MMDiT, Flux…)."""
    net = getattr(getattr(patcher, "model", None), "diffusion_model", None)
    return type(net).__name__


def check_run(guider: Any, prior: Any, prior_weight: float) -> None:
    """Refuse, when sampling starts, a host node whose combination with the swap has no defined meaning here.

    ``guider``: the CFGGuider (or subclass) about to sample; ``prior``: the prior's ModelPatcher.
    """
    options = guider.model_options
    guider_name = type(guider).__name__
    if swap_key(guider) is None:
        log.warning("PriorSwapCFG: %s has no negative/uncond conditioning (e.g. BasicGuider: plain conditional "
                    "sampling, which is Eq. 7 at cfg 1), so the prior is not used.", guider_name)
        return
    if prior_weight <= 0.0:
        return  # stock CFG: every other node behaves as without the pack
    if uses_sag(options):
        raise PriorSwapError(
            "Self-Attention Guidance cannot be combined with Prior Swap CFG: SAG records the attention of the "
            "model's own uncond pass and re-runs that pass on a blurred image, but with the prior swap the "
            "fine-tune no longer runs its uncond (the prior does), so SAG would have no attention map or a stale "
            "one from an earlier run. Remove Self-Attention Guidance from this model, or set Prior Swap CFG's "
            "prior_weight to 0 (stock CFG). PerturbedAttentionGuidance perturbs the conditional branch, which "
            "stays the fine-tune's, and does combine with the prior swap.")
    if uses_deprecated_perpneg(options):
        raise PriorSwapError(
            "The deprecated Perp-Neg node (PerpNeg) cannot be combined with Prior Swap CFG: it hides its own "
            "empty-prompt pass inside the CFG function, where the prior cannot supply it. Use PerpNegGuider with "
            "SamplerCustomAdvanced instead (model = Prior Swap CFG's output): the prior then supplies the empty "
            "(∅) base and the negative prompt stays the fine-tune's.")
    if uses_slg_simple(options):
        ft, pr = architecture(guider.model_patcher), architecture(prior)
        if ft != pr:
            raise PriorSwapError(
                f"SkipLayerGuidanceDiTSimple cannot be combined with this prior: it skips blocks of the uncond "
                f"pass, which the prior now evaluates, and the prior is another architecture ({pr}) than the "
                f"model ({ft}), so the same blocks do not exist in it. Pick a prior of the model's family (its "
                f"base model), or use SkipLayerGuidanceDiT instead (it perturbs the conditional branch, which "
                f"stays the fine-tune's), or remove SkipLayerGuidanceDiTSimple.")


def check_guider_negative(model: Any, negative: list | None, node: str) -> None:
    """Prior Swap Guider without ``negative`` on a model measured by Prior Swap Insight: refuse.

    Insight evaluates the fine-tune's *own* uncond beside the prior's; without ``negative`` the only
    conditioning there is the prior's, encoded by the prior's text encoder, which the fine-tune must never run.
    """
    from . import insight

    if negative is None and model.model_options.get(insight.KEY):
        raise PriorSwapError(
            f"{node}: the model comes from Prior Swap Insight, which measures the fine-tune's own uncond, so "
            "connect 'negative' (encoded by the model's own CLIP, e.g. an empty CLIPTextEncode) to the guider. "
            "Without it the fine-tune would be run on the prior's conditioning.")


# -- the prior's forward within one call -------------------------------------------------------------------
def release_shared_hooks(prior: Any, model: Any) -> None:
    """Take the fine-tune's hook LoRA off a BaseModel the prior shares, before the prior's forward.

    ``prior``: the prior's ModelPatcher; ``model``: the BaseModel of this ``calc_cond_batch`` call.
    ``_calc_cond_batch`` patches hook weights into the BaseModel in place, per hook group, through the
    sampled patcher. A prior made from the same MODEL (Prior From Model) runs on those very weights, so the
    positive's LoRA would leak into it. ``apply_hooks(None)`` restores the plain weights; the fine-tune's
    next call patches its hooks back.
    """
    if prior.model is not model:
        return
    patcher = getattr(model, "current_patcher", None)
    if patcher is not None and patcher is not prior and getattr(patcher, "current_hooks", None) is not None:
        patcher.apply_hooks(hooks=None)


def perturbation(run_options: dict, model_options: dict) -> dict:
    """``patches_replace`` entries a call's ``model_options`` adds to the run's ``run_options`` (the guider's):
    SkipLayerGuidanceDiTSimple's skips.

    Returns {kind: {block key: patch}}; empty for an ordinary call. A call that another node made with its own
    copy (``set_model_options_patch_replace``) carries new objects.
    """
    call = _replaces(model_options)
    if not call:
        return {}
    base = _replaces(run_options)
    out: dict = {}
    for kind, entries in call.items():
        known = base.get(kind) or {}
        for block, patch in (entries or {}).items():
            if known.get(block) is not patch:
                out.setdefault(kind, {})[block] = patch
    return out


def prior_call_options(guider: Any, prior: Any, prior_options: dict, model_options: dict) -> dict:
    """The prior's model options for one call: the run's ``prior_options``, plus the blocks another node skips in
    this call's uncond (``model_options``), which the prior now evaluates.

    ``guider``: the sampling guider; ``prior``: the prior's ModelPatcher. ``prior_options`` is not changed.
    """
    extra = perturbation(guider.model_options, model_options)
    if not extra:
        return prior_options
    import comfy.model_patcher

    ft, pr = architecture(guider.model_patcher), architecture(prior)
    if ft != pr:  # a node check_run does not know: refuse rather than drop its perturbation silently
        raise PriorSwapError(
            f"Prior Swap CFG: another node changes blocks of the uncond pass ({', '.join(map(str, extra))}), "
            f"which the prior now evaluates, but the prior is another architecture ({pr}) than the model ({ft}). "
            "Pick a prior of the model's family or remove that node.")
    options = dict(prior_options)  # the host's helper replaces transformer_options in the dict it is given
    for kind, entries in extra.items():
        for block, patch in entries.items():
            options = comfy.model_patcher.set_model_options_patch_replace(options, patch, kind, *block)
    return options
