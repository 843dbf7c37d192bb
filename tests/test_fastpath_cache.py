"""Bookkeeping of the CUDA-graph cache and the per-step checks, on the CPU with real ComfyUI objects.

Graph capture and replay themselves need a GPU (tests/test_fastpath_cuda.py); what decides *when* a kept
graph is still valid — the weight state, ComfyUI's ON_DETACH callback, the keep switch — runs anywhere.
"""
from __future__ import annotations

import logging

import pytest
import torch

from support.comfy_env import pack_module
from support.inprocess import core
from support.inprocess import empty_prior as _prior

pytestmark = pytest.mark.fast  # no server: see pytest.ini


def _graph_cache(patched, key: str):
    """The GraphCache a patched model's fast path replays from: its APPLY_MODEL wrapper's ``cache``."""
    import comfy.patcher_extension

    (wrapper,) = patched.get_wrappers(comfy.patcher_extension.WrappersMP.APPLY_MODEL, key)
    return wrapper.cache


class _FakeGraph:
    """Stands in for a captured graph in the cache's bookkeeping (device 0, no CUDA needed)."""

    def __init__(self, fastpath, base_model):
        import weakref

        self.entry = fastpath._Graph(graph=None, static_in=[], static_out=torch.zeros(1), device=0,
                                     model=weakref.ref(base_model))


def test_weight_state_follows_addresses_and_patches_not_values(sd15):
    import comfy.utils

    fastpath = core("fastpath")
    model, _clip = sd15
    base = model.clone().model  # the same BaseModel: states are read, not changed, until the swap below
    state = fastpath.weights_state(base)
    with torch.no_grad():  # values changed in place: a graph reads them at replay, so still valid
        next(base.diffusion_model.parameters()).add_(0.0)
    assert fastpath.weights_state(base) == state
    key = "diffusion_model.out.2.weight"
    old = comfy.utils.get_attr(base, key)
    try:  # a weight at another address (what patching a LoRA in does): not valid
        comfy.utils.set_attr_param(base, key, old.detach().clone())
        assert fastpath.weights_state(base) != state
    finally:
        comfy.utils.set_attr_param(base, key, old)
    assert fastpath.weights_state(base) == state
    uuid = getattr(base, "current_weight_patches_uuid", None)
    try:
        base.current_weight_patches_uuid = "another patch set"
        assert fastpath.weights_state(base) != state
    finally:
        base.current_weight_patches_uuid = uuid


def test_stale_graphs_dropped_when_a_run_sees_other_weights(sd15):
    import comfy.utils

    fastpath = core("fastpath")
    model, _clip = sd15
    base = model.model
    cache = fastpath.GraphCache()
    cache.begin_run()
    key = (id(base), cache._state(base), (), (), (), 0, None)
    cache.graphs[key] = _FakeGraph(fastpath, base).entry
    cache.end_run()
    cache.begin_run()
    assert cache._state(base) == key[1] and key in cache.graphs  # nothing changed: kept
    cache.end_run()
    name = "diffusion_model.out.2.weight"
    old = comfy.utils.get_attr(base, name)
    comfy.utils.set_attr_param(base, name, old.detach().clone())
    try:
        cache.begin_run()
        cache._state(base)
        assert key not in cache.graphs  # the weight moved: the graph would read freed memory
        cache.end_run()
    finally:
        comfy.utils.set_attr_param(base, name, old)


def test_comfy_unloading_the_model_frees_its_graphs(sd15):
    """ON_DETACH with unpatch_all (a real unload, /free) frees; a hand-over to a clone does not."""
    import comfy.patcher_extension

    routing, fastpath = core("routing"), core("fastpath")
    model, clip = sd15
    patched = routing.apply_prior_swap(model, _prior(model, clip), routing.SwapSchedule())
    cache = _graph_cache(patched, routing.KEY)
    assert cache is not None
    callbacks = patched.get_all_callbacks(comfy.patcher_extension.CallbacksMP.ON_DETACH)
    assert len(callbacks) == 1
    cache.graphs[("k",)] = _FakeGraph(fastpath, patched.model).entry
    cache.pools[(0, None)] = object()
    patched.load_device = torch.device("cuda", 0)  # as on a GPU machine (the callback frees per device)
    try:
        for cb in callbacks:
            cb(patched, False)  # ComfyUI handing the loaded weights to a clone: weights stay, graphs stay
        assert cache.graphs
        for cb in callbacks:
            cb(patched, True)
        assert not cache.graphs and not cache.pools
    finally:
        patched.load_device = model.load_device
    # A second PriorSwapCFG on the patched model replaces the callback instead of stacking it.
    again = routing.apply_prior_swap(patched, _prior(model, clip), routing.SwapSchedule())
    assert len(again.get_all_callbacks(comfy.patcher_extension.CallbacksMP.ON_DETACH)) == 1


def test_keep_switch_frees_graphs_at_run_end(sd15, monkeypatch):
    fastpath = core("fastpath")
    model, _clip = sd15
    cache = fastpath.GraphCache()
    monkeypatch.setenv("PRIOR_SWAP_KEEP_GRAPHS", "0")  # the machine default, read when a run begins
    cache.begin_run()
    cache.graphs[("k",)] = _FakeGraph(fastpath, model.model).entry
    cache.end_run()
    assert not cache.graphs and not cache.in_run
    cache.begin_run(mode="keep across runs")  # Prior Swap Options' choice wins over the environment
    cache.graphs[("k",)] = _FakeGraph(fastpath, model.model).entry
    cache.end_run()
    assert cache.graphs


def test_graphs_only_inside_a_run():
    """Outside a sampling run begun by the pack's wrapper the forward always runs eagerly."""
    fastpath = core("fastpath")
    cache = fastpath.GraphCache()
    calls = []

    def executor(*args, **kwargs):
        calls.append(args)
        return "eager"

    forward = cache.wrapper(object())
    assert forward(executor, torch.zeros(1), None, None, None, None, {}) == "eager"
    assert cache.eager == 1 and not cache.graphs


def test_prior_device_option(monkeypatch, caplog):
    options = core("options")
    monkeypatch.delenv("PRIOR_SWAP_PRIOR_DEVICE", raising=False)
    assert options.prior_device(options.machine_defaults(), torch.device("cpu")) is None
    for value in ("", "off", "default"):
        monkeypatch.setenv("PRIOR_SWAP_PRIOR_DEVICE", value)
        assert options.prior_device(options.machine_defaults(), torch.device("cpu")) is None
    caplog.set_level(logging.WARNING, logger="prior_swap_cfg")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for value in (f"cuda:{count}", "banana"):  # not a GPU of this machine: reported once, ignored
        monkeypatch.setenv("PRIOR_SWAP_PRIOR_DEVICE", value)
        assert options.prior_device(options.machine_defaults(), torch.device("cpu")) is None
        assert options.prior_device(options.machine_defaults(), torch.device("cpu")) is None
        assert sum(value in r.getMessage() for r in caplog.records) == 1
    if count < 2:  # "another GPU" on a machine without one: reported once, the model's device
        assert options.prior_device(options.RunOptions(prior_device="another"), torch.device("cpu")) is None


def test_prior_device_ignored_where_unusable_keeps_the_prior_itself(sd15, monkeypatch):
    routing = core("routing")
    model, clip = sd15
    prior = _prior(model, clip)
    monkeypatch.setenv("PRIOR_SWAP_PRIOR_DEVICE", "cuda:7")
    patched = routing.apply_prior_swap(model, prior, routing.SwapSchedule())
    assert patched.get_additional_models_with_key(routing.KEY) == [prior.model]


def test_options_node_choices_reach_the_run_and_beat_the_machine_default(sd15, monkeypatch):
    """Prior Swap Options on the fine-tune: its graph mode is what the run uses, whatever the environment."""
    import comfy.sample

    routing, options = core("routing"), core("options")
    nodes = pack_module("nodes").NODE_CLASS_MAPPINGS
    model, clip = sd15
    monkeypatch.setenv("PRIOR_SWAP_CUDA_GRAPHS", "1")
    with_options = nodes["PriorSwapOptions"].execute(model, "off", "same GPU as the model", False)[0]
    assert options.OPTIONS_KEY not in model.model_options  # the input MODEL is not changed
    patched = routing.apply_prior_swap(with_options, _prior(model, clip), routing.SwapSchedule())
    cond = [[torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(1)), {}]]
    latent = torch.zeros(1, 4, 8, 8)
    comfy.sample.sample(patched, comfy.sample.prepare_noise(latent, 0), 2, 5.0, "euler", "simple", cond,
                        _prior(model, clip).negative, latent, disable_pbar=True, seed=0)
    cache = _graph_cache(patched, routing.KEY)
    assert cache.eager_reasons == {"switched off": 4}  # 2 steps × (fine-tune + prior), none replayed
    # Put after Prior Swap CFG it could not move the prior any more: refused, naming where it goes.
    with pytest.raises(core("errors").PriorSwapError, match="between the fine-tune's loader and Prior Swap CFG"):
        nodes["PriorSwapOptions"].execute(patched, "off", "another GPU", False)


def test_deferred_reads_on_cpu_are_immediate_and_in_order():
    deferred = core("deferred")
    reads = deferred.DeferredReads()
    seen = []
    reads.push(torch.tensor([1.0, 2.0]), seen.append)
    reads.push(torch.tensor([3.0]), seen.append)
    assert seen == [[1.0, 2.0], [3.0]] and len(reads) == 0
    reads.flush()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_deferred_reads_on_gpu_arrive_by_flush():
    deferred = core("deferred")
    reads = deferred.DeferredReads()
    seen = []
    for i in range(3):
        reads.push(torch.full((2,), float(i), device="cuda"), seen.append)
    reads.flush()
    assert seen == [[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]


def test_a_pair_comfyui_loaded_in_part_is_named_in_a_warning(caplog):
    """The check behind the "does not fit in VRAM" warning reads what the host's own partial load leaves:
    ModelPatcher.load with a memory budget below the model's size (what load_models_gpu does on a card too small
    for the pair) streams the rest, and the warning names that model and the remedies."""
    routing = core("routing")
    toy = core("toy_pair")
    model, prior = toy.load_toy_model("finetune"), toy.load_toy_model("base")
    caplog.set_level(logging.WARNING, logger="prior_swap_cfg")
    model.load(torch.device("cpu"), full_load=True)  # as LoadedModel.model_load loads a model that fits
    prior.load(torch.device("cpu"), full_load=True)
    routing.warn_if_streamed(model, prior)
    assert not caplog.records  # both loaded whole
    prior.load(torch.device("cpu"), lowvram_model_memory=1)  # a budget for none of its weights
    try:
        routing.warn_if_streamed(model, prior)
    finally:
        prior.detach()
    (record,) = caplog.records
    text = record.getMessage()
    assert text.startswith("PriorSwapCFG: the model and the prior do not both fit in VRAM: ComfyUI loaded the "
                           "prior in part")
    assert "fp8_e4m3fn" in text and "second GPU" in text


def test_torch_compile_wrappers_a_graph_may_capture(sd15):
    """TorchCompileModel's wrapper on the fine-tune and on the prior (the host's node and its helper, not called:
    nothing compiles here) is registered for a run; only inductor without CUDA graphs of its own is capturable."""
    from comfy_api.torch_helpers import set_torch_compile_wrapper
    from comfy_api.torch_helpers.torch_compile import TORCH_COMPILE_KWARGS
    from comfy_extras.nodes_torch_compile import TorchCompileModel

    fastpath, routing = core("fastpath"), core("routing")
    model, clip = sd15
    compiled = TorchCompileModel.execute(model, "inductor")[0]
    assert list(fastpath.compile_wrappers(compiled).values()) == [None]
    assert fastpath.compile_wrappers(model) == {}  # the loader's model: no wrapper
    why = fastpath.compile_wrappers(TorchCompileModel.execute(model, "cudagraphs")[0])
    assert list(why.values()) == ["torch.compile backend 'cudagraphs' (CUDA graphs of its own)"]
    reduce_overhead = model.clone()
    set_torch_compile_wrapper(reduce_overhead, backend="inductor", mode="reduce-overhead")
    assert "reduce-overhead" in list(fastpath.compile_wrappers(reduce_overhead).values())[0]
    unknown = compiled.clone()
    unknown.model_options.pop(TORCH_COMPILE_KWARGS)  # an older helper kept no arguments: not guessed at
    assert list(fastpath.compile_wrappers(unknown).values()) == ["TorchCompileModel's settings unknown"]

    # Prior Swap CFG on the compiled fine-tune with a compiled prior: the run registers both wrappers.
    prior_model = TorchCompileModel.execute(model, "inductor")[0]
    swapped = routing.apply_prior_swap(compiled, _prior(prior_model, clip), routing.SwapSchedule())
    cache = _graph_cache(swapped, "prior_swap_cfg")
    cache.begin_run(patchers=(swapped, prior_model))
    assert set(cache.compiled) == (set(fastpath.compile_wrappers(compiled))
                                   | set(fastpath.compile_wrappers(prior_model)))
    assert len(cache.compiled) == 2 and set(cache.compiled.values()) == {None}
    cache.end_run()
    assert cache.compiled == {}
