"""Two checkers no one on the project wrote, run on the pack (issue #17, item 7).

- ``comfy-lint --strict`` (0.1.0) on every workflow of workflows/ converted to API format the way the
  workflow tests run it (support.ui_to_api, stand-ins substituted and linked into the test server's folders),
  against that server's /object_info: no warning, no error.
- ``comfy-import-guard --offline check --strict`` (1.3.0) on the files the pack ships (.comfyignore applied:
  support/shipped.py), and on the whole checkout, resolved against the host ComfyUI: its sources put in a git repository of their
  own (the tool reads a ComfyUI clone through git; the host is an unpacked release), target HEAD. SAFE.

The tools live in .host/tools (``python3 tools/host.py install-tools``; .ci/run installs them). Without them
these tests are skipped, unless PRIOR_SWAP_REQUIRE_TOOLS=1 (set by .ci/run), which makes that a failure.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from support.comfy_env import ROOT, comfy_dir
from support.shipped import shipped, tracked_files
from support.ui_to_api import convert
from support.workflow_prompts import CANNOT_RUN, LATENT_SIZE, NAMES, SIZE, install_stand_ins, load, substitute

TOOLS = ROOT / ".host" / "tools" / "bin"
PACK = "comfyui-prior-swap"


def tool(name: str) -> str:
    path = TOOLS / name
    if path.exists():
        return str(path)
    message = f"{path} missing: python3 tools/host.py install-tools"
    if os.environ.get("PRIOR_SWAP_REQUIRE_TOOLS"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.mark.parametrize("name", NAMES)
def test_comfy_lint_strict_passes_every_workflow(comfy_server, object_info, stand_ins, tmp_path, name):
    if name in CANNOT_RUN:
        pytest.skip(CANNOT_RUN[name])
    prompt = substitute(convert(load(name), object_info), size=LATENT_SIZE.get(name, (SIZE, SIZE)))
    install_stand_ins(comfy_server, prompt)
    (tmp_path / f"{name}.json").write_text(json.dumps(prompt, indent=1))
    # The schema after the stand-ins are in the folders: their names are then in the loaders' dropdowns.
    (tmp_path / "object_info.json").write_text(json.dumps(comfy_server.get("/object_info")))
    lint = subprocess.run([tool("comfy-lint"), "--strict", "--color", "never", "--schema-cache",
                           str(tmp_path / "object_info.json"), str(tmp_path / f"{name}.json")],
                          capture_output=True, text=True, timeout=300)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    # The same linter does find a fault in it: a pack input removed (a negative control of the setup).
    broken = json.loads(json.dumps(prompt))
    node = next(n for n in broken.values() if n["class_type"].startswith("PriorSwap") and n["inputs"])
    node["inputs"].pop(next(k for k, v in node["inputs"].items() if not isinstance(v, list)))
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    assert subprocess.run([tool("comfy-lint"), "--strict", "--color", "never", "--schema-cache",
                           str(tmp_path / "object_info.json"), str(tmp_path / "broken.json")],
                          capture_output=True, text=True, timeout=300).returncode != 0


def _host_clone(cache: Path) -> None:
    """The host ComfyUI's Python sources as a git repository at ``cache``/ComfyUI (what the tool reads)."""
    clone = cache / "ComfyUI"
    source = comfy_dir()
    for path in source.rglob("*.py"):
        relative = path.relative_to(source)
        if relative.parts[0] in ("custom_nodes", ".git") or "__pycache__" in relative.parts:
            continue
        (clone / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, clone / relative)
    git = ["git", "-c", "user.email=ci@localhost", "-c", "user.name=ci"]
    subprocess.run([*git, "init", "-q"], cwd=clone, check=True)
    subprocess.run([*git, "add", "-A"], cwd=clone, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "host ComfyUI"], cwd=clone, check=True)


def _import_guard(cache: Path, install: Path) -> subprocess.CompletedProcess:
    return subprocess.run([tool("comfy-import-guard"), "--offline", "--cache-dir", str(cache), "check",
                           "--comfy-dir", str(install), "--target", "HEAD", "--no-update", "--strict", "--json"],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("files", ["shipped", "checkout"])
def test_comfy_import_guard_finds_the_pack_safe_against_the_host(tmp_path, files):
    """``shipped``: what users install. ``checkout``: every tracked file, tests included (the server fixture
    is named comfy_server, not comfy: a parameter named like the comfy package read as comfy.* symbols)."""
    cache, install = tmp_path / "cache", tmp_path / "comfyui"
    _host_clone(cache)
    pack = install / "custom_nodes" / PACK
    for path in sorted(shipped() if files == "shipped" else [p for p in tracked_files() if (ROOT / p).is_file()]):
        (pack / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / path, pack / path)
    guard = _import_guard(cache, install)
    assert guard.returncode == 0, guard.stdout + guard.stderr
    (result,) = json.loads(guard.stdout)["packs"]
    assert result["pack"] == PACK and result["verdict"] == "SAFE", result
    assert result["python_files"] >= (15 if files == "shipped" else 50) and result["references"] > 0
    assert not (result["breaking"] or result["soft"] or result["signature_drift"] or result["unparseable"]), result
    # Negative control: a shipped module importing a symbol the host does not have is reported.
    (pack / "py" / "_guard_probe.py").write_text("from comfy.model_patcher import NoSuchSymbolInComfy\n")
    assert _import_guard(cache, install).returncode != 0
