"""Fixtures: one real ComfyUI server per test session, with small checkpoints built at test time."""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support.comfy_env import ROOT, import_comfy  # noqa: E402

import_comfy()

from support import checkpoints  # noqa: E402
from support.browser import frontend_args  # noqa: E402
from support.server import ComfyServer  # noqa: E402


@pytest.fixture(scope="session")
def checkpoint_cache() -> Path:
    """Stand-in checkpoints, generated once and kept under .host/cache (ignored by git)."""
    folder = ROOT / ".host" / "cache" / f"checkpoints-{checkpoints.cache_key()}"
    checkpoints.write_checkpoints(folder)
    return folder


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory, checkpoint_cache) -> ComfyServer:
    """The real ComfyUI, serving the pack, with the stand-ins in its checkpoints folder."""
    base = tmp_path_factory.mktemp("comfy-base")
    # DEBUG: ComfyUI then logs "Unloading <model>" for each model /free unloads, the observable of its
    # loaded-models list that test_lifecycle.py reads.
    # PRIOR_SWAP_FRONTEND=newest: the newest frontend instead of the bundled one (support/browser.py).
    server = ComfyServer(base, extra_args=["--verbose", "DEBUG", *frontend_args()])
    for f in checkpoint_cache.glob("*.safetensors"):
        (server.checkpoints / f.name).symlink_to(f)
    loras = base / "models" / "loras"
    loras.mkdir(parents=True, exist_ok=True)
    (loras / "test_lora.safetensors").symlink_to(checkpoints.write_lora(checkpoint_cache))
    # Test-only nodes standing in for text encoders, VAEs and CLIP-vision (support/standin_nodes).
    (base / "custom_nodes" / "prior_swap_test_standins").symlink_to(
        Path(__file__).resolve().parent / "support" / "standin_nodes", target_is_directory=True)
    server.start()
    yield server
    server.stop()
    keep = os.environ.get("PRIOR_SWAP_KEEP_LOG")
    if keep:
        shutil.copy(server.log_path, keep)


@pytest.fixture(scope="module")
def object_info(comfy_server) -> dict:
    """The server's /object_info (every node's inputs and outputs), fetched once per test module."""
    return comfy_server.get("/object_info")


@pytest.fixture(scope="module")
def stand_ins(comfy_server, checkpoint_cache) -> None:
    """What the shared workflows load besides the session's checkpoints: the test image and the Zero123 stand-in."""
    from support.workflow_prompts import write_stand_ins

    write_stand_ins(comfy_server, checkpoint_cache)


@pytest.fixture
def no_warning_from_the_pack(frontend):
    """After a browser test (its module's ``frontend`` fixture): no console warning or error from the pack's scripts."""
    frontend.traced.clear()
    yield
    assert frontend.pack_warnings() == [], frontend.pack_warnings()


@pytest.fixture(scope="session", autouse=True)
def _release_reference_models():
    """Drop the in-process reference models before interpreter shutdown tears ComfyUI's modules down."""
    yield
    import gc

    from support import reference

    reference.load.cache_clear()
    reference.load_vae.cache_clear()
    gc.collect()


@pytest.fixture(scope="module")
def sd15(checkpoint_cache):
    """The SD1.5 base stand-in loaded in this process (model, clip), for tests of the core on real objects."""
    import comfy.sd

    model, clip, _vae, _ = comfy.sd.load_checkpoint_guess_config(
        str(checkpoint_cache / "sd15_base.safetensors"), output_vae=False, output_clip=True)
    return model, clip


@pytest.fixture
def env(monkeypatch):
    """``with env(NAME="value", …):`` environment variables set for the block only (pytest's monkeypatch)."""
    @contextlib.contextmanager
    def scoped(**variables: str):
        with monkeypatch.context() as patch:
            for name, value in variables.items():
                patch.setenv(name, value)
            yield

    return scoped
