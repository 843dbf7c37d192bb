"""Import the host's ComfyUI in this process (for reference computations and checkpoint generation)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


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
