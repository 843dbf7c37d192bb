"""Long sessions on the real ComfyUI: interrupts, /free, 50 prompts in a row, and no mutation of inputs.

Observables, all from outside the server process:
- results: the saved latents, compared bit for bit;
- the host's loaded-models list: with ``--verbose DEBUG`` (see conftest.py) ComfyUI logs
  ``Requested to load <model>`` when sampling loads a model that is not in its list, and
  ``Unloading <model>`` for every model that ``POST /free`` takes out of it;
- resident memory of the server process (psutil) and ComfyUI's own leak warnings in its log.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, replace

import psutil
import pytest
import torch

from support.prompts import NEGATIVE, POSITIVE, graph, read_latent
from support.server import prior_calls


@dataclass(frozen=True)
class Setting:
    """One prompt of the rotation: which pair, which sampler, which swap settings."""

    prior: str = "base"  # base | deep | v (base with ModelSamplingDiscrete v-pred) | lora (fine-tune + LoRA, base prior)
    sampler: str = "ksampler"  # ksampler | custom (PriorSwapGuider + SamplerCustomAdvanced)
    prior_weight: float = 1.0
    start_percent: float = 0.0
    end_percent: float = 1.0
    cfg: float = 5.0
    batch: int = 1
    seed: int = 0
    steps: int = 2
    size: int = 16
    no_op: int = 0  # RepeatLatentBatch(amount=1) nodes: force the sampler to run again, same result


def swap_graph(s: Setting) -> dict:
    """Every loader is in every prompt (so ComfyUI keeps them cached); one pair is wired to the sampler."""
    g = graph()
    ft = g.node("CheckpointLoaderSimple", ckpt_name="sd15_finetune.safetensors")
    base = g.node("PriorCheckpointLoader", ckpt_name="sd15_base.safetensors", negative_prompt="")
    deep = g.node("PriorCheckpointLoader", ckpt_name="sd15_deep_prior.safetensors", negative_prompt="")
    pos = g.node("CLIPTextEncode", clip=ft.out(1), text=POSITIVE)
    neg = g.node("CLIPTextEncode", clip=ft.out(1), text=NEGATIVE)
    model = ft.out(0)
    if s.prior == "v":
        vmodel = g.node("ModelSamplingDiscrete", model=base.out(1), sampling="v_prediction", zsnr=False)
        empty = g.node("CLIPTextEncode", clip=base.out(2), text="")
        prior = g.node("PriorFromModel", model=vmodel.out(0), negative=empty.out(0)).out(0)
    elif s.prior == "deep":
        prior = deep.out(0)
    else:
        prior = base.out(0)
    if s.prior == "lora":
        model = g.node("LoraLoaderModelOnly", model=model, lora_name="test_lora.safetensors",
                       strength_model=1.0).out(0)
    latent = g.node("EmptyLatentImage", width=s.size, height=s.size, batch_size=s.batch).out(0)
    for _ in range(s.no_op):
        latent = g.node("RepeatLatentBatch", samples=latent, amount=1).out(0)
    schedule = dict(prior_weight=s.prior_weight, start_percent=s.start_percent, end_percent=s.end_percent)
    if s.sampler == "ksampler":
        swapped = g.node("PriorSwapCFG", model=model, prior=prior, **schedule)
        samples = g.node("KSampler", model=swapped.out(0), seed=s.seed, steps=s.steps, cfg=s.cfg,
                         sampler_name="euler", scheduler="simple", positive=pos.out(0), negative=neg.out(0),
                         latent_image=latent, denoise=1.0).out(0)
    else:
        guider = g.node("PriorSwapGuider", model=model, prior=prior, positive=pos.out(0), cfg=s.cfg,
                        negative=neg.out(0), **schedule)
        samples = g.node("SamplerCustomAdvanced", noise=g.node("RandomNoise", noise_seed=s.seed).out(0),
                         guider=guider.out(0), sampler=g.node("KSamplerSelect", sampler_name="euler").out(0),
                         sigmas=g.node("BasicScheduler", model=model, scheduler="simple", steps=s.steps,
                                       denoise=1.0).out(0),
                         latent_image=latent).out(0)
    g.node("SaveLatent", samples=samples, filename_prefix="latents/life")
    return g.finalize()


def run(comfy_server, s: Setting) -> tuple[torch.Tensor, str]:
    """Run one setting; returns its latent and the part of the server log it wrote."""
    start = len(comfy_server.log_text())
    entry = comfy_server.run(swap_graph(s))
    files = comfy_server.output_files(entry, "latents")
    assert len(files) == 1, entry
    return read_latent(files[0]), comfy_server.log_text()[start:]


def free(comfy_server, **flags) -> str:
    """POST /free and wait until the worker has handled it; returns what it logged.

    Call it only with models loaded: the 'Unloading' lines are how it knows the worker is done.
    """
    start = len(comfy_server.log_text())
    deadline = time.time() + 30
    # ComfyUI's worker reads the flags when its queue wakes it; a wake-up that comes while it is busy (its
    # periodic gc.collect) is lost and the flags then wait for the next prompt. Posting again wakes it.
    while "Unloading" not in comfy_server.log_text()[start:]:
        assert time.time() < deadline, "POST /free was not handled"
        assert comfy_server.post("/free", {"unload_models": True, **flags}).status_code == 200
        for _ in range(10):
            time.sleep(0.1)
            if "Unloading" in comfy_server.log_text()[start:]:
                break
    last, stable = -1, 0
    while stable < 5 and time.time() < deadline:  # one line per model: wait until they are all written
        size = len(comfy_server.log_text())
        stable, last = (stable + 1 if size == last else 0), size
        time.sleep(0.1)
    return comfy_server.log_text()[start:]


def loaded(log: str, verb: str) -> list[str]:
    """Model classes in 'Requested to load X' (verb='load') or 'Unloading X' (verb='unload') lines."""
    pattern = r"^Requested to load (\w+)$" if verb == "load" else r"^Unloading (\w+)$"
    return re.findall(pattern, log, flags=re.M)


# -- /free ------------------------------------------------------------------------------------------------

def test_free_unloads_the_prior_too(comfy_server):
    run(comfy_server, Setting(seed=101))
    free(comfy_server)  # start from an empty loaded-models list
    first, log = run(comfy_server, Setting(seed=102))
    # Both the fine-tune and the prior were out of ComfyUI's list and had to be loaded again.
    assert loaded(log, "load") == ["BaseModel", "BaseModel"], log
    _, log = run(comfy_server, Setting(seed=103))
    assert loaded(log, "load") == [], log  # without /free both stay loaded
    unloaded = free(comfy_server)
    assert sorted(loaded(unloaded, "unload")) == ["BaseModel", "BaseModel"], unloaded  # fine-tune and prior
    again, log = run(comfy_server, Setting(seed=102, no_op=1))
    assert loaded(log, "load") == ["BaseModel", "BaseModel"], log
    assert torch.equal(again, first)


# -- interrupt --------------------------------------------------------------------------------------------

def _run_and_interrupt(comfy_server, s: Setting, after_steps: int = 2) -> str:
    """Queue a long run, POST /interrupt once it has done ``after_steps`` steps; returns its log."""
    import websocket

    start = len(comfy_server.log_text())
    ws = websocket.create_connection(f"ws://127.0.0.1:{comfy_server.port}/ws?clientId={comfy_server.client_id}", timeout=120)
    try:
        prompt_id = comfy_server.queue(swap_graph(s))
        while True:
            message = ws.recv()
            if not isinstance(message, str):
                continue  # binary preview frames
            event = json.loads(message)
            data = event.get("data", {})
            if event["type"] == "progress" and data.get("prompt_id") == prompt_id and data["value"] >= after_steps:
                break
            if event["type"] in ("execution_error", "execution_success") and data.get("prompt_id") == prompt_id:
                pytest.fail(f"the run ended before it could be interrupted: {event}")
        assert comfy_server.post("/interrupt").status_code == 200
    finally:
        ws.close()
    deadline = time.time() + 120
    while time.time() < deadline:
        history = comfy_server.get(f"/history/{prompt_id}")
        if prompt_id in history:
            status = history[prompt_id]["status"]
            assert status["status_str"] == "error" and not status["completed"], status
            assert [m[0] for m in status["messages"]][-1] == "execution_interrupted", status
            return comfy_server.log_text()[start:]
        time.sleep(0.2)
    raise TimeoutError("interrupted prompt never finished")


@pytest.mark.parametrize("setting", [Setting(prior="lora", size=64, steps=3, seed=5),
                                     Setting(prior="v", sampler="custom", size=64, steps=3, seed=6)],
                         ids=["ksampler-lora", "guider-v-prior"])
def test_interrupt_mid_sampling_then_next_prompt_gives_the_fresh_result(comfy_server, setting):
    before, _ = run(comfy_server, setting)
    log = _run_and_interrupt(comfy_server, replace(setting, steps=500))
    (calls, steps), = prior_calls(log)
    assert 2 <= steps < 500 and calls <= steps, (calls, steps)  # stopped mid-sampling
    after, log = run(comfy_server, replace(setting, no_op=1))
    assert prior_calls(log) == [(setting.steps, setting.steps)]
    assert torch.equal(after, before)
    # The stock model of the same loader is untouched too.
    stock_before = _stock(comfy_server, no_op=0)
    _run_and_interrupt(comfy_server, replace(setting, steps=500, seed=setting.seed + 1))
    assert torch.equal(_stock(comfy_server, no_op=2), stock_before)


def _stock(comfy_server, no_op: int) -> torch.Tensor:
    g = graph()
    ft = g.node("CheckpointLoaderSimple", ckpt_name="sd15_finetune.safetensors")
    latent = g.node("EmptyLatentImage", width=64, height=64, batch_size=1).out(0)
    for _ in range(no_op):
        latent = g.node("RepeatLatentBatch", samples=latent, amount=1).out(0)
    samples = g.node("KSampler", model=ft.out(0), seed=9, steps=2, cfg=5.0, sampler_name="euler", scheduler="simple",
                     positive=g.node("CLIPTextEncode", clip=ft.out(1), text=POSITIVE).out(0),
                     negative=g.node("CLIPTextEncode", clip=ft.out(1), text=NEGATIVE).out(0),
                     latent_image=latent, denoise=1.0)
    g.node("SaveLatent", samples=samples.out(0), filename_prefix="latents/stock")
    entry = comfy_server.run(g.finalize())
    return read_latent(comfy_server.output_files(entry, "latents")[0])


# -- soak -------------------------------------------------------------------------------------------------

ROTATION = [
    Setting(prior="base"),
    Setting(prior="deep", prior_weight=0.5, cfg=4.0),
    Setting(prior="v", sampler="custom"),
    Setting(prior="lora", start_percent=0.5),
    Setting(prior="base", cfg=1.0),  # the prior never runs
    Setting(prior="deep", sampler="custom", prior_weight=0.7, batch=2),
    Setting(prior="v", end_percent=0.5),
    Setting(prior="lora", sampler="custom"),
    Setting(prior="base", sampler="custom", prior_weight=0.3, batch=2),
    Setting(prior="deep", cfg=7.0),
]
PROMPTS = 50
MAX_RSS_GROWTH_MB = 48


@pytest.mark.soak
def test_soak_fifty_prompts_memory_and_loaded_models_stay_flat(comfy_server):
    proc = psutil.Process(comfy_server.proc.pid)
    start = len(comfy_server.log_text())
    rss, unloaded = {}, {}
    for i in range(PROMPTS):
        latent, _ = run(comfy_server, replace(ROTATION[i % len(ROTATION)], seed=1000 + i))
        assert torch.isfinite(latent).all()
        rss[i + 1] = proc.memory_info().rss / 2**20
        if i + 1 in (len(ROTATION), 2 * len(ROTATION), PROMPTS):
            # The last one also drops ComfyUI's node cache: the next tests find the server as they expect it.
            unloaded[i + 1] = sorted(loaded(free(comfy_server, free_memory=i + 1 == PROMPTS), "unload"))
            rss[i + 1] = proc.memory_info().rss / 2**20
    log = comfy_server.log_text()[start:]
    # ComfyUI's loaded-models list after the second rotation and after the fiftieth prompt: the same models.
    # (The first rotation also loads the text encoders; their encodings stay cached afterwards.)
    first, last = unloaded[2 * len(ROTATION)], unloaded[PROMPTS]
    assert first == last, (first, last)
    assert first.count("BaseModel") <= 3, first  # the fine-tune and at most two priors, never one per prompt
    # Resident memory: flat once every pair and setting has run twice (measured before the last /free).
    settled = rss[2 * len(ROTATION)]
    assert max(rss[i] for i in range(2 * len(ROTATION), PROMPTS)) - settled < MAX_RSS_GROWTH_MB, rss
    assert "memory leak" not in log  # ComfyUI's own detector of models kept alive by someone else
    counts = prior_calls(log)
    assert len(counts) == PROMPTS
    assert counts[4] == (0, 2)  # cfg 1: the prior never ran
