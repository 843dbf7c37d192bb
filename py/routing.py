"""Route the unconditional branch of CFG through a prior model, inside ComfyUI's own sampling.

How it hooks in (ComfyUI's supported extension points only, all on a clone of the MODEL):

* ``set_additional_models(KEY, [prior])``: ComfyUI loads, offloads and frees the prior together with
  the sampled model (``prepare_sampling`` → ``get_nested_additional_models``), so ``--lowvram``,
  ``/free`` and the memory estimate see it.
* an ``OUTER_SAMPLE`` wrapper opens one :class:`PriorRun` per sampling run and puts it in the run's
  (already cloned) ``model_options``.
* a ``CALC_COND_BATCH`` wrapper sees every batch of conds the guider evaluates. It recognises the
  guider's *negative* cond list by identity, takes it out of the fine-tune's batch and fills that slot
  with the prior's prediction. Everything after it — ``sampler_pre_cfg_function`` patches, the CFG
  formula or ``sampler_cfg_function``, ``sampler_post_cfg_function`` patches (RescaleCFG, APG,
  CFGZero*…) — runs unchanged and sees the prior's uncond. Another pack's
  ``sampler_calc_cond_batch_function`` still works because it ends in ``calc_cond_batch`` too.

Because the routing keys on the guider's ``negative`` conds, the same patch serves the stock KSampler
(CFGGuider), SamplerCustomAdvanced guiders and DualCFGGuider (whose ``negative`` is the (∅, ∅) term).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import torch

from . import insight
from .fastpath import GraphCache
from .guidance import blend_uncond, is_flow, to_prior_space
from .prior import Prior, check_compatible, check_prior_output, check_shared_weights

KEY = "prior_swap_cfg"
log = logging.getLogger("prior_swap_cfg")

# Keys of a cond dict that belong to the sampled model's graph and must not reach the prior.
_FOREIGN_COND_KEYS = ("control", "gligen", "hooks", "area", "mask", "strength", "set_area_to_bounds",
                      "concat_latent_image", "concat_mask", "concat_image", "noise_augmentation")


@dataclass(frozen=True)
class SwapSchedule:
    """Where and how much the prior replaces the model's own uncond."""

    prior_weight: float = 1.0  # 1: Eq. 7; 0: stock CFG; between: blend of the two unconds
    start_percent: float = 0.0  # fraction of sampling where the prior starts being used
    end_percent: float = 1.0  # … and where it stops

    def check(self, node: str) -> None:
        """Raise a clear error for a schedule that cannot mean anything."""
        from .errors import PriorSwapError

        if not 0.0 <= self.prior_weight <= 1.0:
            raise PriorSwapError(f"{node}: prior_weight must lie in 0–1 (got {self.prior_weight}).")
        if not (0.0 <= self.start_percent <= 1.0 and 0.0 <= self.end_percent <= 1.0):
            raise PriorSwapError(f"{node}: start_percent and end_percent must lie in 0–1.")
        if self.start_percent > self.end_percent:
            raise PriorSwapError(
                f"{node}: start_percent ({self.start_percent}) is after end_percent ({self.end_percent}); "
                "the prior would never be used. Swap them.")

    @property
    def full(self) -> bool:
        """True when the prior alone supplies the uncond over the whole of sampling."""
        return self.prior_weight >= 1.0 and self.start_percent <= 0.0 and self.end_percent >= 1.0


class PriorRun:
    """State of one sampling run: the prior's processed conds, counters, one-time warnings."""

    def __init__(self, guider: Any, prior: Any, negative: list, schedule: SwapSchedule,
                 graphs: GraphCache | None = None, label: str = "the prior"):
        self.guider = guider
        self.label = label
        self.graphs = graphs
        self.prior = prior  # the ModelPatcher ComfyUI loaded as additional model
        self.negative = negative
        self.schedule = schedule
        sampling = guider.model_patcher.get_model_object("model_sampling")
        self.model_sampling = sampling
        self.prior_sampling = prior.get_model_object("model_sampling")
        self.sigma_start = float(sampling.percent_to_sigma(schedule.start_percent))
        self.sigma_end = float(sampling.percent_to_sigma(schedule.end_percent))
        self.prior_conds: list | None = None
        self.prior_options: dict | None = None
        self.prior_calls = 0
        self.steps = 0
        self.insight = None  # an insight.Recorder when PriorSwapInsight marked the model (opt-in)
        self._warned_range = False

    # -- which slot is the uncond ---------------------------------------------------------------
    def uncond_index(self, conds: list) -> int | None:
        """Index of the guider's negative cond list in ``conds``, or None (e.g. cfg == 1)."""
        negative = getattr(self.guider, "conds", {}).get("negative")
        if not negative:
            return None
        for i, c in enumerate(conds):
            if c is negative:
                return i
        # Another pack may rebuild the list; its entries are still the guider's cond dicts.
        ids = {id(c) for c in negative}
        for i, c in enumerate(conds):
            if c and all(id(x) in ids for x in c):
                return i
        return None

    def active(self, sigma: torch.Tensor) -> bool:
        """True when this step's sigma lies in [end, start] of the schedule (like ConditioningSetTimestepRange)."""
        s = float(sigma.reshape(-1)[0])
        return self.sigma_end <= s <= self.sigma_start

    # -- the prior's forward ----------------------------------------------------------------------
    def _prepare(self, x: torch.Tensor, model_options: dict) -> None:
        import comfy.model_patcher
        import comfy.sampler_helpers
        import comfy.samplers

        conds = []
        for c in comfy.sampler_helpers.convert_cond(self.negative):
            for k in _FOREIGN_COND_KEYS:
                c.pop(k, None)
            conds.append(c)
        base = self.prior.model
        self.prior_conds = comfy.samplers.process_conds(base, x, {"negative": conds}, x.device)["negative"]
        options = comfy.model_patcher.create_model_options_clone(self.prior.model_options)
        transformer_options = options.setdefault("transformer_options", {})
        sample_sigmas = model_options.get("transformer_options", {}).get("sample_sigmas")
        if sample_sigmas is not None:
            transformer_options["sample_sigmas"] = sample_sigmas
        comfy.sampler_helpers.prepare_model_patcher(self.prior, {"negative": self.prior_conds}, options)
        if self.graphs is not None:
            import comfy.patcher_extension

            wrappers = transformer_options.setdefault("wrappers", {}).setdefault(
                comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, {})
            wrappers[KEY] = [self.graphs.wrapper(base)]
        self.prior_options = options

    def _check_range(self, sigma: torch.Tensor) -> None:
        if self._warned_range or is_flow(self.prior_sampling):
            return
        s = float(sigma.reshape(-1)[0])
        lo, hi = float(self.prior_sampling.sigma_min), float(self.prior_sampling.sigma_max)
        if s > hi * 1.001 or s < lo * 0.999:
            self._warned_range = True
            log.warning("PriorSwapCFG: sigma %.4g lies outside the prior's range [%.4g, %.4g]; the prior is "
                        "evaluated at its nearest timestep (the closest noise level it knows), as the paper does "
                        "for priors with another schedule.", s, lo, hi)

    def prior_uncond(self, x: torch.Tensor, sigma: torch.Tensor, model_options: dict) -> torch.Tensor:
        """The prior's denoised prediction for its own negative conds at this (x, sigma)."""
        import comfy.samplers

        if self.prior_conds is None:
            self._prepare(x, model_options)
        x_prior, sigma_prior = to_prior_space(x, sigma, self.model_sampling, self.prior_sampling)
        self._check_range(sigma_prior)
        base = self.prior.model
        # _calc_cond_batch asks model.current_patcher for hooks/state; point it at the prior for this
        # call (the prior may even share its BaseModel with the fine-tune) and restore afterwards.
        previous = getattr(base, "current_patcher", None)
        base.current_patcher = self.prior
        try:
            out = comfy.samplers.calc_cond_batch(base, [self.prior_conds], x_prior, sigma_prior, self.prior_options)[0]
        finally:
            base.current_patcher = previous
        self.prior_calls += 1
        check_prior_output(out, self.label, sigma)  # NaN/inf: a clear error naming the prior
        return out


def _calc_cond_batch_wrapper(executor: Callable, model: Any, conds: list, x_in: torch.Tensor,
                             timestep: torch.Tensor, model_options: dict, *args, **kwargs):
    """CALC_COND_BATCH wrapper: swap the uncond slot for the prior's prediction."""
    run: PriorRun | None = model_options.get(KEY)
    if run is None:
        return executor(model, conds, x_in, timestep, model_options, *args, **kwargs)
    run.steps += 1
    index = run.uncond_index(conds)
    if index is not None and run.insight is not None:  # PriorSwapInsight: measure (py/insight.py)
        return insight.measure(run, executor, model, conds, index, x_in, timestep, model_options, *args, **kwargs)
    weight = run.schedule.prior_weight
    if index is None or weight <= 0.0 or not run.active(timestep):
        return executor(model, conds, x_in, timestep, model_options, *args, **kwargs)
    own_conds = list(conds)
    if weight >= 1.0:
        own_conds[index] = None  # the fine-tune does not evaluate its own uncond at all
    out = list(executor(model, own_conds, x_in, timestep, model_options, *args, **kwargs))
    prior_out = run.prior_uncond(x_in, timestep, model_options)
    out[index] = blend_uncond(out[index], prior_out, weight)
    return out


def _make_outer_sample_wrapper(prior: Prior, schedule: SwapSchedule, graphs: GraphCache) -> Callable:
    # A closure, not a bound method or partial: ModelPatcher.clone() deep-copies model_options and
    # would copy whatever a bound method or partial holds (tensors, the prior model).
    negative, label = prior.negative, prior.label

    def outer_sample(executor: Callable, *args, **kwargs):
        guider = executor.class_obj
        priors = guider.model_patcher.get_additional_models_with_key(KEY)
        if not priors:
            return executor(*args, **kwargs)
        # Patches added downstream of PriorSwapCFG (a LoRA on the fine-tune) are only visible now.
        check_shared_weights(guider.model_patcher, priors[0], "PriorSwapCFG")
        graphs.reset()
        run = PriorRun(guider, priors[0], negative, schedule, graphs, label)
        run.insight = insight.start(guider, args, kwargs)
        guider.model_options[KEY] = run  # guider.model_options is this run's clone
        try:
            return executor(*args, **kwargs)
        finally:
            guider.model_options.pop(KEY, None)
            if run.insight is not None:
                run.insight.finish()
            log.info("PriorSwapCFG: prior evaluated at %d of %d model calls (CUDA graph replays %d, eager %d)",
                     run.prior_calls, run.steps, graphs.replays, graphs.eager)
            graphs.clear()  # the graphs hold GPU memory; a run's shapes rarely repeat in the next

    return outer_sample


def apply_prior_swap(model: Any, prior: Prior, schedule: SwapSchedule, node: str = "PriorSwapCFG") -> Any:
    """Return a clone of ``model`` whose CFG takes the uncond from ``prior``. ``model`` is not changed."""
    import comfy.patcher_extension

    check_compatible(model, prior, node)
    schedule.check(node)
    patched = model.clone()
    patched.set_additional_models(KEY, [prior.model])
    graphs = GraphCache()
    wrappers = comfy.patcher_extension.WrappersMP
    for kind, fn in ((wrappers.OUTER_SAMPLE, _make_outer_sample_wrapper(prior, schedule, graphs)),
                     (wrappers.CALC_COND_BATCH, _calc_cond_batch_wrapper),
                     (wrappers.DIFFUSION_MODEL, graphs.wrapper(patched.model))):
        patched.remove_wrappers_with_key(kind, KEY)  # a second PriorSwapCFG replaces the first
        patched.add_wrapper_with_key(kind, KEY, fn)
    return patched
