"""Per-step checks of GPU results without stalling the GPU: read on the host once the GPU has produced them.

A ``float(tensor)`` or ``bool(tensor)`` on a CUDA tensor blocks the host until the GPU has finished
everything queued before it. In a sampling step that leaves the GPU idle while the host prepares the next
forward (ComfyUI's Python between two forwards takes a millisecond or more). The pack's per-step checks —
the prior's output is finite, the sigma lies in the prior's range, and the insight measurements — need the
value only to raise, warn or report, not to compute the step, so they are copied to pinned host memory
without blocking and looked at once an event says the copy is done: at the next step, or when the run
ends (:meth:`DeferredReads.flush`). The step's result is the same; an error is raised a step later at most.
On the CPU everything is read at once.
"""
from __future__ import annotations

from collections import deque
from typing import Callable

import torch


class DeferredReads:
    """Small GPU tensors, each handed to its callback as a list of floats once the GPU has computed it."""

    def __init__(self) -> None:
        self._pending: deque = deque()

    def push(self, values: torch.Tensor, handle: Callable[[list], None]) -> None:
        """Call ``handle(values.tolist())`` now on the CPU, or once the GPU got there (see :meth:`poll`)."""
        values = values.detach()
        if not values.is_cuda:
            handle(values.tolist())
            return
        host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
        stream = torch.cuda.current_stream(values.device)
        with torch.cuda.stream(stream):
            host.copy_(values, non_blocking=True)
        event = torch.cuda.Event()
        event.record(stream)
        self._pending.append((event, host, handle))

    def poll(self) -> None:
        """Handle, in order, every value the GPU has already delivered (never waits)."""
        while self._pending and self._pending[0][0].query():
            self._handle_first()

    def flush(self) -> None:
        """Wait for and handle every pending value (the end of a run)."""
        while self._pending:
            self._pending[0][0].synchronize()
            self._handle_first()

    def discard(self) -> None:
        """Forget pending values (a run that failed: its error is the one to report)."""
        self._pending.clear()

    def __len__(self) -> int:
        return len(self._pending)

    def _handle_first(self) -> None:
        _event, host, handle = self._pending.popleft()
        handle(host.tolist())
