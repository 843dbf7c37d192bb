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

With the Prior Swap Options node (``py/options.py``) the prior can be loaded on another GPU (the additional
model is then a clone of the prior with that ``load_device``, and each step queues the prior's forward there
before the fine-tune's, so the two run at the same time) or run on a second stream of one GPU.

Because the routing keys on the guider's ``negative`` conds, the same patch serves the stock KSampler
(CFGGuider), SamplerCustomAdvanced guiders and DualCFGGuider (whose ``negative`` is the (∅, ∅) term).
"""
from __future__ import annotations

import inspect
import logging
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from . import composition, insight
from .deferred import DeferredReads
from .fastpath import GraphCache
from .guidance import blend_uncond, is_flow, prior_sigma, same_sampling, to_prior_space
from .options import OPTIONS_KEY, RunOptions, prior_device, run_options
from .prior import Prior, check_compatible, check_shared_weights, prior_output_error

KEY = "prior_swap_cfg"
log = logging.getLogger("prior_swap_cfg")

# Keys of a cond dict that belong to the sampled model's graph and must not reach the prior.
# The fine-tune's image/video conditioning is an input of the fine-tune alone (the paper's ∅ term has none):
# InstructPix2Pix/inpainting/Wan I2V concat latents and masks, CLIP-vision embeds, reference latents (Qwen-Image-
# Edit, Flux Kontext), HunyuanVideo I2V's guiding frame and reference, VACE's frames and masks.
_FOREIGN_COND_KEYS = ("control", "gligen", "hooks", "area", "mask", "strength", "set_area_to_bounds",
                      "concat_latent_image", "concat_mask", "concat_image", "noise_augmentation",
                      "clip_vision_output", "reference_latents", "reference_latents_method", "guiding_frame_index",
                      "ref_latent", "vace_frames", "vace_mask", "vace_strength", "camera_conditions",
                      "unclip_conditioning", "time_dim_concat", "keyframe_idxs", "reference_motion",
                      "pose_video_latent", "face_video_pixels", "control_video", "audio_embed", "noise_concat",
                      "concat_mask_index")


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
        # One schedule for both (the same family, or the model as its own prior): the host's σ as it is.
        self.same_sampling = same_sampling(sampling, self.prior_sampling)
        self.sigma_start = float(sampling.percent_to_sigma(schedule.start_percent))
        self.sigma_end = float(sampling.percent_to_sigma(schedule.end_percent))
        # The whole of sampling: no step needs its sigma read on the host to decide.
        self.always_active = schedule.start_percent <= 0.0 and schedule.end_percent >= 1.0
        self.prior_conds: list | None = None
        self.prior_options: dict | None = None
        self.device: torch.device | None = None  # where the prior's weights are (set by prepare)
        self.prior_calls = 0
        self.steps = 0
        self.insight = None  # an insight.Recorder when PriorSwapInsight marked the model (opt-in)
        self.seed: int | None = None  # the run's seed and nested-latent shapes, for the prior's process_conds
        self.latent_shapes: Any = None
        self.reads = DeferredReads()  # per-step checks, read without stalling the GPU
        self._prior_range: tuple[float, float] | None = None
        self._warned_range = False
        self._side_stream = None
        # On one GPU with the overlap option, the prior's forward runs on a second stream. Never when the
        # prior is the model's own BaseModel: the two calls could then replay the very same graph at once.
        self.options = run_options(guider.model_options)
        self.overlap = (self.options.overlap and torch.cuda.is_available()
                        and prior.model is not guider.model_patcher.model)

    # -- which slot is the uncond ---------------------------------------------------------------
    def uncond_index(self, conds: list) -> int | None:
        """Index of the list the prior supplies in ``conds`` (the guider's negative; PerpNegGuider's empty ∅
        base), recognised by identity or by its cond dicts' uuid (context windows copy them), or None."""
        return composition.find_slot(self.guider, conds)

    def active(self, sigma: torch.Tensor) -> bool:
        """True when this step's sigma lies in [end, start] of the schedule (like ConditioningSetTimestepRange)."""
        if self.always_active:
            return True
        s = float(sigma.reshape(-1)[0])  # reads the GPU: only for a partial start/end range
        return self.sigma_end <= s <= self.sigma_start

    def concurrent(self, x: torch.Tensor) -> bool:
        """Whether the prior's forward can run beside the fine-tune's: on another GPU, or a second stream."""
        if not x.is_cuda:
            return False
        device = self.prior.current_loaded_device() if self.device is None else self.device
        return self.overlap or (isinstance(device, torch.device) and device.type == "cuda" and device != x.device)

    # -- the prior's forward ----------------------------------------------------------------------
    def prepare(self, noise: torch.Tensor, latent_image: torch.Tensor | None = None,
                denoise_mask: torch.Tensor | None = None, seed: int | None = None,
                latent_shapes: Any = None, sample_sigmas: torch.Tensor | None = None) -> None:
        """Process the prior's conds for the prior's own model, with what the host gives the sampled model's.

        Called from the SAMPLER_SAMPLE wrapper, right after ``CFGGuider.inner_sample`` processed the guider's
        conds with the same ``latent_image``, ``denoise_mask``, ``seed`` and ``latent_shapes`` (LTXV's
        image-to-video timesteps, nested latents and others read them in ``extra_conds``).
        """
        import comfy.model_patcher
        import comfy.sampler_helpers
        import comfy.samplers

        sampled_device = noise.device
        # Where ComfyUI actually loaded the prior: its load_device, unless it stayed on the GPU it was on.
        self.device = self.prior.current_loaded_device()
        if not isinstance(self.device, torch.device) or self.device.type != noise.device.type:
            self.device = noise.device
        noise = noise.to(self.device)
        self.device = noise.device  # with its index (cuda → cuda:0)
        elsewhere = self.device != sampled_device

        def moved(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(self.device)

        conds = []
        for c in comfy.sampler_helpers.convert_cond(self.negative):
            for k in _FOREIGN_COND_KEYS:
                c.pop(k, None)
            conds.append(c)
        extra = {"latent_shapes": latent_shapes} if latent_shapes is not None else {}
        self.prior_conds = comfy.samplers.process_conds(
            self.prior.model, noise, {"negative": conds}, self.device, moved(latent_image), moved(denoise_mask),
            seed, **extra)["negative"]
        options = comfy.model_patcher.create_model_options_clone(self.prior.model_options)
        transformer_options = options.setdefault("transformer_options", {})
        if sample_sigmas is not None:
            transformer_options["sample_sigmas"] = sample_sigmas.to(self.device)
        comfy.sampler_helpers.prepare_model_patcher(self.prior, {"negative": self.prior_conds}, options)
        if elsewhere:  # patches' tensors follow the prior to its GPU, as ComfyUI does for the sampled model
            comfy.samplers.cast_to_load_options(options, device=self.device, dtype=self.prior.model_dtype())
        if self.graphs is not None:
            import comfy.patcher_extension

            wrappers = transformer_options.setdefault("wrappers", {}).setdefault(
                comfy.patcher_extension.WrappersMP.APPLY_MODEL, {})
            wrappers[KEY] = [self.graphs.wrapper(self.prior.model)]
        self.prior_options = options
        if not is_flow(self.prior_sampling) and not self.same_sampling:  # read once per run (buffers on the GPU)
            self._prior_range = (float(self.prior_sampling.sigma_min), float(self.prior_sampling.sigma_max))

    def _after_step(self, values: list) -> None:
        """Host side of one prior call, once its numbers reached the host: range warning, NaN/inf error."""
        total, sigma, sigma_prior = values
        if self._prior_range is not None and not self._warned_range:
            lo, hi = self._prior_range
            if sigma_prior > hi * 1.001 or sigma_prior < lo * 0.999:
                self._warned_range = True
                log.warning("PriorSwapCFG: sigma %.4g lies outside the prior's range [%.4g, %.4g]; the prior is "
                            "evaluated at the closest noise level it knows (its input rescaled to what its network "
                            "sees at this sigma), as the paper does for priors with another schedule.",
                            sigma_prior, lo, hi)
        if not math.isfinite(total):  # NaN/inf: a clear error naming the prior
            raise prior_output_error(self.label, sigma)

    def start_prior(self, x: torch.Tensor, sigma: torch.Tensor, model_options: dict) -> torch.Tensor:
        """Queue the prior's forward (on its device, or its own stream with overlap); the result stays there."""
        if self.prior_conds is None:  # a guider whose inner_sample skipped the SAMPLER_SAMPLE wrappers
            self.prepare(x, sample_sigmas=model_options.get("transformer_options", {}).get("sample_sigmas"))
        if self.overlap and self.device == x.device:
            if self._side_stream is None:
                self._side_stream = torch.cuda.Stream(device=x.device)
            main = torch.cuda.current_stream(x.device)
            self._side_stream.wait_stream(main)  # x is ready
            with torch.cuda.stream(self._side_stream):
                return self._prior_forward(x, sigma)
        return self._prior_forward(x, sigma)

    def finish_prior(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The prior's prediction as the fine-tune's stream can use it: joined and on ``x``'s device."""
        if out.device != x.device:
            return out.to(x.device)  # a cross-GPU copy, ordered after both devices' queued work
        if self._side_stream is not None and self.overlap:
            main = torch.cuda.current_stream(x.device)
            main.wait_stream(self._side_stream)
            out.record_stream(main)  # allocated on the side stream, used and freed on the main one
        return out

    def prior_uncond(self, x: torch.Tensor, sigma: torch.Tensor, model_options: dict) -> torch.Tensor:
        """The prior's denoised prediction for its own negative conds at this (x, sigma)."""
        return self.finish_prior(self.start_prior(x, sigma, model_options), x)

    def _prior_forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        import comfy.samplers

        x_prior, sigma_prior = x, sigma
        if not self.same_sampling:
            x_prior, sigma_prior = to_prior_space(x, sigma, self.model_sampling, self.prior_sampling)
        if self.device != x.device:
            # Every copy between the GPUs happens here, before the prior's forward is queued: a cross-GPU copy
            # makes the source GPU wait for the work queued on the destination (PyTorch's two-way barrier),
            # so one after the forward would hold the fine-tune's GPU until the prior's forward ends.
            x_prior, sigma_prior, sigma = x_prior.to(self.device), sigma_prior.to(self.device), sigma.to(self.device)
        base = self.prior.model
        # _calc_cond_batch asks model.current_patcher for hooks/state; point it at the prior for this
        # call (the prior may even share its BaseModel with the fine-tune) and restore afterwards.
        previous = getattr(base, "current_patcher", None)
        base.current_patcher = self.prior
        try:
            if self.device.type == "cuda":
                with torch.cuda.device(self.device):
                    out = comfy.samplers.calc_cond_batch(base, [self.prior_conds], x_prior, sigma_prior,
                                                         self.prior_options)[0]
            else:
                out = comfy.samplers.calc_cond_batch(base, [self.prior_conds], x_prior, sigma_prior,
                                                     self.prior_options)[0]
        finally:
            base.current_patcher = previous
        self.prior_calls += 1
        # For the range warning: the prior's σ before it was moved to a level it knows (the same with one schedule).
        unclamped = sigma if self.same_sampling else prior_sigma(sigma, self.model_sampling, self.prior_sampling)
        checks = torch.stack((out.sum().float(), sigma.reshape(-1)[0].float(), unclamped.reshape(-1)[0].float()))
        self.reads.push(checks, self._after_step)
        return out


def _calc_cond_batch_wrapper(executor: Callable, model: Any, conds: list, x_in: torch.Tensor,
                             timestep: torch.Tensor, model_options: dict, *args, **kwargs):
    """CALC_COND_BATCH wrapper: swap the uncond slot for the prior's prediction."""
    run: PriorRun | None = model_options.get(KEY)
    if run is None:
        return executor(model, conds, x_in, timestep, model_options, *args, **kwargs)
    run.reads.poll()  # earlier steps' checks the GPU has delivered (may raise the NaN error)
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
    if run.concurrent(x_in):
        # Queue the prior first, so its GPU (or stream) works while the fine-tune's forward is queued.
        with composition.prior_call(run, model, x_in, model_options):  # hooks off, uncond's block skips
            pending = run.start_prior(x_in, timestep, model_options)
        out = list(executor(model, own_conds, x_in, timestep, model_options, *args, **kwargs))
        prior_out = run.finish_prior(pending, x_in)
    else:
        out = list(executor(model, own_conds, x_in, timestep, model_options, *args, **kwargs))
        with composition.prior_call(run, model, x_in, model_options):  # hooks off, uncond's block skips
            prior_out = run.prior_uncond(x_in, timestep, model_options)
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
        run.prepare(noise, latent_image, denoise_mask, run.seed, run.latent_shapes, sigmas)
    return executor(*args, **kwargs)


def _make_outer_sample_wrapper(prior: Prior, schedule: SwapSchedule, graphs: GraphCache) -> Callable:
    # A closure, not a bound method or partial: ModelPatcher.clone() deep-copies model_options and
    # would copy whatever a bound method or partial holds (tensors, the prior model).
    negative, label = prior.negative, prior.label

    def outer_sample(executor: Callable, *args, **kwargs):
        guider = executor.class_obj
        priors = guider.model_patcher.get_additional_models_with_key(KEY)
        if not priors:
            graphs.begin_run(mode=run_options(guider.model_options).cuda_graphs)
            try:
                return executor(*args, **kwargs)
            finally:
                graphs.end_run()
        # Patches added downstream of PriorSwapCFG (a LoRA on the fine-tune) are only visible now.
        check_shared_weights(guider.model_patcher, priors[0], "PriorSwapCFG")
        composition.check_run(guider, priors[0], schedule.prior_weight)  # SAG, PerpNeg, SLG Simple (issue 16)
        run = PriorRun(guider, priors[0], negative, schedule, graphs, label)
        run.seed, run.latent_shapes = _bound(executor, args, kwargs, "seed", "latent_shapes")
        graphs.begin_run(separate_pools=run.overlap, mode=run.options.cuda_graphs)
        run.insight = insight.start(guider, args, kwargs)
        guider.model_options[KEY] = run  # guider.model_options is this run's clone
        try:
            result = executor(*args, **kwargs)
            run.reads.flush()  # the last steps' checks (may raise the NaN error) and insight values
            return result
        finally:
            run.reads.discard()  # after a failure its own error is the one to report
            guider.model_options.pop(KEY, None)
            if run.insight is not None:
                run.insight.finish()
            why = "; ".join(f"{n}× {reason}" for reason, n in graphs.eager_reasons.items() if reason != "not on "
                            "a CUDA device")
            log.info("PriorSwapCFG: prior evaluated at %d of %d model calls on %s (CUDA graph replays %d, "
                     "eager %d%s, captured %d in %.0f ms)", run.prior_calls, run.steps, run.device or "-",
                     graphs.replays, graphs.eager, f": {why}" if why else "", graphs.captures, 1000 * graphs.capture_s)
            graphs.end_run()  # graphs are kept for the next run while valid (py/fastpath.py)

    return outer_sample


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
