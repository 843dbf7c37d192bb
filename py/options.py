"""Where and how the prior runs: choices of the Prior Swap Options node, or the machine's defaults.

They change speed and placement, never which terms are computed. The node stores them in the fine-tune's
``model_options`` (copied by every clone, so they travel with the MODEL into Prior Swap CFG and the guiders
and into each sampling run). Without the node, the environment variables give machine-wide defaults, as
ComfyUI's own command-line options do: ``PRIOR_SWAP_CUDA_GRAPHS``, ``PRIOR_SWAP_KEEP_GRAPHS``,
``PRIOR_SWAP_OVERLAP``, ``PRIOR_SWAP_PRIOR_DEVICE``.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch

OPTIONS_KEY = "prior_swap_options"
GRAPH_MODES = ("keep across runs", "per run", "off")
DEVICE_CHOICES = ("same GPU as the model", "another GPU")
log = logging.getLogger("prior_swap_cfg")


def env_flag(name: str, default: str = "1") -> bool:
    """True unless the environment variable is 0/false/off/no/empty (``default`` when unset)."""
    return os.environ.get(name, default).strip().lower() not in ("0", "false", "off", "no", "")


@dataclass(frozen=True)
class RunOptions:
    """How a prior-swapped model runs."""

    cuda_graphs: str = GRAPH_MODES[0]  # replay each model's call as a CUDA graph: kept, captured per run, or off
    overlap: bool = False  # one GPU: run the prior's forward on a second CUDA stream beside the fine-tune's
    prior_device: str | None = None  # "cuda:N": load the prior on that GPU; "another": the first other GPU


def machine_defaults() -> RunOptions:
    """The options the environment variables give (read at each use, as before the node existed)."""
    graphs = GRAPH_MODES[2] if not env_flag("PRIOR_SWAP_CUDA_GRAPHS") else (
        GRAPH_MODES[0] if env_flag("PRIOR_SWAP_KEEP_GRAPHS") else GRAPH_MODES[1])
    device = os.environ.get("PRIOR_SWAP_PRIOR_DEVICE", "").strip()
    if device.lower() in ("", "0", "off", "no", "none", "default", "same"):
        device = None
    return RunOptions(cuda_graphs=graphs, overlap=env_flag("PRIOR_SWAP_OVERLAP", "0"), prior_device=device)


def run_options(model_options: dict) -> RunOptions:
    """The node's options stored in ``model_options``, else the machine's defaults."""
    options = model_options.get(OPTIONS_KEY)
    return options if isinstance(options, RunOptions) else machine_defaults()


# Process-wide on purpose: the choice usually comes from a machine-wide default (PRIOR_SWAP_PRIOR_DEVICE), read
# anew at every Prior Swap CFG node run; an unusable value is said once per process, not once per workflow run.
_warned_device: set[str] = set()


def prior_device(options: RunOptions, model_device: Any) -> torch.device | None:
    """The GPU the prior should be loaded on, or None for the model's own device.

    An unusable choice (no such GPU on this machine, "another GPU" on a one-GPU machine) is reported once and
    ignored, so the same workflow runs on any machine.
    """
    value = options.prior_device
    if not value:
        return None
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    device = None
    if value == "another":
        own = model_device.index if isinstance(model_device, torch.device) and model_device.type == "cuda" else 0
        others = [i for i in range(count) if i != (own or 0)]
        device = torch.device("cuda", others[0]) if others else None
    else:
        try:
            parsed = torch.device(value)
            if parsed.type == "cuda" and parsed.index is not None and parsed.index < count:
                device = parsed
        except (RuntimeError, ValueError):
            device = None
    if device is None and value not in _warned_device:
        _warned_device.add(value)
        log.warning("PriorSwapCFG: the prior cannot be placed on '%s' (this machine has %d CUDA device(s)); "
                    "it runs on the model's device.", value, count)
    return device
