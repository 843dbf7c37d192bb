"""CUDA-graph replay of the diffusion model's forward, so a prior-swap step costs no more than stock CFG.

Stock CFG runs one batch-2 forward per step; prior swap cannot batch the prior's uncond with the
fine-tune's cond (different weights), so it runs two batch-1 forwards. On a fast GPU ComfyUI's eager
UNet forward is bound by kernel launches, not arithmetic, so two forwards cost nearly twice one.
Capturing each forward as a CUDA graph and replaying it removes the launch overhead.

Capturing is not free (``torch.cuda.graph`` synchronizes, collects garbage and empties the allocator's
cache, then traces a whole forward and instantiates the graph), so the graphs are kept across sampling
runs while what they read stays where it was. A graph bakes in the *addresses* of the weights, not their
values, so it is replayed only while, for its model, the weight patches (``current_weight_patches_uuid``)
and the address of every parameter and buffer are those it was captured with — checked once per run —
and for the same argument layout, scalar values and input shapes and dtypes. Graphs are dropped when

* a run sees another weight state for the model (LoRA or other patches changed, weights moved: stale
  graphs of that model are freed at once),
* ComfyUI unloads the model for real (``ON_DETACH`` with ``unpatch_all``: memory pressure, ``/free``),
* the patched MODEL is garbage collected (the GraphCache belongs to it),
* after a run ComfyUI's notion of free VRAM, minus what the graphs hold, falls below its own minimum
  inference reserve (``comfy.model_management.minimum_inference_memory()``),
* more than :data:`MAX_GRAPHS` are held (least recently used first), or the options say "per run"
  (Prior Swap Options; ``PRIOR_SWAP_KEEP_GRAPHS=0`` machine-wide): then they are freed at the end of every run.

All graphs of one patched model on one device share a single private memory pool: they are replayed one
after the other on one stream and each output is copied out right after its replay, so the pool holds
about one batch-1 forward's activations instead of one per graph. (Where the two models are replayed
concurrently on two streams, ``PRIOR_SWAP_OVERLAP=1``, each model gets its own pool.)

The graph wraps ``BaseModel.apply_model`` (an APPLY_MODEL wrapper), the one call every model family goes
through whatever its forward's arguments: tensors (in lists, tuples or dicts too) become the graph's inputs,
None and scalar values (a frame rate, a method name) part of its key. It is used only where replay gives the
eager result: the model fully loaded on the GPU (no lowvram streaming, no weights paged in on demand by newer
ComfyUI's dynamic VRAM: :func:`paged_weights`), no ControlNet or other Python object
among the inputs, no attention/transformer patches, no other node's APPLY_MODEL or DIFFUSION_MODEL wrapper
(EasyCache…) but TorchCompileModel's (captured with the compiled forward: :func:`compile_wrappers`), no
``transformer_options`` a forward reads as Python values (context windows, RoPE options), no weight hooks (their
Python code or weights may change per step). Anything else runs eagerly, and so does a shape whose capture
failed (a forward that syncs with the host).
The Prior Swap Options node (or ``PRIOR_SWAP_CUDA_GRAPHS=0`` machine-wide) switches it off.
"""
from __future__ import annotations

import itertools
import logging
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import torch

from .options import GRAPH_MODES, machine_defaults

log = logging.getLogger("prior_swap_cfg")

MAX_GRAPHS = 8  # per patched model, over both models and all shapes
MAX_CAPTURES_PER_RUN = 4  # a run with ever-changing shapes stays eager instead of capturing each step


def fully_loaded(base_model: Any) -> bool:
    """Whether ComfyUI holds all of a BaseModel's weights on its device (no lowvram streaming of the rest)."""
    return (not getattr(base_model, "model_lowvram", False)
            and getattr(base_model, "lowvram_patch_counter", 0) == 0)


def paged_weights(base_model: Any) -> bool:
    """Whether ComfyUI pages this model's weights in on demand: its dynamic VRAM (``ModelPatcherDynamic``, on by
    default on NVIDIA in newer ComfyUI; the patcher's ``is_dynamic()``, as core's own ``BaseModel._apply_model``
    asks). Each layer then faults its weight into a GPU page that ComfyUI may evict and refill between two
    forwards, or copies it into a temporary buffer: a replay would read what the capture saw, not the weight."""
    patcher = getattr(base_model, "current_patcher", None)
    is_dynamic = getattr(patcher, "is_dynamic", None)
    return bool(is_dynamic()) if callable(is_dynamic) else False


_PATCH_KEYS = ("patches", "patches_replace")


def _has_patches(transformer_options: dict) -> bool:
    return any(transformer_options.get(k) for k in _PATCH_KEYS)


def _weight_hooks(base_model: Any) -> bool:
    """True while the model's patcher has weight hooks (comfy.hooks), which swap weights between conds."""
    patcher = getattr(base_model, "current_patcher", None)
    return bool(patcher is not None and (getattr(patcher, "hook_patches", None)
                                         or getattr(patcher, "current_hooks", None)))


def compile_wrappers(patcher: Any) -> dict[int, str | None]:
    """TorchCompileModel's APPLY_MODEL wrappers on a ModelPatcher, by id: None where a CUDA graph may capture the
    compiled forward, else why not.

    Its wrapper only swaps the compiled module in for the call; with inductor's default mode the compiled forward
    is a fixed sequence of kernels launched from Python (the launches are what a graph removes: compiled, one
    batch-1 SDXL forward still cost as much as stock's batch-2 one). A compile that makes CUDA graphs of its own
    (backend ``cudagraphs``, mode ``reduce-overhead``/``max-autotune``, ``triton.cudagraphs``) cannot be captured
    inside another graph, and unknown settings (a version that keeps no arguments) are not guessed at.
    """
    import comfy.patcher_extension
    # TorchCompileModel's wrapper key and where it keeps its torch.compile arguments (0.3.75 and 0.38 alike)
    from comfy_api.torch_helpers.torch_compile import COMPILE_KEY, TORCH_COMPILE_KWARGS

    apply_model = comfy.patcher_extension.WrappersMP.APPLY_MODEL
    model_options = getattr(patcher, "model_options", None) or {}
    wrappers = list(patcher.get_wrappers(apply_model, COMPILE_KEY)) if hasattr(patcher, "get_wrappers") else []
    wrappers += comfy.patcher_extension.get_wrappers_with_key(apply_model, COMPILE_KEY, model_options,
                                                              is_model_options=True)
    settings = model_options.get(TORCH_COMPILE_KWARGS)
    why = None
    if not isinstance(settings, dict):
        why = "TorchCompileModel's settings unknown"
    elif settings.get("backend") != "inductor":
        why = f"torch.compile backend {settings.get('backend')!r} (CUDA graphs of its own)"
    elif settings.get("mode") in ("reduce-overhead", "max-autotune"):
        why = f"torch.compile mode {settings.get('mode')!r} (CUDA graphs of its own)"
    elif (settings.get("options") or {}).get("triton.cudagraphs"):
        why = "torch.compile option triton.cudagraphs (CUDA graphs of its own)"
    return {id(fn): why for fn in wrappers}


def weights_state(base_model: Any) -> tuple:
    """What a graph of ``base_model``'s forward depends on besides its inputs: patches and weight addresses.

    Values may change in place (a graph reads them at replay); addresses may not.
    """
    dm = base_model.diffusion_model
    addresses = tuple(t.data_ptr() for t in itertools.chain(dm.parameters(), dm.buffers()))
    return getattr(base_model, "current_weight_patches_uuid", None), hash(addresses), len(addresses)


class _CaptureStreams:
    """The CUDA streams graphs are warmed up and captured on, and what has already been warmed up on them.

    One stream per device, and one per model where the two models' graphs replay concurrently (``tag``).
    PyTorch gives each (cuBLAS handle, stream) its own cuBLAS workspace and a graph keeps the one of its capture
    stream, so graphs captured on one stream share it: harmless when they replay one after the other, a data
    race when they replay at the same time.

    Kept for the whole process (:data:`_STREAMS`), not per GraphCache: the workspaces cuBLAS makes for a stream
    live as long as the process, so streams shared by every patched model keep that memory bounded; and the
    lazy set-up a warm-up forward does (cuBLAS/cuDNN, the stream's workspace) is process state too, so a model
    warmed up once (device, stream, model, input shapes) needs no second warm-up forward when another patched
    MODEL over it, or a reload of it, captures again.
    """

    def __init__(self) -> None:
        self._streams: dict[tuple, Any] = {}  # (device index, tag) → stream
        self._warmed: set[tuple] = set()  # (device index, tag, id(BaseModel), input shapes)

    def stream(self, index: int, tag: Any = None) -> Any:
        stream = self._streams.get((index, tag))
        if stream is None:
            stream = self._streams[(index, tag)] = torch.cuda.Stream(device=index)
        return stream

    def warmed(self, key: tuple) -> bool:
        return key in self._warmed

    def mark_warmed(self, key: tuple) -> None:
        self._warmed.add(key)


_STREAMS = _CaptureStreams()  # process-wide: see the class


@dataclass
class _Graph:
    graph: Any  # torch.cuda.CUDAGraph
    static_in: list
    static_out: torch.Tensor
    device: int
    model: weakref.ref  # the BaseModel it was captured for (ids can be reused after garbage collection)


class GraphCache:
    """CUDA graphs of one patched model (its fine-tune and its prior), kept across runs while valid."""

    def __init__(self) -> None:
        self.graphs: OrderedDict[tuple, _Graph] = OrderedDict()  # least recently used first
        self.failed: dict[tuple, str] = {}  # key → why its capture failed (those shapes run eagerly)
        # (device index, tag) → a private memory pool; tag None: the one pool all graphs on that device share
        self.pools: dict[tuple, Any] = {}
        self.pool_bytes: dict[int, int] = {}  # device index → memory its pools took from the device
        self.in_run = False
        self.mode = GRAPH_MODES[0]
        self.busy = False  # capturing: a call of this cache nested in the captured one runs as it is
        self.separate_pools = False  # this run replays the two models concurrently (PRIOR_SWAP_OVERLAP)
        self._states: dict[int, tuple] = {}  # id(BaseModel) → weights_state, computed once per run
        self.compiled: dict[int, str | None] = {}  # this run's TorchCompileModel wrappers (compile_wrappers)
        self.replays = self.eager = self.captures = 0
        self.eager_reasons: dict[str, int] = {}  # why calls ran eagerly this run (logged at its end)
        self.capture_s = 0.0

    # -- lifecycle ------------------------------------------------------------------------------
    def begin_run(self, separate_pools: bool = False, mode: str | None = None, patchers: tuple = ()) -> None:
        """A sampling run starts: graphs may be used (weight states are re-read), counters at zero.

        ``separate_pools``: the run replays the prior's graph concurrently with the fine-tune's (a second
        stream), so each model's graphs need a pool of their own. ``mode``: one of ``options.GRAPH_MODES``
        (kept across runs, captured per run, off); None: the machine's default. ``patchers``: the sampled model
        and the prior, whose TorchCompileModel wrappers a graph may capture (:func:`compile_wrappers`).
        """
        self.in_run = True
        self.mode = mode or machine_defaults().cuda_graphs
        self.separate_pools = separate_pools
        self.compiled = {k: v for patcher in patchers for k, v in compile_wrappers(patcher).items()}
        self._states.clear()
        self.replays = self.eager = self.captures = 0
        self.eager_reasons = {}
        self.capture_s = 0.0

    def end_run(self) -> None:
        """A sampling run ended: keep the graphs unless switched off or ComfyUI would run short of VRAM."""
        self.in_run = False
        self._states.clear()
        self.compiled = {}
        if self.mode != GRAPH_MODES[0]:  # captured per run, or off
            self.clear()
            return
        for index in {i for i, _tag in self.pools}:
            if self._memory_tight(index):
                log.info("PriorSwapCFG: freeing CUDA graphs on cuda:%d (%.0f MiB): VRAM is short.",
                         index, self.pool_bytes.get(index, 0) / 2**20)
                self.drop_device(index)

    def clear(self) -> None:
        """Free every graph and its memory pool."""
        for index in {i for i, _tag in self.pools}:
            self.drop_device(index)
        self.graphs.clear()
        self.failed.clear()

    def drop_device(self, index: int) -> None:
        """Free the graphs on one device; their shared pool goes with the last of them."""
        for key in [k for k, g in self.graphs.items() if g.device == index]:
            del self.graphs[key]
        for pool_key in [k for k in self.pools if k[0] == index]:
            del self.pools[pool_key]
        self.pool_bytes.pop(index, None)

    def on_detach(self, patcher: Any, unpatch_all: bool = True) -> None:
        """ModelPatcher ON_DETACH callback: ComfyUI unloaded a model of this pair.

        ``unpatch_all=False`` is ComfyUI handing a loaded model over to a clone of it (weights stay where they
        are; the per-run weight check catches any change). A real unload frees the graphs on that device.
        """
        if not unpatch_all:
            return
        device = getattr(patcher, "load_device", None)
        if isinstance(device, torch.device) and device.type == "cuda":
            self.drop_device(device.index if device.index is not None else torch.cuda.current_device())

    def _memory_tight(self, index: int) -> bool:
        """ComfyUI counts the pool's idle blocks as free VRAM; is what is really free below its reserve?"""
        import comfy.model_management as mm

        try:
            free = mm.get_free_memory(torch.device("cuda", index))
            return free - self.pool_bytes.get(index, 0) < mm.minimum_inference_memory()
        except Exception:  # pragma: no cover - a backend without these queries: do not hold memory
            return True

    def _state(self, base_model: Any) -> tuple:
        key = id(base_model)
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = weights_state(base_model)
            stale = [k for k, g in self.graphs.items() if k[0] == key and (k[1] != state or g.model() is not base_model)]
            for k in stale:  # weights moved or patches changed since capture: free them now
                del self.graphs[k]
            if stale:
                log.info("PriorSwapCFG: %d CUDA graph(s) dropped: the model's weights or patches changed.", len(stale))
        return state

    # -- the APPLY_MODEL wrapper ------------------------------------------------------------------
    def wrapper(self, base_model: Any) -> "GraphedApplyModel":
        """An APPLY_MODEL wrapper for ``base_model`` (the BaseModel whose ``apply_model`` it wraps)."""
        return GraphedApplyModel(self, base_model)

    def run_eagerly(self, reason: str, executor: Callable, args: tuple, kwargs: dict) -> Any:
        """The call as it is, counted with why it was not replayed."""
        self.eager += 1
        self.eager_reasons[reason] = self.eager_reasons.get(reason, 0) + 1
        return executor(*args, **kwargs)

    def _pool(self, index: int, tag: Any) -> Any:
        pool = self.pools.get((index, tag))
        if pool is None:
            pool = self.pools[(index, tag)] = torch.cuda.graph_pool_handle()
        return pool

    def _capture(self, executor: Callable, base_model: Any, call: "_Call", index: int, tag: Any = None,
                 warm_up: bool = True) -> _Graph:
        started = time.perf_counter()
        with torch.cuda.device(index):
            static_in = [t.to(call.x.device, copy=True) for t in call.tensors]
            args, kwargs = call.rebuild(static_in)
            stream = _STREAMS.stream(index, tag)
            stream.wait_stream(torch.cuda.current_stream())
            self.busy = True  # a nested call of this cache (another wrapper level) runs as it is
            try:
                if warm_up:
                    with torch.cuda.stream(stream):  # warm-up off the capture, as torch.cuda.graphs requires
                        executor(*args, **kwargs)
                    # The forward writes into transformer_options (block counters): capture with the fresh arguments
                    # a host call passes (a compiled forward's guards read them; a mismatch recompiles mid-capture).
                    args, kwargs = call.rebuild(static_in)
                torch.cuda.synchronize()
                torch.cuda.empty_cache()  # torch.cuda.graph does this too; here so the pool's growth is measured
                reserved = torch.cuda.memory_reserved()
                graph = torch.cuda.CUDAGraph()
                try:
                    with torch.cuda.graph(graph, pool=self._pool(index, tag), stream=stream):
                        static_out = executor(*args, **kwargs)
                except Exception:
                    # A capture that fails leaves its pool marked as recording (seen on an H200: the next capture
                    # into it raised "already recording to mempool_id"), so the next capture gets a pool of its own;
                    # graphs captured earlier keep theirs.
                    self.pools.pop((index, tag), None)
                    raise
            finally:
                self.busy = False
            if not isinstance(static_out, torch.Tensor):
                raise TypeError(f"the model returned {type(static_out).__name__}, not a tensor")
            self.pool_bytes[index] = self.pool_bytes.get(index, 0) + max(0, torch.cuda.memory_reserved() - reserved)
        self.captures += 1
        self.capture_s += time.perf_counter() - started
        return _Graph(graph, static_in, static_out, index, weakref.ref(base_model))


class GraphedApplyModel:
    """The APPLY_MODEL wrapper of one BaseModel: each call replayed from :attr:`cache` where that gives the
    eager result, else run as it is (counted, with why, in the cache).

    ``BaseModel.apply_model`` is the one call every model family goes through (SD3's MMDiT and PixArt never
    call the DIFFUSION_MODEL wrappers; the others call them with their own argument lists), so the wrapper
    takes whatever arguments it is given and passes every one through unchanged.

    An object, so that the cache it replays from is a plain attribute (a patched model's wrappers under the
    pack's key tell what its fast path did). ``ModelPatcher.clone()`` copies wrapper lists, not their items;
    copies of model_options keep it as they keep a function: one wrapper, one cache.
    """

    def __init__(self, cache: GraphCache, base_model: Any) -> None:
        self.cache = cache
        self.base_model = base_model

    def __copy__(self) -> "GraphedApplyModel":
        return self

    def __deepcopy__(self, memo: dict) -> "GraphedApplyModel":
        return self

    def __call__(self, executor: Callable, *args, **kwargs) -> Any:
        cache, base_model = self.cache, self.base_model
        if cache.busy:  # inside this cache's own capture
            return executor(*args, **kwargs)
        call = "outside a sampling run" if not cache.in_run else "switched off" if cache.mode == GRAPH_MODES[2] else (
            _replayable_call(executor, base_model, args, kwargs, cache.compiled))
        if isinstance(call, str):  # a model, input or wrapper a replay would not reproduce: run it as it is
            return cache.run_eagerly(call, executor, args, kwargs)
        index = call.x.device.index if call.x.device.index is not None else torch.cuda.current_device()
        tag = id(base_model) if cache.separate_pools else None
        # call.compiled: a graph of the compiled forward is another graph than the eager one's
        key = (id(base_model), cache._state(base_model), call.structure, call.shapes, index, tag, call.compiled)
        entry = cache.graphs.get(key)
        if entry is None:
            if key in cache.failed:
                return cache.run_eagerly(cache.failed[key], executor, args, kwargs)
            if cache.captures >= MAX_CAPTURES_PER_RUN:
                return cache.run_eagerly("more input shapes than graphs captured per run", executor, args, kwargs)
            try:
                # per capture stream (its cuBLAS workspace); a compiled forward compiles a shape at its warm-up
                warm = (index, tag, id(base_model), call.shapes, call.compiled)
                entry = cache._capture(executor, base_model, call, index, tag, warm_up=not _STREAMS.warmed(warm))
                _STREAMS.mark_warmed(warm)
            except Exception as e:  # capture fails on a forward that syncs with the host: eager from then on
                log.warning("PriorSwapCFG: CUDA graph capture failed (%s); running this shape eagerly.", e)
                first_line = str(e).splitlines()[0][:120] if str(e) else ""
                cache.failed[key] = f"capture failed ({type(e).__name__}: {first_line})"
                return cache.run_eagerly(cache.failed[key], executor, args, kwargs)
            cache.graphs[key] = entry
            while len(cache.graphs) > MAX_GRAPHS:
                cache.graphs.popitem(last=False)
        else:
            cache.graphs.move_to_end(key)
        with torch.cuda.device(index):  # replay launches on the current device's stream
            for buf, value in zip(entry.static_in, call.tensors):
                buf.copy_(value)
            entry.graph.replay()
            cache.replays += 1
            # Copied out at once: a graph captured later in the shared pool may overwrite this buffer.
            return entry.static_out.clone()


# transformer_options keys a replay reproduces: the host's per-call bookkeeping (its tensors are graph inputs,
# the rest is not read by any model's forward), block counters the models write, and the wrappers (checked
# below). Anything else (rope_options, context_window, easycache, attention overrides…) is read as Python
# values during the forward, which a replay would freeze: such calls run eagerly.
_REPLAYABLE_OPTIONS = frozenset((
    "sigmas", "sample_sigmas", "cond_or_uncond", "uuids", "wrappers", "callbacks", "patches", "patches_replace",
    "transformer_index", "block", "block_index", "original_shape", "activations_shape", "total_blocks",
    "block_type"))
_SCALARS = (bool, int, float, str)


class _NotReplayable(Exception):
    pass


def _flatten(value: Any, tensors: list) -> Any:
    """A hashable description of ``value``'s structure with its tensors taken out into ``tensors``."""
    if isinstance(value, torch.Tensor):
        tensors.append(value)
        return ("T", tuple(value.shape), value.dtype, value.device)
    if value is None or isinstance(value, _SCALARS):
        return ("V", type(value).__name__, value)
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_flatten(v, tensors) for v in value))
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return ("dict", tuple((k, _flatten(v, tensors)) for k, v in value.items()))
    raise _NotReplayable(type(value).__name__)


def _unflatten(structure: Any, tensors: Any) -> Any:
    kind = structure[0]
    if kind == "T":
        return next(tensors)
    if kind == "V":
        return structure[2]
    if kind == "dict":
        return {k: _unflatten(v, tensors) for k, v in structure[1]}
    items = [_unflatten(v, tensors) for v in structure[1]]
    return tuple(items) if kind == "tuple" else items


@dataclass
class _Call:
    """One apply_model call taken apart: its tensors (the graph's inputs) and everything else, as a key."""

    x: torch.Tensor
    tensors: list
    structure: tuple  # hashable: argument layout, scalar values, tensor shapes/dtypes/devices
    shapes: tuple
    options: dict  # transformer_options with its tensors replaced by a placeholder
    option_slot: Any  # where transformer_options sits: an int (positional) or "transformer_options"
    compiled: tuple = ()  # ids of the TorchCompileModel wrappers the call runs through

    def rebuild(self, tensors: list) -> tuple[tuple, dict]:
        """The call's arguments with ``tensors`` in place of its own (transformer_options copied)."""
        it = iter(tensors)
        args = list(_unflatten(self.structure[0], it))
        kwargs = _unflatten(self.structure[1], it)
        options = dict(self.options)
        for k in self.structure[2]:
            options[k] = next(it)
        if isinstance(self.option_slot, int):
            args.insert(self.option_slot, options)
        else:
            kwargs[self.option_slot] = options
        return tuple(args), kwargs


def _replayable_call(executor: Callable, base_model: Any, args: tuple, kwargs: dict,
                     compiled: dict[int, str | None] | None = None) -> "_Call | str":
    """The call as graph inputs, or why a replay would not reproduce the eager forward.

    ``compiled``: this run's TorchCompileModel wrappers (:func:`compile_wrappers`), the one other APPLY_MODEL
    wrapper a graph captures with the forward."""
    import comfy.patcher_extension

    if paged_weights(base_model):  # first: newer ComfyUI gives a CPU model a plain patcher, so never said on the CPU
        return "weights paged on demand (ComfyUI's dynamic VRAM)"
    if not args or not isinstance(args[0], torch.Tensor) or not args[0].is_cuda:
        return "not on a CUDA device"
    if not fully_loaded(base_model):
        return "model partly loaded (lowvram)"
    if _weight_hooks(base_model):
        return "weight hooks"
    # transformer_options: by keyword, or the one positional dict (apply_model passes it sixth).
    slot: Any = "transformer_options" if isinstance(kwargs.get("transformer_options"), dict) else None
    if slot is None:
        dicts = [i for i, a in enumerate(args) if isinstance(a, dict)]
        if len(dicts) != 1:
            return "no transformer_options"
        slot = dicts[0]
    options = kwargs[slot] if isinstance(slot, str) else args[slot]
    unknown = sorted(k for k, v in options.items() if k not in _REPLAYABLE_OPTIONS and v is not None
                     and not (isinstance(v, (dict, list, tuple)) and not v))
    if unknown:
        return f"transformer_options {unknown}"
    if _has_patches(options):
        return "attention/block patches"
    # Another node's wrapper of the model call (EasyCache's…) would run frozen inside the graph, or around a
    # forward the graph replaces: step aside. TorchCompileModel's only swaps the compiled module in (captured).
    wrappers = list(getattr(executor, "wrappers", ()))
    others = [w for w in wrappers if not isinstance(w, GraphedApplyModel)]
    if len(wrappers) - len(others) > 1:  # another pack-patched model's graphs around this one's
        return "another APPLY_MODEL wrapper"
    for other in others:
        why = (compiled or {}).get(id(other), "another APPLY_MODEL wrapper")
        if why:
            return why
    if options.get("wrappers", {}).get(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL):
        return "a DIFFUSION_MODEL wrapper"
    rest_args = tuple(a for i, a in enumerate(args) if i != slot)
    rest_kwargs = {k: v for k, v in kwargs.items() if k != slot}
    tensors: list = []
    try:
        structure_args = _flatten(rest_args, tensors)
        structure_kwargs = _flatten(rest_kwargs, tensors)
    except _NotReplayable as e:  # a ControlNet, a Python object among the conds…
        return f"a {e} input"
    option_tensors = tuple(k for k, v in options.items() if isinstance(v, torch.Tensor))
    tensors.extend(options[k] for k in option_tensors)
    # The conds reach apply_model on the CPU (it casts them to the GPU each call): their graph inputs live on the
    # GPU and each replay copies them in, as the eager call would. A tensor on another GPU cannot be read.
    device = args[0].device
    elsewhere = sorted({str(t.device) for t in tensors if t.is_cuda and t.device != device})
    if elsewhere:
        return f"inputs on {', '.join(elsewhere)}"
    placeholder = {k: v for k, v in options.items() if k not in option_tensors}
    shapes = tuple((tuple(t.shape), t.dtype) for t in tensors)
    structure = (structure_args, structure_kwargs, option_tensors)
    return _Call(args[0], tensors, structure, shapes, placeholder, slot, tuple(sorted(id(w) for w in others)))
