"""The host-side checks of each prior call: a NaN/inf prediction is an error, a σ outside the prior's range a warning.

Both need a number from the GPU only to raise or to log, never to compute the step, so they are read through
:class:`~.deferred.DeferredReads` (the host does not wait for the GPU): a broken prior is reported a step
later at most, and at the latest when the run ends.
"""
from __future__ import annotations

import logging
import math
from typing import Any

import torch

from .deferred import DeferredReads
from .guidance import is_flow
from .prior import prior_output_error

log = logging.getLogger("prior_swap_cfg")


class StepChecks:
    """The checks of one run's prior calls, queued on the run's :class:`DeferredReads`."""

    def __init__(self, label: str, reads: DeferredReads) -> None:
        self.label = label  # how the error names the prior ("the prior 'x.safetensors' (Load Prior Checkpoint)")
        self.reads = reads
        self.prior_range: tuple[float, float] | None = None  # (σ_min, σ_max) of a discrete prior, when watched
        self._warned_range = False  # the range warning is logged once per run

    def watch_range(self, prior_sampling: Any, same_sampling: bool) -> None:
        """Warn when σ leaves the prior's table: only for an x0 + σε prior with a schedule of its own (with the
        host's schedule σ never leaves it; a flow prior knows every σ in 0–1). Read once per run: the bounds
        are buffers on the GPU."""
        if not is_flow(prior_sampling) and not same_sampling:
            self.prior_range = (float(prior_sampling.sigma_min), float(prior_sampling.sigma_max))

    def push(self, out: torch.Tensor, sigma: torch.Tensor, sigma_prior: torch.Tensor) -> None:
        """Queue the checks of one prior call: its prediction ``out`` at the sampled ``sigma``, which is
        ``sigma_prior`` on the prior's own scale (before it is moved to a level the prior knows)."""
        values = torch.stack((out.sum().float(), sigma.reshape(-1)[0].float(), sigma_prior.reshape(-1)[0].float()))
        self.reads.push(values, self._check)

    def _check(self, values: list) -> None:
        """Host side of one prior call, once its numbers reached the host: range warning, NaN/inf error."""
        total, sigma, sigma_prior = values
        if self.prior_range is not None and not self._warned_range:
            lo, hi = self.prior_range
            if sigma_prior > hi * 1.001 or sigma_prior < lo * 0.999:
                self._warned_range = True
                log.warning("PriorSwapCFG: sigma %.4g lies outside the prior's range [%.4g, %.4g]; the prior is "
                            "evaluated at the closest noise level it knows (its input rescaled to what its network "
                            "sees at this sigma), as the paper does for priors with another schedule.",
                            sigma_prior, lo, hi)
        if not math.isfinite(total):  # NaN/inf: a clear error naming the prior
            raise prior_output_error(self.label, sigma)
