"""The shared workflows in workflows/: UI format, listed by ComfyUI as templates, converted and run for real.

Each workflow is converted with ``support.ui_to_api`` (checked against the frontend's own ``graphToPrompt``
in ``tests/test_browser.py``), its checkpoints are replaced by the stand-ins, and it runs on the real
ComfyUI; the outputs are checked per workflow.
"""
from __future__ import annotations

import copy
import hashlib
import io
import json
import random
import re
from pathlib import Path

import pytest
from PIL import Image

from support import families, make_workflows, workflow_standins, zero123_standin
from support.comfy_env import ROOT
from support.server import PACK_NAME
from support.ui_to_api import convert, process_dynamic_prompt
from support.ui_workflow import note_text

WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
NAMES = [p.stem for p in WORKFLOWS]
# Real checkpoint names in the workflows → stand-in files in the test server's checkpoints folder.
STAND_INS = {
    "dreamshaper_8.safetensors": "sd15_finetune.safetensors",
    "v1-5-pruned-emaonly.safetensors": "sd15_base.safetensors",
    "instruct-pix2pix-00-22000.safetensors": "ip2p_finetune.safetensors",
    # SD2.1 768-v: the SD1.5-width stand-in, made v-prediction by the workflow's ModelSamplingDiscrete
    "v2-1_768-ema-pruned.safetensors": "sd15_base.safetensors",
    "stable_zero123.ckpt": f"{zero123_standin.NAME}.safetensors",
}
CANNOT_RUN: dict[str, str] = {}  # name → why a workflow is generated but not run
# SDXL checkpoints → support/workflow_standins.py's (UNet and VAE, no text encoder: see substitute_encoders).
SDXL_STAND_INS = {
    make_workflows.SDXL_FINETUNE: "sdxl_finetune_standin",
    make_workflows.SDXL_BASE: "sdxl_base_standin",
    make_workflows.COSXL_EDIT: "cosxl_edit_standin",
}
STAND_INS.update({k: f"{v}.safetensors" for k, v in SDXL_STAND_INS.items()})
TEST_IMAGE = "workflow_input.png"
SIZE, SPACING = 64, 8

# The other families' diffusion models (models/diffusion_models) → the stand-ins of support/families.py,
# which the host's model detection detects as the same classes (Wan 2.1 I2V/T2V, Qwen-Image, PixArt-α).
UNET_STAND_INS = {
    make_workflows.WAN_I2V: "fam_wan21_i2v",
    make_workflows.WAN_T2V: "fam_wan21_t2v",
    make_workflows.QWEN_EDIT: "fam_qwen_image_edit",
    make_workflows.QWEN_IMAGE: "fam_qwen_image",
    make_workflows.PIXART_ALPHA: "fam_pixart_alpha",
}
# Wan 2.1's and Qwen-Image's VAE (one architecture) → a narrow real WanVAE (support/workflow_standins.py).
VAE_STAND_INS = {make_workflows.WAN_VAE: f"{workflow_standins.WAN_VAE}.safetensors",
                 make_workflows.QWEN_VAE: f"{workflow_standins.WAN_VAE}.safetensors"}
# Text encoders that cannot be stood in at a small size (umT5-XXL, Qwen2.5-VL-7B, T5-XXL): Load CLIP's type →
# the family of support/standin_nodes' PriorSwapTestConditioning, which replaces each encode of that CLIP.
TEXT_ENCODER_FAMILY = {"wan": "wan21", "qwen_image": "qwen_image", "pixart": "pixart_alpha"}
# PixArt needs (H + W) / 2 ≥ 33 latent pixels, both even (model-families.md): its workflow samples 58×8
# latents (464×64 px), 2.5 times fewer than a square 34×34 would need.
LATENT_SIZE = {"prior_swap_pixart_prior_sd15": (464, 64)}
VIDEO_LENGTH = 5  # frames of the Wan workflow under test: two latent frames


@pytest.fixture(scope="module")
def object_info(comfy_server) -> dict:
    return comfy_server.get("/object_info")


@pytest.fixture(scope="module")
def stand_ins(comfy_server, checkpoint_cache) -> None:
    """The test image and the Zero123 stand-in (written once, ~1 GB, cached) in the server's folders."""
    Image.new("RGB", (SIZE, SIZE), (200, 120, 40)).save(comfy_server.base / "input" / TEST_IMAGE)
    folder = checkpoint_cache.parent / f"zero123-{zero123_standin.cache_key()}"
    link = comfy_server.checkpoints / f"{zero123_standin.NAME}.safetensors"
    if not link.exists():
        link.symlink_to(zero123_standin.write_zero123(folder))


def load(name: str) -> dict:
    return json.loads((ROOT / "workflows" / f"{name}.json").read_text())


def substitute(prompt: dict, steps: int = 2, seed: int | None = None, size: tuple[int, int] = (SIZE, SIZE)) -> dict:
    """Stand-in models, the test image, small latents (width, height) and 2 steps (and another seed if given)."""
    prompt = substitute_encoders(copy.deepcopy(prompt))
    for node in prompt.values():
        inputs = node["inputs"]
        if inputs.get("ckpt_name") in STAND_INS:
            inputs["ckpt_name"] = STAND_INS[inputs["ckpt_name"]]
        if inputs.get("unet_name") in UNET_STAND_INS:
            inputs["unet_name"] = families.file_name(UNET_STAND_INS[inputs["unet_name"]])
        if inputs.get("vae_name") in VAE_STAND_INS:
            inputs["vae_name"] = VAE_STAND_INS[inputs["vae_name"]]
        if node["class_type"] == "LoadImage":
            inputs["image"] = TEST_IMAGE
        if node["class_type"] in ("EmptyLatentImage", "StableZero123_Conditioning", "PriorSwapTestWanI2V"):
            inputs["width"], inputs["height"] = size
        if node["class_type"] == "PriorSwapTestWanI2V":
            inputs["length"] = VIDEO_LENGTH
        if node["class_type"] == "ImageScaleToTotalPixels":
            inputs["megapixels"] = 0.01  # its minimum: 100×100 from the 64-px test image
        if "steps" in inputs:
            inputs["steps"] = steps
        for key in ("seed", "noise_seed"):
            if seed is not None and key in inputs:
                inputs[key] = seed
    return prompt


def _text_seed(text: str) -> int:
    """One seed per prompt text: equal texts encode to equal conditioning, as with a real encoder."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") >> 1


def substitute_encoders(prompt: dict) -> dict:
    """Replace the encoders no stand-in file exists for by support/standin_nodes' nodes, in place.

    - ``CLIPLoader`` of a family in TEXT_ENCODER_FAMILY is removed; each ``CLIPTextEncode`` of it becomes
      ``PriorSwapTestConditioning`` (that family's shapes; seeded by the text; ``empty`` for "");
    - ``TextEncodeQwenImageEdit`` (the text encoder reads the image too) becomes the host's ``ReferenceLatent``
      on such a conditioning, with the image vae-encoded by the workflow's own ``VAEEncode`` of its VAE,
      which is what the node appends as ``reference_latents``;
    - ``CLIPVisionLoader``/``CLIPVisionEncode`` are removed and ``WanImageToVideo`` becomes
      ``PriorSwapTestWanI2V`` (the same conditioning keys, with the start image's latent and CLIP-vision
      output stood in);
    - an SDXL checkpoint's text encodes become ``PriorSwapTestConditioning`` (family ``sdxl``), and
      ``PriorCheckpointLoader`` of an SDXL checkpoint (which needs the checkpoint's own CLIP-L/G) becomes
      ``PriorFromModel`` on that checkpoint's MODEL with its negative prompt so encoded.
    Everything else stays the workflow's own node.
    """
    next_id = max(int(i) for i in prompt) + 1

    def add(class_type: str, **inputs) -> str:
        nonlocal next_id
        node_id = str(next_id)
        next_id += 1
        prompt[node_id] = {"class_type": class_type, "inputs": inputs}
        return node_id

    clip_family = {i: TEXT_ENCODER_FAMILY[n["inputs"]["type"]] for i, n in prompt.items()
                   if n["class_type"] == "CLIPLoader" and n["inputs"]["type"] in TEXT_ENCODER_FAMILY}
    sdxl = {i for i, n in prompt.items()
            if n["class_type"] == "CheckpointLoaderSimple" and n["inputs"]["ckpt_name"] in SDXL_STAND_INS}
    for node_id, node in list(prompt.items()):
        if node["class_type"] == "CLIPTextEncode" and node["inputs"]["clip"] in ([i, 1] for i in sdxl):
            text = node["inputs"]["text"]
            prompt[node_id] = {"class_type": "PriorSwapTestConditioning", "inputs": {
                "family": "sdxl", "seed": _text_seed(text), "tokens": max(1, len(text.split())),
                "empty": not text.strip()}}
        elif node["class_type"] == "PriorCheckpointLoader" and node["inputs"]["ckpt_name"] in SDXL_STAND_INS:
            used = {v[1] for n in prompt.values() for v in n["inputs"].values() if isinstance(v, list) and v[:1] == [node_id]}
            assert used <= {0}, "the workflow uses the prior loader's MODEL/CLIP outputs"
            text = node["inputs"]["negative_prompt"]
            model = add("CheckpointLoaderSimple", ckpt_name=node["inputs"]["ckpt_name"])
            negative = add("PriorSwapTestConditioning", family="sdxl", seed=_text_seed(text),
                           tokens=max(1, len(text.split())), empty=not text.strip())
            prompt[node_id] = {"class_type": "PriorFromModel", "inputs": {"model": [model, 0],
                                                                           "negative": [negative, 0]}}
    for node_id, node in list(prompt.items()):
        inputs = node["inputs"]
        family = clip_family.get((inputs.get("clip") or [None])[0])
        if node["class_type"] == "CLIPTextEncode" and family:
            text = inputs["text"]
            prompt[node_id] = {"class_type": "PriorSwapTestConditioning", "inputs": {
                "family": family, "seed": _text_seed(text), "tokens": max(1, len(text.split())),
                "empty": not text.strip()}}
        elif node["class_type"] == "TextEncodeQwenImageEdit" and family:
            text = inputs["prompt"]
            cond = add("PriorSwapTestConditioning", family=family, seed=_text_seed(text),
                       tokens=max(1, len(text.split())), empty=not text.strip())
            assert "image" in inputs and "vae" in inputs, "the workflow encodes the edit without its image"
            encoded = add("VAEEncode", pixels=inputs["image"], vae=inputs["vae"])
            prompt[node_id] = {"class_type": "ReferenceLatent", "inputs": {"conditioning": [cond, 0],
                                                                            "latent": [encoded, 0]}}
        elif node["class_type"] == "WanImageToVideo":
            assert "start_image" in inputs and "clip_vision_output" in inputs, "an I2V workflow without its image"
            prompt[node_id] = {"class_type": "PriorSwapTestWanI2V", "inputs": {
                **{k: inputs[k] for k in ("positive", "negative", "width", "height", "length", "batch_size")},
                "seed": 7, "start_frames": 1, "clip_vision": True}}
    for node_id in [i for i, n in prompt.items() if i in clip_family
                    or n["class_type"] in ("CLIPVisionLoader", "CLIPVisionEncode")]:
        del prompt[node_id]
    dangling = [(i, k) for i, n in prompt.items() for k, v in n["inputs"].items()
                if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and v[0] not in prompt]
    assert not dangling, f"inputs left linked to removed encoders: {dangling}"
    return prompt


def install_stand_ins(comfy_server, prompt: dict) -> None:
    """Write (once, cached) and link the family stand-ins and VAE a substituted prompt loads."""
    unets = {n["inputs"]["unet_name"] for n in prompt.values() if n["class_type"] == "UNETLoader"}
    ckpts = {n["inputs"]["ckpt_name"] for n in prompt.values() if "ckpt_name" in n["inputs"]}
    sdxl = [name for name in SDXL_STAND_INS.values() if f"{name}.safetensors" in ckpts]
    for name, path in (workflow_standins.write_sdxl(sdxl) if sdxl else {}).items():
        link = comfy_server.checkpoints / path.name
        if not link.exists():
            link.symlink_to(path)
    names = [name for name in UNET_STAND_INS.values() if families.file_name(name) in unets]
    if names:
        families.install(families.write_all(names=names), comfy_server.base / "models")
    if any(n["inputs"].get("vae_name") in VAE_STAND_INS.values() for n in prompt.values()):
        vae = workflow_standins.write_wan_vae()
        link = comfy_server.base / "models" / "vae" / vae.name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(vae)


@pytest.fixture(scope="module")
def runs(comfy_server, object_info, stand_ins):
    """Run each workflow at most once: name → {output node id: [image paths], "log": the server's log of the run}."""
    done: dict[str, dict] = {}

    def run(name: str) -> dict:
        if name not in done:
            before = len(comfy_server.log_text())
            # A seed of its own per workflow: ComfyUI would otherwise reuse a sampler's output cached from
            # another workflow with the same (substituted) inputs, and the prior would not run.
            prompt = substitute(convert(load(name), object_info), seed=1000 + NAMES.index(name),
                                size=LATENT_SIZE.get(name, (SIZE, SIZE)))
            install_stand_ins(comfy_server, prompt)
            entry = comfy_server.run(prompt)
            done[name] = {node_id: [comfy_server.output / i.get("subfolder", "") / i["filename"] for i in out.get("images", [])]
                          for node_id, out in entry["outputs"].items()}
            done[name]["log"] = comfy_server.log_text()[before:]
        return done[name]
    return run


def images_of(result: dict) -> list[Path]:
    return [p for key, paths in result.items() if key != "log" for p in paths]


def prior_calls(result: dict) -> list[tuple[int, int]]:
    """(prior calls, model calls) of each sampling run, from the pack's log line."""
    return [(int(a), int(b)) for a, b in re.findall(r"prior evaluated at (\d+) of (\d+) model calls", result["log"])]


def panels(path: Path, rows: int, cols: int) -> list[list[bytes]]:
    """The SIZE×SIZE panels of an ImageStitch grid (SPACING apart), row by row, as raw pixels."""
    with Image.open(path) as im:
        assert im.size == (cols * SIZE + (cols - 1) * SPACING, rows * SIZE + (rows - 1) * SPACING), im.size
        return [[im.crop((c * (SIZE + SPACING), r * (SIZE + SPACING), c * (SIZE + SPACING) + SIZE,
                          r * (SIZE + SPACING) + SIZE)).tobytes() for c in range(cols)] for r in range(rows)]


# -- the files --------------------------------------------------------------------------------------

def test_one_workflow_per_pairing_all_ui_format():
    assert set(NAMES) == set(make_workflows.WORKFLOW_BUILDERS), "workflows/ holds exactly the generated workflows"
    for path in WORKFLOWS:
        wf = json.loads(path.read_text())
        assert wf["version"] == 0.4 and isinstance(wf["nodes"], list) and isinstance(wf["links"], list), path.name
        for node in wf["nodes"]:
            assert {"id", "type", "pos", "size", "inputs", "outputs", "widgets_values", "mode"} <= set(node), node


def test_workflow_files_are_what_the_generator_writes(object_info):
    """workflows/*.json are generated by tests/support/make_workflows.py from this server's /object_info."""
    built = make_workflows.build_all(object_info)
    for name, workflow in built.items():
        assert (ROOT / "workflows" / f"{name}.json").read_text() == make_workflows.dumps(workflow), (
            f"{name}.json is stale: run python3 tests/host.py python tests/support/make_workflows.py")


def test_links_agree_with_node_slots():
    for path in WORKFLOWS:
        wf = json.loads(path.read_text())
        nodes = {n["id"]: n for n in wf["nodes"]}
        for link_id, origin, origin_slot, target, target_slot, kind in wf["links"]:
            assert link_id in nodes[origin]["outputs"][origin_slot]["links"], (path.name, link_id)
            entry = nodes[target]["inputs"][target_slot]
            assert entry["link"] == link_id and entry["type"] == kind == nodes[origin]["outputs"][origin_slot]["type"]


# Inputs that name a model file: checkpoints, diffusion models, text encoders, CLIP vision, VAEs.
MODEL_FILE_INPUTS = {"ckpt_name": "checkpoints", "unet_name": "diffusion_models", "vae_name": "vae",
                     ("CLIPLoader", "clip_name"): "text_encoders", ("CLIPVisionLoader", "clip_name"): "clip_vision"}


def model_files(prompt: dict) -> set[tuple[str, str]]:
    """(models folder, file name) of every model file a prompt loads (the built-in pixel_space VAE excluded)."""
    out = set()
    for node in prompt.values():
        for key, value in node["inputs"].items():
            folder = MODEL_FILE_INPUTS.get(key) or MODEL_FILE_INPUTS.get((node["class_type"], key))
            if folder and isinstance(value, str) and value != "pixel_space":
                out.add((folder, value))
    return out


@pytest.mark.parametrize("name", NAMES)
def test_note_says_what_it_shows_and_which_checkpoints(name, object_info):
    wf = load(name)
    text = note_text(wf)
    assert text.startswith("## ") and ("**Checkpoints**" in text or "**Model files**" in text), text[:200]
    prompt = convert(wf, object_info)
    files = model_files(prompt)
    toy = any(v["class_type"] == "PriorSwapToyModelLoader" for v in prompt.values())
    assert files or toy, "a workflow loads model files (or the toy pair shipped with the pack)"
    if toy:
        assert "`py/toy_pair/`" in text, "the note does not say where the toy pair's weights are"
    for folder, file in files:
        assert f"`{file}`" in text or f"`models/{folder}/{file}`" in text, f"the note does not name {file}"
        if folder != "checkpoints":  # the note says which folder each other file goes to
            assert f"`models/{folder}/{file}`" in text, f"the note does not say where {file} goes"


@pytest.mark.parametrize("name", NAMES)
def test_workflow_uses_the_pack(name, object_info):
    kinds = {v["class_type"] for v in convert(load(name), object_info).values()}
    assert kinds & {"PriorSwapCFG", "PriorSwapGuider", "PriorSwapDualCFGGuider"}


def test_comfyui_lists_them_as_custom_node_templates(comfy_server):
    """What the frontend's template browser reads: GET /api/workflow_templates, then each file by name."""
    import requests

    listed = comfy_server.get("/api/workflow_templates")
    assert sorted(listed[PACK_NAME]) == sorted(NAMES)
    for name in NAMES:
        r = requests.get(f"{comfy_server.url}/api/workflow_templates/{PACK_NAME}/{name}.json", timeout=10)
        assert r.ok and r.json() == load(name)
        # The template browser shows <name>.jpg as the card's picture (tests/support/make_thumbnails.py).
        r = requests.get(f"{comfy_server.url}/api/workflow_templates/{PACK_NAME}/{name}.jpg", timeout=10)
        assert r.ok and r.headers["Content-Type"] == "image/jpeg", name
        with Image.open(io.BytesIO(r.content)) as im:
            assert im.format == "JPEG" and im.size == (640, 480)


# -- the converter ----------------------------------------------------------------------------------

def _ui(nodes: list[dict], links: list[list]) -> dict:
    return {"version": 0.4, "nodes": nodes, "links": links}


def test_converter_follows_reroutes_bypass_primitives_and_drops_notes_and_muted(object_info):
    """The frontend features the shared workflows may use once a user edits them."""
    nodes = [
        {"id": 1, "type": "CheckpointLoaderSimple", "mode": 0, "inputs": [],
         "outputs": [{"name": "MODEL", "type": "MODEL", "links": [1]}, {"name": "CLIP", "type": "CLIP", "links": [2]}],
         "widgets_values": ["a.safetensors"]},
        {"id": 2, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": 1}],
         "outputs": [{"name": "", "type": "MODEL", "links": [3]}]},
        {"id": 3, "type": "CFGZeroStar", "mode": 4, "inputs": [{"name": "model", "type": "MODEL", "link": 3}],
         "outputs": [{"name": "patched_model", "type": "MODEL", "links": [4]}], "widgets_values": []},
        {"id": 4, "type": "KSampler", "mode": 0, "title": "Mine",
         "inputs": [{"name": "model", "type": "MODEL", "link": 4},
                    {"name": "steps", "type": "INT", "widget": {"name": "steps"}, "link": 5}],
         "outputs": [{"name": "LATENT", "type": "LATENT", "links": []}],
         "widgets_values": [7, "randomize", 20, 6.5, "euler", "normal", 1.0]},
        {"id": 5, "type": "PrimitiveNode", "mode": 0, "inputs": [],
         "outputs": [{"name": "INT", "type": "INT", "links": [5], "widget": {"name": "steps"}}],
         "widgets_values": [12, "fixed"]},
        {"id": 6, "type": "MarkdownNote", "mode": 0, "inputs": [], "outputs": [], "widgets_values": ["hi"]},
        {"id": 7, "type": "CLIPTextEncode", "mode": 2, "inputs": [{"name": "clip", "type": "CLIP", "link": 2}],
         "outputs": [{"name": "CONDITIONING", "type": "CONDITIONING", "links": []}], "widgets_values": ["x"]},
    ]
    links = [[1, 1, 0, 2, 0, "MODEL"], [2, 1, 1, 7, 0, "CLIP"], [3, 2, 0, 3, 0, "MODEL"], [4, 3, 0, 4, 0, "MODEL"],
             [5, 5, 0, 4, 1, "INT"]]
    prompt = convert(_ui(nodes, links), object_info)
    assert set(prompt) == {"1", "4"}  # Reroute, bypassed, Primitive, Note and muted nodes are not sent
    assert prompt["4"] == {"class_type": "KSampler", "_meta": {"title": "Mine"}, "inputs": {
        "model": ["1", 0], "seed": 7, "steps": 12, "cfg": 6.5, "sampler_name": "euler", "scheduler": "normal",
        "denoise": 1.0}}  # control_after_generate is not an input; the widget linked to a Primitive takes its value
    assert prompt["1"]["_meta"]["title"] == object_info["CheckpointLoaderSimple"]["display_name"]


def test_converter_rejects_unknown_nodes(object_info):
    node = {"id": 1, "type": "NoSuchNode", "mode": 0, "inputs": [], "outputs": [], "widgets_values": []}
    with pytest.raises(ValueError, match="NoSuchNode"):
        convert(_ui([node], []), object_info)


def test_dynamic_prompts_as_the_frontend_processes_them():
    rng = random.Random(1)
    assert process_dynamic_prompt("a /* hidden */ {red|red} fox // comment", rng) == "a  red fox "
    assert process_dynamic_prompt(r"a \{literal\} brace", rng) == "a {literal} brace"
    assert process_dynamic_prompt("{x|{y|y}}", random.Random(3)) in ("x", "y")


# -- running them ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_workflow_runs_on_comfyui(name, runs):
    if name in CANNOT_RUN:
        pytest.skip(CANNOT_RUN[name])
    result = runs(name)
    images = images_of(result)
    assert images, result
    for path in images:
        with Image.open(path) as im:
            assert im.width >= SIZE and im.height >= SIZE
    calls = prior_calls(result)
    assert calls and all(prior == total for prior, total in calls), calls  # full swap: the prior at every call


def test_side_by_side_shows_stock_and_swap(runs):
    (image,) = images_of(runs("prior_swap_side_by_side_sd15"))
    [[stock, swap]] = panels(image, rows=1, cols=2)
    assert stock != swap, "prior swap gave the stock image"


def test_gamma_sweep_grid(runs):
    (image,) = images_of(runs("prior_swap_gamma_sweep_sd15"))
    stock, swap = panels(image, rows=2, cols=len(make_workflows.GAMMA_SWEEP))
    assert all(a != b for a, b in zip(stock, swap)), "a γ column shows the same stock and swap image"
    for row in (stock, swap):
        assert len(set(row)) == len(row), "two γ values gave the same image"


@pytest.mark.parametrize("name", ["prior_swap_sd15_ksampler", "prior_swap_custom_sampler_guider",
                                  "prior_swap_ip2p_sd15", "prior_swap_zero123_sd21v"])
def test_single_output_workflows_give_one_image_of_the_latent_size(name, runs):
    (image,) = images_of(runs(name))
    with Image.open(image) as im:
        assert im.size == (SIZE, SIZE)


def test_insight_saves_side_by_side_and_the_plot(runs, object_info):
    """Prior Swap Insight between Prior Swap CFG and the swap KSampler; its plot saved by a SaveImage of its own."""
    name = "prior_swap_insight_sd15"
    prompt = convert(load(name), object_info)
    saves = {i: n for i, n in prompt.items() if n["class_type"] == "SaveImage"}
    plot_id = next(i for i, n in prompt.items() if n["class_type"] == "PriorSwapInsightPlot")
    insight_id = next(i for i, n in prompt.items() if n["class_type"] == "PriorSwapInsight")
    assert prompt[insight_id]["inputs"]["model"][0] in {i for i, n in prompt.items() if n["class_type"] == "PriorSwapCFG"}
    assert prompt[plot_id]["inputs"]["model"] == [insight_id, 0]
    sampler_id = prompt[plot_id]["inputs"]["samples"][0]
    assert prompt[sampler_id]["class_type"] == "KSampler" and prompt[sampler_id]["inputs"]["model"] == [insight_id, 0]
    (plot_save,) = [i for i, n in saves.items() if n["inputs"]["images"] == [plot_id, 0]]
    (stitch_save,) = [i for i in saves if i != plot_save]

    result = runs(name)
    assert len(images_of(result)) == 2, result
    (side_by_side,) = result[stitch_save]
    [[stock, swap]] = panels(side_by_side, rows=1, cols=2)
    assert stock != swap, "prior swap gave the stock image"
    (plot,) = result[plot_save]
    with Image.open(plot) as im:
        assert im.size == make_workflows.INSIGHT_PLOT_SIZE
        assert len(im.convert("RGB").getcolors(1 << 24)) > 2, "the plot is blank"


def test_toy_pair_saves_stock_and_swap_batches(runs, object_info):
    """The main job's workflow: shapes × noises with stock CFG and with prior swap, same noise per position."""
    name = "prior_swap_toy_pair"
    prompt = convert(load(name), object_info)
    batch = next(n for n in prompt.values() if n["class_type"] == "EmptyChromaRadianceLatentImage")["inputs"]
    assert batch["batch_size"] == len(make_workflows.TOY_SHAPES.split(",")) * make_workflows.TOY_NOISES
    saves = {n["inputs"]["filename_prefix"]: i for i, n in prompt.items() if n["class_type"] == "SaveImage"}
    result = runs(name)
    stock, swap = result[saves["prior_swap/toy_stock"]], result[saves["prior_swap/toy_swap"]]
    assert len(stock) == len(swap) == batch["batch_size"]
    differ = 0
    for a, b in zip(stock, swap):
        with Image.open(a) as im_a, Image.open(b) as im_b:
            assert im_a.size == im_b.size == (128, 128)  # 16 px ×8, nearest
            differ += im_a.tobytes() != im_b.tobytes()
    assert differ == len(stock), "prior swap gave some stock images"


# -- the other families: Wan 2.1 I2V, Qwen-Image-Edit, PixArt-α as prior of SD1.5, SDXL -----------------

FAMILY_WORKFLOWS = {  # name → (size of the saved image, frames)
    "prior_swap_wan21_i2v_t2v_prior": ((SIZE, SIZE), VIDEO_LENGTH),
    "prior_swap_qwen_image_edit": ((96, 96), 1),  # the 100-px scaled input, cropped to the VAE's 8-px grid
    "prior_swap_pixart_prior_sd15": (LATENT_SIZE["prior_swap_pixart_prior_sd15"], 1),
    "prior_swap_ip2p_sdxl": ((SIZE, SIZE), 1),
}


def _of(prompt: dict, class_type: str) -> list[str]:
    return [i for i, n in prompt.items() if n["class_type"] == class_type]


def stock(prompt: dict) -> dict:
    """The same prompt with stock CFG: Prior Swap CFG bypassed, Prior Swap Dual CFG Guider → DualCFGGuider."""
    prompt = copy.deepcopy(prompt)
    for swap in _of(prompt, "PriorSwapCFG"):
        model = prompt.pop(swap)["inputs"]["model"]
        for node in prompt.values():
            for key, value in node["inputs"].items():
                if value == [swap, 0]:
                    node["inputs"][key] = model
    for guider in _of(prompt, "PriorSwapDualCFGGuider"):
        inputs = prompt[guider]["inputs"]
        prompt[guider] = {"class_type": "DualCFGGuider", "inputs": {
            k: inputs[k] for k in ("model", "cond1", "cond2", "negative", "cfg_conds", "cfg_cond2_negative", "style")}}
    for prior in _of(prompt, "PriorFromModel"):
        del prompt[prior]
    return prompt


def frames_of(path: Path) -> list[bytes]:
    with Image.open(path) as im:
        out = []
        for i in range(getattr(im, "n_frames", 1)):
            im.seek(i)
            out.append(im.convert("RGB").tobytes())
        return out


@pytest.mark.parametrize("name", list(FAMILY_WORKFLOWS))
def test_family_workflow_output_and_prior_swap_changes_it(name, comfy_server, runs, object_info):
    """Runs on the family stand-ins: one image (or video) of the expected size, the prior at every model call,
    and another result than the same graph with stock CFG."""
    size, frames = FAMILY_WORKFLOWS[name]
    result = runs(name)
    (swapped,) = images_of(result)
    with Image.open(swapped) as im:
        assert im.size == size
        assert getattr(im, "n_frames", 1) == frames
    prompt = substitute(convert(load(name), object_info), seed=1000 + NAMES.index(name),
                        size=LATENT_SIZE.get(name, (SIZE, SIZE)))
    before = len(comfy_server.log_text())
    (stock_image,) = comfy_server.output_files(comfy_server.run(stock(prompt)))
    assert not prior_calls({"log": comfy_server.log_text()[before:]}), "the stock graph ran the prior"
    swap_frames, stock_frames = frames_of(swapped), frames_of(stock_image)
    assert len(swap_frames) == len(stock_frames) == frames
    assert all(a != b for a, b in zip(swap_frames, stock_frames)), "prior swap gave the stock result"


def test_wan_i2v_graph(object_info):
    """I2V fine-tune sampled (shift 8), T2V prior; the prior's negative is the fine-tune's text negative,
    before WanImageToVideo adds the start image and CLIP-vision features."""
    prompt = convert(load("prior_swap_wan21_i2v_t2v_prior"), object_info)
    (i2v,) = _of(prompt, "WanImageToVideo")
    (prior,) = _of(prompt, "PriorFromModel")
    (swap,) = _of(prompt, "PriorSwapCFG")
    (sampler,) = _of(prompt, "KSampler")
    unet = {i: prompt[i]["inputs"]["unet_name"] for i in _of(prompt, "UNETLoader")}
    assert unet[prompt[prior]["inputs"]["model"][0]] == make_workflows.WAN_T2V
    shift = prompt[swap]["inputs"]["model"][0]
    assert prompt[shift]["class_type"] == "ModelSamplingSD3" and prompt[shift]["inputs"]["shift"] == 8.0
    assert unet[prompt[shift]["inputs"]["model"][0]] == make_workflows.WAN_I2V
    assert prompt[prior]["inputs"]["negative"] == prompt[i2v]["inputs"]["negative"]
    assert prompt[sampler]["inputs"]["model"] == [swap, 0]
    assert [prompt[sampler]["inputs"][k] for k in ("positive", "negative", "latent_image")] == [[i2v, 0], [i2v, 1], [i2v, 2]]
    (clip,) = _of(prompt, "CLIPLoader")
    assert prompt[clip]["inputs"]["type"] == "wan"
    encoders = {prompt[i]["inputs"]["clip"][0] for i in _of(prompt, "CLIPTextEncode")}
    assert encoders == {clip}, "positive, negative and the prior's negative share one umT5"


def test_qwen_image_edit_graph(object_info):
    """Dual guider: cond1 = edit instruction + image, cond2 = empty instruction + image, negative and the
    prior's ∅ = Qwen-Image's empty prompt without image; the prior is Qwen-Image."""
    prompt = convert(load("prior_swap_qwen_image_edit"), object_info)
    (guider,) = _of(prompt, "PriorSwapDualCFGGuider")
    g = prompt[guider]["inputs"]
    (prior,) = _of(prompt, "PriorFromModel")
    unet = {i: prompt[i]["inputs"]["unet_name"] for i in _of(prompt, "UNETLoader")}
    assert unet[prompt[prior]["inputs"]["model"][0]] == make_workflows.QWEN_IMAGE
    cond1, cond2 = prompt[g["cond1"][0]], prompt[g["cond2"][0]]
    assert cond1["class_type"] == cond2["class_type"] == "TextEncodeQwenImageEdit"
    assert cond1["inputs"]["prompt"] and cond2["inputs"]["prompt"] == ""
    assert cond1["inputs"]["image"] == cond2["inputs"]["image"]
    empty = prompt[g["negative"][0]]
    assert g["negative"] == prompt[prior]["inputs"]["negative"]
    assert empty["class_type"] == "CLIPTextEncode" and empty["inputs"]["text"] == ""
    assert (g["cfg_conds"], g["cfg_cond2_negative"]) == make_workflows.QWEN_EDIT_GAMMA and g["style"] == "regular"


def test_pixart_prior_graph(object_info):
    """SD1.5 fine-tune (checkpoint, its own CLIP), PixArt-α prior whose ∅ is encoded by T5 (Load CLIP, pixart)."""
    prompt = convert(load("prior_swap_pixart_prior_sd15"), object_info)
    (prior,) = _of(prompt, "PriorFromModel")
    model = prompt[prompt[prior]["inputs"]["model"][0]]
    assert model["class_type"] == "UNETLoader" and model["inputs"]["unet_name"] == make_workflows.PIXART_ALPHA
    negative = prompt[prompt[prior]["inputs"]["negative"][0]]
    clip = prompt[negative["inputs"]["clip"][0]]
    assert clip["class_type"] == "CLIPLoader" and clip["inputs"]["type"] == "pixart" and negative["inputs"]["text"] == ""
    (swap,) = _of(prompt, "PriorSwapCFG")
    assert prompt[prompt[swap]["inputs"]["model"][0]]["class_type"] == "CheckpointLoaderSimple"


def test_ip2p_sdxl_graph_and_cosxl_schedule(object_info, runs):
    """InstructPix2Pix terms as in the SD1.5 workflow (Eq. 9); CosXL Edit's stand-in is v-prediction EDM up to
    σ 120, above SDXL base's σ range, which the prior meets at its nearest noise level (logged, as the note says)."""
    prompt = convert(load("prior_swap_ip2p_sdxl"), object_info)
    (guider,) = _of(prompt, "PriorSwapDualCFGGuider")
    (ip2p,) = _of(prompt, "InstructPixToPixConditioning")
    g = prompt[guider]["inputs"]
    assert (g["cond1"], g["cond2"]) == ([ip2p, 0], [ip2p, 1]) and g["negative"] == prompt[ip2p]["inputs"]["negative"]
    assert (g["cfg_conds"], g["cfg_cond2_negative"], g["style"]) == (7.5, 1.5, "regular")
    assert prompt[g["model"][0]]["inputs"]["ckpt_name"] == make_workflows.COSXL_EDIT
    assert prompt[g["prior"][0]]["inputs"]["ckpt_name"] == make_workflows.SDXL_BASE
    log = runs("prior_swap_ip2p_sdxl")["log"]
    assert "model_type V_PREDICTION_EDM" in log and log.count("outside the prior's range") == 1, log[-3000:]
