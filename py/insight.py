"""Opt-in measurement of what the prior changes, step by step (issue #11).

``PriorSwapInsight`` marks a prior-swapped MODEL with :data:`KEY` in its ``model_options`` (a small dict of
plain values: ``ModelPatcher.clone()`` deep-copies model_options). When a sampling run sees the mark, it
gets a :class:`Recorder` (:func:`start`), and the CALC_COND_BATCH wrapper of ``routing.py`` hands each batch
that holds the uncond slot to :meth:`Recorder.measure`: the fine-tune evaluates its own uncond batched with
its cond (as stock CFG does), the prior is evaluated as usual, and for every step this records, in denoised
(x0) space,

* ``sigma``
* ``rel_diff``  = ‖u_ft − u_prior‖ / ‖u_ft‖       (how far the fine-tune's own uncond has drifted)
* ``guid_ft``   = ‖c − u_ft‖                        (stock CFG's guidance direction, magnitude)
* ``guid_prior``= ‖c − u_prior‖                     (the swap's guidance direction, magnitude)

(norms over the whole batch tensor). Each step goes to the frontend over ComfyUI's websocket as
``prior_swap.insight`` (only to the client that queued the prompt; API clients without one see nothing),
and the finished run is kept for ``PriorSwapInsightPlot``. Without the mark nothing here runs.

The run being measured is seen only through :class:`MeasuredRun`: the prior's prediction, the prior's weight
at a step, and the run's queue of deferred reads.
"""
from __future__ import annotations

import logging
import math
import sys
import threading
import uuid
from typing import Any, Callable, Protocol

import torch

from .deferred import DeferredReads
from .guidance import blend_uncond

KEY = "prior_swap_insight"
EVENT = "prior_swap.insight"
log = logging.getLogger("prior_swap_cfg")

# Process-wide on purpose: the record is written by the sampler node's run and read by Insight Plot, another node
# executed later (possibly in another prompt); the mark's token in model_options is all they share (clone()
# deep-copies model_options, so an object kept there would be a different copy on each side). Bounded by _KEEP.
_LOCK = threading.Lock()  # scripts may sample from threads of their own; the dict is changed in place
_LAST: dict[str, dict] = {}  # mark token → the last finished (or running) run's record
_KEEP = 64  # records kept: a server up for days must not grow with every Insight node run


def mark(model: Any, node_id: str | None) -> Any:
    """A clone of ``model`` whose sampling runs are measured. ``model`` is not changed."""
    marked = model.clone()
    marked.model_options[KEY] = {"token": uuid.uuid4().hex, "node": None if node_id is None else str(node_id)}
    return marked


def last_run(model: Any) -> dict | None:
    """The last measured run of a marked ``model`` (or of a model sampled downstream of it)."""
    tag = model.model_options.get(KEY) if model is not None else None
    if not tag:
        return None
    with _LOCK:
        return _LAST.get(tag["token"])


class MeasuredRun(Protocol):
    """What Insight asks of the prior-swap run it measures (``py/prior_run.py``'s PriorRun provides it)."""

    reads: DeferredReads  # the run's queue of values read on the host once the GPU has them

    def prior_prediction(self, model: Any, x: torch.Tensor, sigma: torch.Tensor,
                         model_options: dict) -> torch.Tensor:
        """The prior's denoised uncond at (x, σ) of this ``calc_cond_batch`` call, on ``x``'s device."""

    def weight_at(self, sigma: torch.Tensor) -> float:
        """How much of the uncond the prior supplies at this step (0: the model's own, as in stock CFG)."""


class Recorder:
    """One measured sampling run: per-step values, sent live and kept afterwards."""

    def __init__(self, tag: dict, guider: Any, sigmas: Any = None):
        from comfy_execution.utils import get_executing_context

        self.tag = tag
        self.guider = guider
        context = get_executing_context()
        self.prompt_id = context.prompt_id if context else None
        self.sampler_node = context.node_id if context else None
        self.steps: list[dict] = []
        self.total_steps = None if sigmas is None else max(int(sigmas.shape[-1]) - 1, 0)
        self.record = {"prompt_id": self.prompt_id, "node": self.tag["node"], "sampler_node": self.sampler_node,
                       "total_steps": self.total_steps, "steps": self.steps, "done": False}
        with _LOCK:
            _LAST.pop(tag["token"], None)
            _LAST[tag["token"]] = self.record  # newest last (dicts keep insertion order)
            while len(_LAST) > _KEEP:
                _LAST.pop(next(iter(_LAST)))

    def cond_index(self, conds: list, uncond: int) -> int:
        """The slot of the guider's positive (most conditioned) conds: CFGGuider [pos, neg], Dual [neg, mid, pos]."""
        positive = getattr(self.guider, "conds", {}).get("positive")
        for i, c in enumerate(conds):
            if positive is not None and c is positive:
                return i
        others = [i for i, c in enumerate(conds) if i != uncond and c is not None]
        return others[-1]

    def add(self, sigma: torch.Tensor, cond: torch.Tensor, own: torch.Tensor, prior: torch.Tensor,
            reads: DeferredReads | None = None) -> None:
        """Record one step. The norms are computed on the model's device and, with ``reads``, read on the host
        once the GPU has them (py/deferred.py), so measuring adds no host sync to the step."""
        cond, own, prior = cond.float(), own.float(), prior.float()
        norms = torch.stack((sigma.reshape(-1)[0].float(), (own - prior).norm(), own.norm(),
                             (cond - own).norm(), (cond - prior).norm()))
        (reads or DeferredReads()).push(norms, self._record)

    def _record(self, norms: list) -> None:
        sigma, diff, own_norm, guid_ft, guid_prior = norms
        values = {
            "step": len(self.steps),
            "sigma": sigma,
            "rel_diff": diff / own_norm if own_norm > 0 else math.nan,
            "guid_ft": guid_ft,
            "guid_prior": guid_prior,
        }
        self.steps.append(values)
        self._send({**values, "total_steps": self.total_steps})

    def measure(self, run: MeasuredRun, executor: Callable, model: Any, conds: list, index: int,
                x_in: torch.Tensor, timestep: torch.Tensor, model_options: dict, *args, **kwargs) -> list:
        """The measuring variant of the routing wrapper: own uncond batched with the cond, prior as usual.

        ``executor`` and the arguments are the CALC_COND_BATCH wrapper's; ``index`` is the uncond slot in
        ``conds``. Returns the batch's predictions with the slot blended as the run's schedule says.
        """
        out = list(executor(model, conds, x_in, timestep, model_options, *args, **kwargs))
        prior_out = run.prior_prediction(model, x_in, timestep, model_options)
        self.add(timestep, out[self.cond_index(conds, index)], out[index], prior_out, run.reads)
        weight = run.weight_at(timestep)
        if weight > 0.0:
            out[index] = blend_uncond(out[index], prior_out, weight)
        return out

    def finish(self) -> None:
        self.record["done"] = True
        self._send({"done": True, "total_steps": self.total_steps})

    def _send(self, data: dict) -> None:
        # The server module ComfyUI's main.py imported; outside the server (scripts, benchmarks) there is
        # nobody to tell, and trying to import it at every step would cost more than the measurement.
        server_module = sys.modules.get("server")
        prompt_server = getattr(server_module, "PromptServer", None)
        server = getattr(prompt_server, "instance", None)
        sid = getattr(server, "client_id", None)
        if server is None or sid is None:
            return  # no frontend queued this prompt: nobody to tell
        server.send_sync(EVENT, {"prompt_id": self.prompt_id, "node": self.tag["node"],
                                 "sampler_node": self.sampler_node, **data}, sid)


def start(guider: Any, args: tuple, kwargs: dict) -> Recorder | None:
    """A recorder for this run when the sampled model is marked, else None (the default: nothing runs).

    ``args``/``kwargs``: those of ``CFGGuider.outer_sample(noise, latent_image, sampler, sigmas, …)``.
    """
    tag = guider.model_options.get(KEY)
    if not tag:
        return None
    sigmas = args[3] if len(args) > 3 else kwargs.get("sigmas")
    return Recorder(tag, guider, sigmas)
