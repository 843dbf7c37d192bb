"""One sampling run of a prior-swapped model: which slot the prior fills, when, and the prior's forward.

A :class:`PriorRun` is opened by the OUTER_SAMPLE wrapper of ``routing.py`` and lives in the run's
``model_options`` until the run ends. It holds the per-run state (the uncond slot, the schedule in σ,
counters) and evaluates the prior; two parts of that are objects of their own, each readable alone:

* :class:`~.placement.Placement` — where the prior's forward runs (its GPU, a second stream, the copies);
* :class:`~.step_checks.StepChecks` — the host-side checks of each call (NaN/inf error, range warning),
  read without stalling the GPU.

The prior's conds are processed once per run by :func:`.prior_conds.prepare`. Insight (``py/insight.py``) sees
a run only through :class:`~.insight.MeasuredRun`: :meth:`PriorRun.prior_prediction`,
:meth:`PriorRun.weight_at` and ``reads``.
"""
from __future__ import annotations

from typing import Any

import torch

from . import composition, prior_conds
from .deferred import DeferredReads
from .fastpath import GraphCache
from .guidance import prior_sigma, same_sampling, to_prior_space
from .insight import Recorder
from .options import RunOptions, run_options
from .placement import Placement
from .schedule import SwapSchedule
from .step_checks import StepChecks


class PriorRun:
    """State of one sampling run: the uncond slot, the schedule in σ, the prior's inputs, counters."""

    def __init__(self, guider: Any, prior: Any, negative: list, schedule: SwapSchedule, key: str,
                 graphs: GraphCache | None = None, label: str = "the prior", recorder: Recorder | None = None,
                 seed: int | None = None, latent_shapes: Any = None):
        """``guider``: the CFGGuider (or subclass) sampling; ``prior``: the prior's ModelPatcher as ComfyUI loaded
        it (the additional model); ``negative``: the prior's conditioning; ``key``: the pack's wrapper key;
        ``graphs``: the patched model's CUDA graphs (None: none for the prior); ``label``: how errors name the
        prior; ``recorder``: Insight's, when the model is measured; ``seed``, ``latent_shapes``: the run's, for
        the prior's ``process_conds``."""
        self.guider = guider
        self.prior = prior
        self.negative = negative
        self.schedule = schedule
        self.key = key
        self.graphs = graphs
        self.recorder = recorder
        self.seed = seed
        self.latent_shapes = latent_shapes
        self.model_sampling = guider.model_patcher.get_model_object("model_sampling")
        self.prior_sampling = prior.get_model_object("model_sampling")
        # One schedule for both (the same family, or the model as its own prior): the host's σ as it is.
        self.same_sampling = same_sampling(self.model_sampling, self.prior_sampling)
        self.sigma_start = float(self.model_sampling.percent_to_sigma(schedule.start_percent))
        self.sigma_end = float(self.model_sampling.percent_to_sigma(schedule.end_percent))
        self.options: RunOptions = run_options(guider.model_options)
        self.placement = Placement.for_run(guider, prior, self.options)
        self.reads = DeferredReads()  # per-step values (checks, Insight's norms), read without stalling the GPU
        self.checks = StepChecks(label, self.reads)
        self.inputs: prior_conds.PriorInputs | None = None  # set by prepare
        self.prior_calls = 0
        self.steps = 0

    # -- which slot, and when ---------------------------------------------------------------------
    def uncond_index(self, conds: list) -> int | None:
        """Index of the list the prior supplies in ``conds`` (the guider's negative; PerpNegGuider's empty ∅
        base), recognised by identity or by its cond dicts' uuid (context windows copy them), or None."""
        return composition.find_slot(self.guider, conds)

    def active(self, sigma: torch.Tensor) -> bool:
        """True when this step's sigma lies in [end, start] of the schedule (like ConditioningSetTimestepRange)."""
        if self.schedule.whole_run:
            return True
        s = float(sigma.reshape(-1)[0])  # reads the GPU: only for a partial start/end range
        return self.sigma_end <= s <= self.sigma_start

    def weight_at(self, sigma: torch.Tensor) -> float:
        """How much of the uncond the prior supplies at this step: the schedule's weight inside its range, else 0."""
        weight = self.schedule.prior_weight
        return weight if weight > 0.0 and self.active(sigma) else 0.0

    def concurrent(self, x: torch.Tensor) -> bool:
        """Whether the prior's forward can run beside the fine-tune's (see :class:`Placement`)."""
        return self.placement.concurrent(x)

    # -- the prior's inputs -------------------------------------------------------------------------
    def prepare(self, noise: torch.Tensor, latent_image: torch.Tensor | None = None,
                denoise_mask: torch.Tensor | None = None, sample_sigmas: torch.Tensor | None = None) -> None:
        """Settle the prior's device and process its conds with what the host gives the sampled model's."""
        sampled_device = noise.device
        noise = self.placement.locate(noise)
        wrapper = None if self.graphs is None else self.graphs.wrapper(self.prior.model)
        self.inputs = prior_conds.prepare(
            self.prior, self.negative, noise, self.placement.device != sampled_device, latent_image, denoise_mask,
            self.seed, self.latent_shapes, sample_sigmas, wrapper, self.key)
        self.checks.watch_range(self.prior_sampling, self.same_sampling)

    def _ensure_prepared(self, x: torch.Tensor, model_options: dict) -> None:
        if self.inputs is None:  # a guider whose inner_sample skipped the SAMPLER_SAMPLE wrappers
            self.prepare(x, sample_sigmas=(model_options.get("transformer_options") or {}).get("sample_sigmas"))

    # -- the prior's forward ----------------------------------------------------------------------
    def start_prior(self, model: Any, x: torch.Tensor, sigma: torch.Tensor, model_options: dict) -> torch.Tensor:
        """Queue the prior's forward for this ``calc_cond_batch`` call (``model``: its BaseModel, ``model_options``:
        its options), on the prior's device or side stream; the result stays there until :meth:`finish_prior`."""
        composition.release_shared_hooks(self.prior, model)  # the fine-tune's hook LoRA off shared weights
        self._ensure_prepared(x, model_options)
        # The blocks another node skips in this call's uncond are skipped in the prior too.
        options = composition.prior_call_options(self.guider, self.prior, self.inputs.options, model_options)
        return self.placement.launch(x, lambda: self._forward(x, sigma, options))

    def finish_prior(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The prior's prediction as the fine-tune's stream can use it: joined and on ``x``'s device."""
        return self.placement.join(out, x)

    def prior_prediction(self, model: Any, x: torch.Tensor, sigma: torch.Tensor, model_options: dict) -> torch.Tensor:
        """The prior's denoised prediction for its own negative conds at this (x, sigma), on ``x``'s device."""
        return self.finish_prior(self.start_prior(model, x, sigma, model_options), x)

    def _forward(self, x: torch.Tensor, sigma: torch.Tensor, options: dict) -> torch.Tensor:
        import comfy.samplers

        x_prior, sigma_prior = x, sigma
        if not self.same_sampling:
            x_prior, sigma_prior = to_prior_space(x, sigma, self.model_sampling, self.prior_sampling)
        x_prior, sigma_prior, sigma = self.placement.to_prior(x, x_prior, sigma_prior, sigma)
        base = self.prior.model
        # _calc_cond_batch asks model.current_patcher for hooks/state; point it at the prior for this
        # call (the prior may even share its BaseModel with the fine-tune) and restore afterwards.
        previous = getattr(base, "current_patcher", None)
        base.current_patcher = self.prior
        try:
            with self.placement.on_device():
                out = comfy.samplers.calc_cond_batch(base, [self.inputs.conds], x_prior, sigma_prior, options)[0]
        finally:
            base.current_patcher = previous
        self.prior_calls += 1
        # For the range warning: the prior's σ before it was moved to a level it knows (the same with one schedule).
        unclamped = sigma if self.same_sampling else prior_sigma(sigma, self.model_sampling, self.prior_sampling)
        self.checks.push(out, sigma, unclamped)
        return out
