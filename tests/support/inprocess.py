"""Helpers for tests that use the pack's core on real ComfyUI objects in the test process."""
from __future__ import annotations

from types import ModuleType

from .comfy_env import pack_module


def core(module: str) -> ModuleType:
    """A module of the pack's py/ core, imported the way ComfyUI imports the pack (as a package)."""
    return pack_module(f"py.{module}")


def empty_prior(model, clip):
    """A PRIOR of ``model`` with the empty prompt (the paper's ∅) encoded by ``clip``, as Prior From Model makes it."""
    prior_mod = core("prior")
    return prior_mod.make_prior(model, prior_mod.encode_text(clip, ""))
