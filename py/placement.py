"""Where the prior's forward runs in a step: the fine-tune's GPU, a second stream of it, or another GPU.

With the Prior Swap Options node (``py/options.py``) the prior can be loaded on another GPU, or run on a second
CUDA stream of the fine-tune's GPU. In both cases the routing queues the prior's forward *before* the
fine-tune's, so the two run at the same time; :class:`Placement` holds what that needs: the prior's device
for this run, the side stream, and the order of the copies between the devices.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch

from .options import RunOptions


class Placement:
    """Where one run's prior computes, and how its prediction reaches the fine-tune's stream."""

    def __init__(self, prior: Any, overlap: bool) -> None:
        self.prior = prior  # the prior's ModelPatcher (as ComfyUI loaded it for this run)
        self.overlap = overlap  # one GPU: the prior's forward on a second stream
        self.device: torch.device | None = None  # where the prior's weights are (set by locate)
        self._side_stream: torch.cuda.Stream | None = None  # made at the first overlapped call

    @classmethod
    def for_run(cls, guider: Any, prior: Any, options: RunOptions) -> "Placement":
        """The placement the options ask for. Never a second stream when the prior is the model's own BaseModel:
        the two calls could then replay the very same CUDA graph at once."""
        overlap = options.overlap and torch.cuda.is_available() and prior.model is not guider.model_patcher.model
        return cls(prior, overlap)

    def locate(self, noise: torch.Tensor) -> torch.Tensor:
        """Settle where the prior runs in this run and return ``noise`` there.

        Where ComfyUI actually loaded the prior: its load_device, unless it stayed on the GPU it was on; on a
        device of another kind (a CPU prior for a GPU run) the sampled model's device.
        """
        device = self.prior.current_loaded_device()
        if not isinstance(device, torch.device) or device.type != noise.device.type:
            device = noise.device
        noise = noise.to(device)
        self.device = noise.device  # with its index (cuda → cuda:0)
        return noise

    def concurrent(self, x: torch.Tensor) -> bool:
        """Whether the prior's forward can run beside the fine-tune's: on another GPU, or a second stream."""
        if not x.is_cuda:
            return False
        device = self.prior.current_loaded_device() if self.device is None else self.device
        return self.overlap or (isinstance(device, torch.device) and device.type == "cuda" and device != x.device)

    def to_prior(self, x: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``tensors`` on the prior's device, for a call whose sampled latent is ``x``.

        Every copy between the GPUs happens here, before the prior's forward is queued: a cross-GPU copy makes
        the source GPU wait for the work queued on the destination (PyTorch's two-way barrier), so one after the
        forward would hold the fine-tune's GPU until the prior's forward ends.
        """
        if self.device == x.device:
            return tensors
        return tuple(t.to(self.device) for t in tensors)

    @contextlib.contextmanager
    def on_device(self) -> Iterator[None]:
        """The prior's GPU as the current CUDA device (kernels and the host's own allocations go there)."""
        if self.device is not None and self.device.type == "cuda":
            with torch.cuda.device(self.device):
                yield
        else:
            yield

    def launch(self, x: torch.Tensor, forward: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Queue ``forward`` (the prior's): on the side stream with overlap, else on the current stream of the
        prior's device. Its result stays where it was computed until :meth:`join`."""
        if self.overlap and self.device == x.device:
            if self._side_stream is None:
                self._side_stream = torch.cuda.Stream(device=x.device)
            main = torch.cuda.current_stream(x.device)
            self._side_stream.wait_stream(main)  # x is ready
            with torch.cuda.stream(self._side_stream):
                return forward()
        return forward()

    def join(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The prior's prediction as the fine-tune's stream can use it: joined and on ``x``'s device."""
        if out.device != x.device:
            return out.to(x.device)  # a cross-GPU copy, ordered after both devices' queued work
        if self._side_stream is not None and self.overlap:
            main = torch.cuda.current_stream(x.device)
            main.wait_stream(self._side_stream)
            out.record_stream(main)  # allocated on the side stream, used and freed on the main one
        return out
