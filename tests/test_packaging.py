"""Registry metadata and what `comfy node pack` ships (issue #17, item 6).

Checked without the network: pyproject.toml as comfy-cli reads it (no placeholder publisher or URLs, the
classifiers comfy-cli knows), LICENSE is the GPLv3 text the declared GPL-3.0-or-later refers to, and
.comfyignore leaves out what is not for users. Where comfy-cli is installed (``COMFY_CLI`` or ``comfy`` on
PATH, or the tools venv of tools/host.py), ``comfy node validate`` and ``comfy node pack`` run on a copy
of the tracked files and the archive's file list is checked.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tomllib
import zipfile
from pathlib import Path

import pytest

from support.shipped import ignored, shipped, tracked_files

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# sha256 of the GNU GPL version 3 text as the FSF publishes it (also ComfyUI's own LICENSE file).
GPL3_SHA256 = "3972dc9744f6499f0f9b2dbf76696f2ae7ad8af9b23dde66d6af86c9dfb36986"
# What comfy-cli (registry/config_parser.py) accepts after "Operating System :: " / "Environment :: ".
OS_VALUES = ("Microsoft", "POSIX", "MacOS", "OS Independent")
ACCELERATORS = ("GPU :: NVIDIA CUDA", "GPU :: AMD ROCm", "GPU :: Intel Arc", "NPU :: Huawei Ascend",
                "GPU :: Apple Metal")
MUST_SHIP = ["__init__.py", "pyproject.toml", "README.md", "LICENSE", "icon.svg", "nodes/__init__.py",
             "js/prior_swap.js", "js/insight.js", "py/routing.py", "py/toy_pair/toy_finetune.safetensors",
             "py/toy_pair/toy_base.safetensors"]


def test_no_placeholder_publisher_or_urls():
    tool_comfy = PYPROJECT["tool"]["comfy"]
    assert "PublisherId" not in tool_comfy or tool_comfy["PublisherId"] not in ("", "prior-swap-cfg"), "a placeholder publisher"
    assert tool_comfy["DisplayName"] == "Prior Swap CFG"
    assert tool_comfy["requires-comfyui"] == ">=0.3.75"  # the first ComfyUI with comfy_api.latest (V3 nodes)
    for name, url in PYPROJECT["project"].get("urls", {}).items():
        assert url.startswith("https://") and "prior-swap-cfg/comfyui-prior-swap" not in url, (name, url)
    icon = tool_comfy.get("Icon")
    assert icon is None or icon.startswith("https://"), "the registry takes the icon as a URL"


def test_license_file_is_the_gplv3_the_project_declares():
    assert PYPROJECT["project"]["license"] == {"text": "GPL-3.0-or-later"}
    text = (ROOT / "LICENSE").read_bytes()
    assert hashlib.sha256(text).hexdigest() == GPL3_SHA256
    assert text.decode().split("\n")[:2] == ["                    GNU GENERAL PUBLIC LICENSE",
                                             "                       Version 3, 29 June 2007"]
    assert "License :: OSI Approved :: GNU General Public License v3 or later (GPLv3+)" in PYPROJECT["project"]["classifiers"]


def test_classifiers_are_ones_comfy_cli_knows():
    classifiers = PYPROJECT["project"]["classifiers"]
    oses = [c.removeprefix("Operating System :: ") for c in classifiers if c.startswith("Operating System :: ")]
    accelerators = [c.removeprefix("Environment :: ") for c in classifiers if c.startswith("Environment :: ")]
    assert oses and all(v.startswith(OS_VALUES) for v in oses), oses
    assert accelerators and all(v in ACCELERATORS for v in accelerators), accelerators


def test_icon_is_a_small_svg():
    import xml.etree.ElementTree as ET

    svg = ET.parse(ROOT / "icon.svg").getroot()
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    width, height = int(svg.get("width")), int(svg.get("height"))
    assert width <= 800 and height <= 400  # the registry's maximum icon size
    assert (ROOT / "icon.svg").stat().st_size < 4096


def test_comfyignore_ships_the_pack_and_nothing_else():
    files = shipped()
    missing = [p for p in MUST_SHIP if p not in files]
    assert not missing, f"not shipped: {missing}"
    assert {p for p in tracked_files() if p.startswith("workflows/")} <= files  # templates and thumbnails
    leaked = sorted(p for p in files if p.split("/")[0] in ("tests", "tools", ".ci") or p in ("pytest.ini", ".gitignore"))
    assert not leaked, leaked
    top = {p.split("/")[0] for p in files}
    assert top <= {"__init__.py", "pyproject.toml", "README.md", "LICENSE", "icon.svg", "nodes", "js", "py",
                   "workflows", "docs"}, top  # docs: the pages the README links to


def test_matcher_reads_gitwildmatch_like_comfy_cli():
    patterns = ["/tests/", "__pycache__/", "*.pyc", "/pytest.ini", "/docs/_build/"]
    assert ignored("tests/test_x.py", patterns) and ignored("tests/support/a.py", patterns)
    assert not ignored("py/tests_like.py", patterns) and not ignored("nodes/tests", patterns)
    assert ignored("py/__pycache__/x.py", patterns) and ignored("py/a.pyc", patterns)
    assert ignored("pytest.ini", patterns) and not ignored("py/pytest.ini", patterns)
    assert ignored("docs/_build/x.html", patterns) and not ignored("docs/index.md", patterns)
    assert not ignored("__pycache__", patterns)  # a file of that name is not a directory


def _comfy_cli() -> str | None:
    for candidate in (os.environ.get("COMFY_CLI"), ROOT / ".host" / "tools" / "bin" / "comfy", shutil.which("comfy")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    return None


def test_comfy_node_validate_and_pack(tmp_path):
    """The real tool on a copy of the tracked files: validation passes and the archive is what shipped() says."""
    if _comfy_cli() is None:
        message = "comfy-cli not installed: python3 tools/host.py install-tools"
        if os.environ.get("PRIOR_SWAP_REQUIRE_TOOLS"):
            pytest.fail(message)
        pytest.skip(message)
    copy = tmp_path / "pack"
    for path in tracked_files():
        (copy / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / path, copy / path)
    subprocess.run(["git", "init", "-q"], cwd=copy, check=True)
    subprocess.run(["git", "add", "-A"], cwd=copy, check=True)
    env = {**os.environ, "COMFY_CLI_TELEMETRY": "0"}
    cli = [_comfy_cli(), "--skip-prompt", "--no-enable-telemetry", "node"]
    validate = subprocess.run([*cli, "validate"], cwd=copy, capture_output=True, text=True, env=env, timeout=300)
    said = validate.stdout + validate.stderr
    assert validate.returncode == 0 and "All validation checks passed" in said and "warning" not in said.lower(), said
    pack = subprocess.run([*cli, "pack"], cwd=copy, capture_output=True, text=True, env=env, timeout=300)
    assert pack.returncode == 0, pack.stdout + pack.stderr
    with zipfile.ZipFile(copy / "node.zip") as archive:
        names = set(archive.namelist())
    assert names == shipped()
