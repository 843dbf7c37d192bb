"""Every shared workflow in workflows/ runs on the real ComfyUI with the stand-in checkpoints."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from support.comfy_env import ROOT

API_WORKFLOWS = sorted((ROOT / "workflows").glob("*_api.json"))
# Real names in the workflows → stand-in files in the test server's checkpoints folder.
STAND_INS = {
    "dreamshaper_8.safetensors": "sd15_finetune.safetensors",
    "v1-5-pruned-emaonly.safetensors": "sd15_base.safetensors",
    "instruct-pix2pix-00-22000.safetensors": "ip2p_finetune.safetensors",
}
TEST_IMAGE = "workflow_input.png"


def substitute(prompt: dict, size: int = 64, steps: int = 2) -> dict:
    for node in prompt.values():
        inputs = node["inputs"]
        if inputs.get("ckpt_name") in STAND_INS:
            inputs["ckpt_name"] = STAND_INS[inputs["ckpt_name"]]
        if node["class_type"] == "LoadImage":
            inputs["image"] = TEST_IMAGE
        if node["class_type"] == "EmptyLatentImage":
            inputs["width"] = inputs["height"] = size
        if "steps" in inputs:
            inputs["steps"] = steps
    return prompt


@pytest.fixture(scope="module")
def input_image(comfy) -> None:
    Image.new("RGB", (64, 64), (200, 120, 40)).save(comfy.base / "input" / TEST_IMAGE)


@pytest.mark.parametrize("path", API_WORKFLOWS, ids=lambda p: p.name)
def test_api_workflow_runs(comfy, input_image, path: Path):
    entry = comfy.run(substitute(json.loads(path.read_text())))
    images = comfy.output_files(entry)
    assert len(images) == 1 and images[0].stat().st_size > 0


def test_side_by_side_workflow_shows_stock_and_swap(comfy):
    path = ROOT / "workflows" / "side_by_side_sd15_api.json"
    images = comfy.output_files(comfy.run(substitute(json.loads(path.read_text()))))
    with Image.open(images[0]) as im:
        # two 64-px panels with the stitch's 8-px spacing
        assert im.size == (64 + 8 + 64, 64)
        left, right = im.crop((0, 0, 64, 64)), im.crop((72, 0, 136, 64))
        assert left.tobytes() != right.tobytes(), "prior swap gave the stock image"
