"""The second-GPU prior keeps newer ComfyUI's ModelPatcher contract for changing ``load_device``.

Upstream ComfyUI, ``comfy/model_patcher.py`` at commit 08d0e510f4e539a1db39072589817136ac6cfa7d
(https://github.com/Comfy-Org/ComfyUI/blob/08d0e510f4e539a1db39072589817136ac6cfa7d/comfy/model_patcher.py):
``ModelPatcherDynamic`` (used when comfy-aimdo is present) keeps per-device pin state in
``model.dynamic_pins[load_device]``, filled by ``register_load_device(device)``, whose docstring says it is
"Called from __init__ and also from any code that retargets an already-constructed patcher to a new
load_device (...); without this entry partially_unload_ram() raises KeyError when it tries to read the
per-device pin state." ``partially_unload_ram``, ``loaded_ram_size``, ``pinned_memory_size`` and
``set_in_use_by_current_prompt`` all read ``self.model.dynamic_pins[self.load_device]``; upstream's own
``deepclone_multigpu`` sets ``n.load_device`` and then calls ``n.register_load_device(n.load_device)``
when the patcher has it.

The host here (0.3.75) has no ModelPatcherDynamic, so :class:`DynamicLikePatcher` below reproduces that
bookkeeping on 0.3.75's ModelPatcher (CPU only, nothing is loaded): the pack's second-GPU path
(PRIOR_SWAP_PRIOR_DEVICE) must register the device it moves the prior's clone to.

The same patcher answers ``is_dynamic()`` as ModelPatcherDynamic does (True; the base ModelPatcher's is False, same
file and commit), the question core's own ``BaseModel._apply_model`` asks of ``current_patcher``
(comfy/model_base.py at 094c74c1). Its weights are paged in per layer on demand, into GPU pages ComfyUI may evict
and refill between forwards (``ModelPatcherDynamic.partially_unload`` → ``vbar.free_memory``; comfy/ops.py at
0271a469, ``cast_bias_weight_with_vbar``): the pack's CUDA graphs must not capture such a forward.
"""
from __future__ import annotations

import pytest
import torch

from support.comfy_env import import_comfy, pack_module

import_comfy()

import comfy.model_patcher  # noqa: E402

pytestmark = pytest.mark.fast  # no server: see pytest.ini

SECOND_GPU = torch.device("cuda", 1)


class DynamicLikePatcher(comfy.model_patcher.ModelPatcher):
    """0.3.75's ModelPatcher with upstream ModelPatcherDynamic's per-device pin bookkeeping."""

    def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
        super().__init__(model, load_device, offload_device, size, weight_inplace_update=weight_inplace_update)
        if not hasattr(self.model, "dynamic_pins"):
            self.model.dynamic_pins = {}
        self.registered: list[torch.device] = []
        self.register_load_device(self.load_device)

    def register_load_device(self, device):
        self.registered.append(device)
        if device not in self.model.dynamic_pins:
            self.model.dynamic_pins[device] = {"weights": [], "patches": [], "current_prompt": False}

    def partially_unload_ram(self, ram_to_unload):
        pin_state = self.model.dynamic_pins[self.load_device]  # KeyError for an unregistered device, as upstream
        return 0 if pin_state is not None else 0

    def set_in_use_by_current_prompt(self, in_use):
        self.model.dynamic_pins[self.load_device]["current_prompt"] = in_use

    def is_dynamic(self):
        return True  # upstream: ModelPatcher.is_dynamic() is False, ModelPatcherDynamic.is_dynamic() True


def _toy(which: str):
    return pack_module("py.toy_pair").load_toy_model(which)


def _prior(patcher):
    toy = pack_module("py.toy_pair")
    return pack_module("py.prior").make_prior(patcher, toy.toy_conditioning(toy.EMPTY))


@pytest.fixture
def second_gpu(monkeypatch):
    """PRIOR_SWAP_PRIOR_DEVICE=cuda:1 on a machine that reports two GPUs (nothing is moved in these tests)."""
    monkeypatch.setenv("PRIOR_SWAP_PRIOR_DEVICE", "cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    return SECOND_GPU


def _placed(swapped):
    routing = pack_module("py.routing")
    (placed,) = swapped.get_additional_models_with_key(routing.KEY)
    return placed


def _swap(model, prior):
    routing = pack_module("py.routing")
    return routing.apply_prior_swap(model, prior, routing.SwapSchedule(1.0, 0.0, 1.0))


def test_the_stand_in_raises_like_upstream_when_load_device_changes_unregistered():
    """The contract's negative control: retargeting without register_load_device breaks partially_unload_ram."""
    base = _toy("base")
    patcher = DynamicLikePatcher(base.model, base.load_device, base.offload_device).clone()
    patcher.load_device = SECOND_GPU
    with pytest.raises(KeyError):
        patcher.partially_unload_ram(1e32)
    patcher.register_load_device(SECOND_GPU)
    assert patcher.partially_unload_ram(1e32) == 0


def test_second_gpu_prior_registers_its_load_device(second_gpu):
    base = _toy("base")
    prior_patcher = DynamicLikePatcher(base.model, base.load_device, base.offload_device)
    swapped = _swap(_toy("finetune"), _prior(prior_patcher))
    placed = _placed(swapped)
    assert placed is not prior_patcher and placed.model is prior_patcher.model
    assert placed.load_device == second_gpu
    assert placed.registered[-1] == second_gpu, "the clone moved to cuda:1 did not call register_load_device"
    assert second_gpu in placed.model.dynamic_pins
    placed.partially_unload_ram(1e32)  # what ComfyUI's RAM pressure path calls: no KeyError
    placed.set_in_use_by_current_prompt(True)
    # The prior the user built stays on its own device.
    assert prior_patcher.load_device == base.load_device


def test_same_device_prior_is_not_retargeted(monkeypatch):
    monkeypatch.delenv("PRIOR_SWAP_PRIOR_DEVICE", raising=False)
    base = _toy("base")
    prior_patcher = DynamicLikePatcher(base.model, base.load_device, base.offload_device)
    placed = _placed(_swap(_toy("finetune"), _prior(prior_patcher)))
    assert placed is prior_patcher and placed.registered == [base.load_device]


def test_a_patcher_without_register_load_device_still_moves(second_gpu):
    """0.3.75's own ModelPatcher (no register_load_device): the clone only changes load_device."""
    base = _toy("base")
    assert not hasattr(base, "register_load_device")
    placed = _placed(_swap(_toy("finetune"), _prior(base)))
    assert type(placed) is comfy.model_patcher.ModelPatcher and placed.load_device == second_gpu
    assert base.load_device != second_gpu


def test_fast_path_never_captures_a_model_whose_weights_are_paged_on_demand():
    """A run of the stock KSampler with the fine-tune and the prior in dynamic patchers: every model call of the pair
    runs eagerly, for that reason; 0.3.75's own patcher is not taken for one."""
    import comfy.patcher_extension
    import nodes  # ComfyUI's stock KSampler

    fastpath, toy = pack_module("py.fastpath"), pack_module("py.toy_pair")
    plain = _toy("base")
    plain.pre_run()  # what CFGGuider.outer_sample does: the BaseModel's current_patcher is this patcher
    assert not fastpath.paged_weights(plain.model)

    def dynamic(which):
        p = _toy(which)
        return DynamicLikePatcher(p.model, p.load_device, p.offload_device)

    swapped = _swap(dynamic("finetune"), _prior(dynamic("base")))
    (wrapper,) = swapped.get_wrappers(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "prior_swap_cfg")
    positive = [[toy.class_context(torch.arange(2)), {}]]
    negative = toy.toy_conditioning(toy.EMPTY)
    latent = {"samples": torch.zeros(2, 3, toy.IMAGE_SIZE, toy.IMAGE_SIZE)}
    samples = nodes.KSampler().sample(swapped, 0, 2, 3.0, "euler", "normal", positive, negative, latent)[0]["samples"]
    assert torch.isfinite(samples).all()
    # 2 steps × (the fine-tune's cond + the prior's uncond), each refused by the dynamic-VRAM check
    assert wrapper.cache.eager_reasons == {"weights paged on demand (ComfyUI's dynamic VRAM)": 4}
