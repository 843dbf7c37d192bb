"""Where in sampling, and how much, the prior supplies the uncond (the nodes' three schedule inputs)."""
from __future__ import annotations

from dataclasses import dataclass

from .errors import PriorSwapError


@dataclass(frozen=True)
class SwapSchedule:
    """Where and how much the prior replaces the model's own uncond."""

    prior_weight: float = 1.0  # 1: Eq. 7; 0: stock CFG; between: blend of the two unconds
    start_percent: float = 0.0  # fraction of sampling where the prior starts being used
    end_percent: float = 1.0  # … and where it stops

    def check(self, node: str) -> None:
        """Raise a clear error for a schedule that cannot mean anything."""
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

    @property
    def whole_run(self) -> bool:
        """True when the schedule spans all of sampling: no step's sigma has to be read to decide."""
        return self.start_percent <= 0.0 and self.end_percent >= 1.0
