"""CUDA-graph replay of the diffusion model's forward, so a prior-swap step costs no more than stock CFG.

Stock CFG runs one batch-2 forward per step; prior swap cannot batch the prior's uncond with the
fine-tune's cond (different weights), so it runs two batch-1 forwards. On a fast GPU ComfyUI's eager
UNet forward is bound by kernel launches, not arithmetic, so two forwards cost nearly twice one.
Capturing each forward once per run as a CUDA graph and replaying it removes the launch overhead.

The graph is used only where replay gives the eager result: the model fully loaded on the GPU (no
lowvram streaming), no ControlNet and no attention/transformer patches from other nodes (their Python
code may act per step), static shapes (one graph per input shape, a few per run). Anything else runs
eagerly. ``PRIOR_SWAP_CUDA_GRAPHS=0`` switches it off.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable

import torch

log = logging.getLogger("prior_swap_cfg")

MAX_GRAPHS_PER_RUN = 4
# Shapes already run eagerly in this process: their capture needs no warm-up forward (which would
# cost a whole extra forward per run).
_WARMED: set[tuple] = set()


def _flag(name: str) -> bool:
    return os.environ.get(name, "1").strip().lower() not in ("0", "false", "off", "no")


def enabled() -> bool:
    """The fast path is on unless PRIOR_SWAP_CUDA_GRAPHS is 0/false/off."""
    return _flag("PRIOR_SWAP_CUDA_GRAPHS")



def _fully_loaded(base_model: Any) -> bool:
    return (not getattr(base_model, "model_lowvram", False)
            and getattr(base_model, "lowvram_patch_counter", 0) == 0)


def _has_patches(transformer_options: dict) -> bool:
    return any(transformer_options.get(k) for k in ("patches", "patches_replace"))


class GraphCache:
    """CUDA graphs of one run, keyed by model and input shapes; :meth:`clear` frees them."""

    def __init__(self) -> None:
        self.graphs: dict[tuple, tuple] = {}
        self.failed: set[tuple] = set()
        self.replays = 0
        self.eager = 0

    def clear(self) -> None:
        """Free the captured graphs (and their memory pools)."""
        self.graphs.clear()
        self.failed.clear()

    def reset(self) -> None:
        """Start a run: no graphs, counters at zero."""
        self.clear()
        self.replays = self.eager = 0

    def wrapper(self, base_model: Any) -> Callable:
        """A DIFFUSION_MODEL wrapper for ``base_model`` (the BaseModel whose diffusion_model it wraps)."""
        cache = self

        def graphed_forward(executor: Callable, x, timesteps, context, y, control, transformer_options, **kwargs):
            tensors = [x, timesteps, context, y, *kwargs.values()]
            eligible = (enabled() and x.is_cuda and control is None and _fully_loaded(base_model)
                        and not _has_patches(transformer_options)
                        and all(t is None or isinstance(t, torch.Tensor) for t in tensors))
            key = (id(base_model), tuple((k, tuple(t.shape), t.dtype) if isinstance(t, torch.Tensor) else (k, t)
                                         for k, t in zip(("x", "t", "c", "y", *kwargs), tensors)))
            if not eligible or key in cache.failed or (
                    key not in cache.graphs and len(cache.graphs) >= MAX_GRAPHS_PER_RUN):
                cache.eager += 1
                return executor(x, timesteps, context, y, control, transformer_options, **kwargs)
            entry = cache.graphs.get(key)
            if entry is None:
                try:
                    entry = cache._capture(executor, x, timesteps, context, y, transformer_options, kwargs,
                                           warm_up=key not in _WARMED)
                    _WARMED.add(key)
                except Exception as e:  # capture can fail on ops that sync; run eagerly from then on
                    log.warning("PriorSwapCFG: CUDA graph capture failed (%s); running this shape eagerly.", e)
                    cache.failed.add(key)
                    cache.eager += 1
                    return executor(x, timesteps, context, y, control, transformer_options, **kwargs)
                cache.graphs[key] = entry
            graph, static_in, static_out = entry
            for buf, value in zip(static_in, (x, timesteps, context, y, *kwargs.values())):
                if buf is not None:
                    buf.copy_(value)
            graph.replay()
            cache.replays += 1
            return static_out.clone()

        return graphed_forward

    @staticmethod
    def _capture(executor, x, timesteps, context, y, transformer_options, kwargs, warm_up: bool = True) -> tuple:
        static_in = [t.clone() if isinstance(t, torch.Tensor) else None
                     for t in (x, timesteps, context, y, *kwargs.values())]
        sx, st, sc, sy, *skw = static_in
        static_kwargs = dict(zip(kwargs, skw))
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        if warm_up:
            with torch.cuda.stream(stream):  # warm-up off the capture, as torch.cuda.graphs requires
                executor(sx, st, sc, sy, None, transformer_options, **static_kwargs)
            torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = executor(sx, st, sc, sy, None, transformer_options, **static_kwargs)
        return graph, static_in, static_out
