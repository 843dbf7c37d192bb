"""Route the unconditional branch of CFG through a prior model, inside ComfyUI's own sampling.

How it hooks in (ComfyUI's supported extension points only, all on a clone of the MODEL):

* ``set_additional_models(KEY, [prior])``: ComfyUI loads, offloads and frees the prior together with
  the sampled model (``prepare_sampling`` → ``get_nested_additional_models``), so ``--lowvram``,
  ``/free`` and the memory estimate see it.
* an ``OUTER_SAMPLE`` wrapper opens one :class:`~.prior_run.PriorRun` per sampling run and puts it in the
  run's (already cloned) ``model_options``.
* a ``SAMPLER_SAMPLE`` wrapper processes the prior's conds with the inputs the host just gave the guider's.
* a ``CALC_COND_BATCH`` wrapper sees every batch of conds the guider evaluates. It recognises the
  guider's *negative* cond list by identity, takes it out of the fine-tune's batch and fills that slot
  with the prior's prediction. Everything after it — ``sampler_pre_cfg_function`` patches, the CFG
  formula or ``sampler_cfg_function``, ``sampler_post_cfg_function`` patches (RescaleCFG, APG,
  CFGZero*…) — runs unchanged and sees the prior's uncond. Another pack's
  ``sampler_calc_cond_batch_function`` still works because it ends in ``calc_cond_batch`` too.
* an ``APPLY_MODEL`` wrapper replays each model's forward as a CUDA graph (``py/fastpath.py``).

Where the prior runs (its GPU, a second stream: the Prior Swap Options node, ``py/options.py``) is
``py/placement.py``; the per-step checks of its output are ``py/step_checks.py``.

Because the routing keys on the guider's ``negative`` conds, the same patch serves the stock KSampler
(CFGGuider), SamplerCustomAdvanced guiders and DualCFGGuider (whose ``negative`` is the (∅, ∅) term).
"""
from __future__ import annotations

import inspect
import logging
from typing import Any, Callable

import torch

from . import composition, insight
from .fastpath import GraphCache, fully_loaded
from .guidance import blend_uncond
from .options import OPTIONS_KEY, RunOptions, prior_device, run_options
from .prior import Prior, check_compatible, check_shared_weights
from .prior_run import PriorRun
from .schedule import SwapSchedule

__all__ = ["KEY", "SwapSchedule", "apply_prior_swap", "with_run_options"]

KEY = "prior_swap_cfg"
log = logging.getLogger("prior_swap_cfg")


def _calc_cond_batch_wrapper(executor: Callable, model: Any, conds: list, x_in: torch.Tensor,
                             timestep: torch.Tensor, model_options: dict, *args, **kwargs):
    """CALC_COND_BATCH wrapper: swap the uncond slot for the prior's prediction."""
    run: PriorRun | None = model_options.get(KEY)
    if run is None:
        return executor(model, conds, x_in, timestep, model_options, *args, **kwargs)
    run.reads.poll()  # earlier steps' checks the GPU has delivered (may raise the NaN error)
    run.steps += 1
    index = run.uncond_index(conds)
    if index is not None and run.recorder is not None:  # PriorSwapInsight: measure (py/insight.py)
        return run.recorder.measure(run, executor, model, conds, index, x_in, timestep, model_options,
                                    *args, **kwargs)
    weight = 0.0 if index is None else run.weight_at(timestep)
    if weight <= 0.0:
        return executor(model, conds, x_in, timestep, model_options, *args, **kwargs)
    own_conds = list(conds)
    if weight >= 1.0:
        own_conds[index] = None  # the fine-tune does not evaluate its own uncond at all
    if run.concurrent(x_in):
        # Queue the prior first, so its GPU (or stream) works while the fine-tune's forward is queued.
        pending = run.start_prior(model, x_in, timestep, model_options)
        out = list(executor(model, own_conds, x_in, timestep, model_options, *args, **kwargs))
        prior_out = run.finish_prior(pending, x_in)
    else:
        out = list(executor(model, own_conds, x_in, timestep, model_options, *args, **kwargs))
        prior_out = run.prior_prediction(model, x_in, timestep, model_options)
    out[index] = blend_uncond(out[index], prior_out, weight)
    return out


def _bound(executor: Callable, args: tuple, kwargs: dict, *names: str) -> tuple:
    """The values of ``names`` among the arguments a wrapper got for ``executor.original`` (None if absent)."""
    try:
        bound = inspect.signature(executor.original).bind(*args, **kwargs).arguments
    except (TypeError, ValueError):  # another signature than the host's: leave those inputs out
        bound = kwargs
    return tuple(bound.get(name) for name in names)


def _sampler_sample_wrapper(executor: Callable, *args, **kwargs):
    """SAMPLER_SAMPLE wrapper: the guider's conds were just processed; process the prior's with the same inputs."""
    extra_args, noise, latent_image, denoise_mask, sigmas = _bound(
        executor, args, kwargs, "extra_args", "noise", "latent_image", "denoise_mask", "sigmas")
    run: PriorRun | None = (extra_args or {}).get("model_options", {}).get(KEY)
    if run is not None and isinstance(noise, torch.Tensor):
        run.prepare(noise, latent_image, denoise_mask, sigmas)
        warn_if_streamed(run.guider.model_patcher, run.prior)  # ComfyUI has just loaded both: say it before step 1
    return executor(*args, **kwargs)


def _make_outer_sample_wrapper(prior: Prior, schedule: SwapSchedule, graphs: GraphCache) -> Callable:
    # A closure, not a bound method or partial: ModelPatcher.clone() deep-copies model_options and
    # would copy whatever a bound method or partial holds (tensors, the prior model).
    negative, label = prior.negative, prior.label

    def outer_sample(executor: Callable, *args, **kwargs):
        guider = executor.class_obj
        priors = guider.model_patcher.get_additional_models_with_key(KEY)
        if not priors:
            graphs.begin_run(mode=run_options(guider.model_options).cuda_graphs, patchers=(guider.model_patcher,))
            try:
                return executor(*args, **kwargs)
            finally:
                graphs.end_run()
        # Patches added downstream of PriorSwapCFG (a LoRA on the fine-tune) are only visible now.
        check_shared_weights(guider.model_patcher, priors[0], "PriorSwapCFG")
        composition.check_run(guider, priors[0], schedule.prior_weight)  # SAG, PerpNeg, SLG Simple (issue 16)
        seed, latent_shapes = _bound(executor, args, kwargs, "seed", "latent_shapes")
        recorder = insight.start(guider, args, kwargs)  # None unless PriorSwapInsight marked the model
        run = PriorRun(guider, priors[0], negative, schedule, KEY, graphs, label, recorder, seed, latent_shapes)
        graphs.begin_run(separate_pools=run.placement.overlap, mode=run.options.cuda_graphs,
                         patchers=(guider.model_patcher, priors[0]))
        guider.model_options[KEY] = run  # guider.model_options is this run's clone
        try:
            result = executor(*args, **kwargs)
            run.reads.flush()  # the last steps' checks (may raise the NaN error) and insight values
            return result
        finally:
            run.reads.discard()  # after a failure its own error is the one to report
            guider.model_options.pop(KEY, None)
            if recorder is not None:
                recorder.finish()
            why = "; ".join(f"{n}× {reason}" for reason, n in graphs.eager_reasons.items() if reason != "not on "
                            "a CUDA device")
            log.info("PriorSwapCFG: prior evaluated at %d of %d model calls on %s (CUDA graph replays %d, "
                     "eager %d%s, captured %d in %.0f ms)", run.prior_calls, run.steps, run.placement.device or "-",
                     graphs.replays, graphs.eager, f": {why}" if why else "", graphs.captures, 1000 * graphs.capture_s)
            graphs.end_run()  # graphs are kept for the next run while valid (py/fastpath.py)

    return outer_sample


STREAMED_ADVICE = (
    "PriorSwapCFG: the model and the prior do not both fit in VRAM: ComfyUI loaded %s in part and streams the rest "
    "from RAM at every step, which makes each step several times slower than stock CFG (docs/performance.md, "
    "'Smaller cards'). To fit the pair: load the prior with weight_dtype fp8_e4m3fn (Load Prior Checkpoint, or "
    "Load Diffusion Model → Prior From Model), put the prior on a second GPU (Prior Swap Options), or use a "
    "smaller prior.")


def warn_if_streamed(model: Any, prior: Any) -> None:
    """Say so when ComfyUI could not hold the fine-tune and the prior on the GPU together."""
    streamed = [name for name, patcher in (("the model", model), ("the prior", prior))
                if not fully_loaded(patcher.model)]
    if streamed:
        log.warning(STREAMED_ADVICE, " and ".join(streamed))


def apply_prior_swap(model: Any, prior: Prior, schedule: SwapSchedule, node: str = "PriorSwapCFG") -> Any:
    """Return a clone of ``model`` whose CFG takes the uncond from ``prior``. ``model`` is not changed."""
    import comfy.patcher_extension

    check_compatible(model, prior, node)
    schedule.check(node)
    patched = model.clone()
    graphs = GraphCache()
    device = prior_device(run_options(model.model_options), model.load_device)
    patched.set_additional_models(KEY, [_placed_prior(model, prior, graphs, device)])
    wrappers = comfy.patcher_extension.WrappersMP
    for kind, fn in ((wrappers.OUTER_SAMPLE, _make_outer_sample_wrapper(prior, schedule, graphs)),
                     (wrappers.SAMPLER_SAMPLE, _sampler_sample_wrapper),
                     (wrappers.CALC_COND_BATCH, _calc_cond_batch_wrapper),
                     (wrappers.APPLY_MODEL, graphs.wrapper(patched.model))):
        patched.remove_wrappers_with_key(kind, KEY)  # a second PriorSwapCFG replaces the first
        patched.add_wrapper_with_key(kind, KEY, fn)
    # ComfyUI unloading the model frees the graphs it holds (py/fastpath.py).
    detach = comfy.patcher_extension.CallbacksMP.ON_DETACH
    patched.remove_callbacks_with_key(detach, KEY)
    patched.add_callback_with_key(detach, KEY, _detach_callback(graphs))
    return patched


def _detach_callback(graphs: GraphCache) -> Callable:
    # A closure over the cache (not a bound method: clone() deep-copies callbacks' containers only).
    def on_detach(patcher: Any, unpatch_all: bool = True) -> None:
        graphs.on_detach(patcher, unpatch_all)

    return on_detach


def _placed_prior(model: Any, prior: Prior, graphs: GraphCache, device: torch.device | None) -> Any:
    """The prior's ModelPatcher as ComfyUI should load it: itself, or a clone to load on ``device``.

    The clone only changes ``load_device``: ComfyUI's own model management then loads the prior to that GPU
    (memory checks, offloading and unloading included). The Prior the user built is not changed.
    """
    import comfy.patcher_extension

    if device is None or device == model.load_device:
        return prior.model
    if prior.model.model is model.model:
        log.warning("PriorSwapCFG: the prior is the model's own checkpoint, which cannot be on two GPUs; "
                    "the prior device option is ignored for it.")
        return prior.model
    placed = prior.model.clone()
    placed.load_device = device
    # Newer ComfyUI's ModelPatcherDynamic keeps per-device state keyed by load_device: code that retargets a
    # patcher must register the new device (as upstream's own deepclone_multigpu does), else
    # partially_unload_ram() raises KeyError. 0.3.75's ModelPatcher has no such method and needs none.
    if hasattr(placed, "register_load_device"):
        placed.register_load_device(device)
    placed.add_callback_with_key(comfy.patcher_extension.CallbacksMP.ON_DETACH, KEY, _detach_callback(graphs))
    return placed


def with_run_options(model: Any, options: RunOptions, node: str = "PriorSwapOptions") -> Any:
    """A clone of the fine-tune ``model`` that Prior Swap CFG and the guiders run with ``options``."""
    from .errors import PriorSwapError

    if model.get_additional_models_with_key(KEY):
        raise PriorSwapError(
            f"{node}: the model is already patched by Prior Swap CFG, which placed its prior when it ran. Connect "
            f"{node} between the fine-tune's loader and Prior Swap CFG (or the Prior Swap guider) instead.")
    patched = model.clone()
    patched.model_options[OPTIONS_KEY] = options
    return patched
