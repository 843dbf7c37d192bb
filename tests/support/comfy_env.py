"""Import the host's ComfyUI in this process (for reference computations and checkpoint generation)."""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
PACK_PACKAGE = "comfyui_prior_swap"  # the package name this process imports the repository under


def comfy_dir() -> Path:
    """The host ComfyUI folder: ``COMFYUI_DIR`` or the vendored one under ``.host/``."""
    return Path(os.environ.get("COMFYUI_DIR") or ROOT / ".host" / "ComfyUI").resolve()


def import_comfy() -> None:
    """Put ComfyUI on sys.path and make it pick the CPU when no GPU is present (before model_management)."""
    path = str(comfy_dir())
    if path not in sys.path:
        sys.path.insert(0, path)
    import torch
    import comfy.cli_args

    if not torch.cuda.is_available():
        comfy.cli_args.args.cpu = True


def load_pack() -> ModuleType:
    """Import this repository as ComfyUI imports a custom node pack (a package named after its folder),
    once per process, so every test, benchmark and script shares one copy of its modules."""
    if PACK_PACKAGE not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACK_PACKAGE, ROOT / "__init__.py",
                                                      submodule_search_locations=[str(ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACK_PACKAGE] = module
        spec.loader.exec_module(module)
    return sys.modules[PACK_PACKAGE]


def pack_module(name: str) -> ModuleType:
    """A module of the pack, e.g. ``py.routing`` or ``nodes.prior_nodes`` (ComfyUI must be importable)."""
    return importlib.import_module(f"{load_pack().__name__}.{name}")
