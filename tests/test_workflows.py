"""The shared workflows in workflows/: UI format, listed by ComfyUI as templates, converted and run for real.

Each workflow is converted with ``support.ui_to_api`` (checked against the frontend's own ``graphToPrompt``
in ``tests/test_browser.py``), its checkpoints are replaced by the stand-ins, and it runs on the real
ComfyUI; the outputs are checked per workflow.
"""
from __future__ import annotations

import copy
import io
import json
import random
from pathlib import Path

import pytest
from PIL import Image

from support import workflow_defs
from support.comfy_env import ROOT
from support.server import PACK_NAME, prior_calls
from support.ui_to_api import convert, process_dynamic_prompt
from support.ui_workflow import note_text
from support.workflow_prompts import (CANNOT_RUN, LATENT_SIZE, NAMES, SIZE, SPACING, VIDEO_LENGTH, WORKFLOWS,
                                      install_stand_ins, load, substitute)

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


def panels(path: Path, rows: int, cols: int) -> list[list[bytes]]:
    """The SIZE×SIZE panels of an ImageStitch grid (SPACING apart), row by row, as raw pixels."""
    with Image.open(path) as im:
        assert im.size == (cols * SIZE + (cols - 1) * SPACING, rows * SIZE + (rows - 1) * SPACING), im.size
        return [[im.crop((c * (SIZE + SPACING), r * (SIZE + SPACING), c * (SIZE + SPACING) + SIZE,
                          r * (SIZE + SPACING) + SIZE)).tobytes() for c in range(cols)] for r in range(rows)]


# -- the files --------------------------------------------------------------------------------------

def test_one_workflow_per_pairing_all_ui_format():
    assert set(NAMES) == set(workflow_defs.WORKFLOW_BUILDERS), "workflows/ holds exactly the generated workflows"
    for path in WORKFLOWS:
        wf = json.loads(path.read_text())
        assert wf["version"] == 0.4 and isinstance(wf["nodes"], list) and isinstance(wf["links"], list), path.name
        for node in wf["nodes"]:
            assert {"id", "type", "pos", "size", "inputs", "outputs", "widgets_values", "mode"} <= set(node), node


def test_workflow_files_are_what_the_generator_writes(object_info):
    """workflows/*.json are what support/workflow_defs.py builds from this server's /object_info (tools/make_workflows.py)."""
    built = workflow_defs.build_all(object_info)
    for name, workflow in built.items():
        assert (ROOT / "workflows" / f"{name}.json").read_text() == workflow_defs.dumps(workflow), (
            f"{name}.json is stale: run python3 tools/host.py python tools/make_workflows.py")


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
        # The template browser shows <name>.jpg as the card's picture (tools/make_thumbnails.py).
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
    calls = prior_calls(result["log"])
    assert calls and all(prior == total for prior, total in calls), calls  # full swap: the prior at every call


def test_side_by_side_shows_stock_and_swap(runs):
    (image,) = images_of(runs("prior_swap_side_by_side_sd15"))
    [[stock, swap]] = panels(image, rows=1, cols=2)
    assert stock != swap, "prior swap gave the stock image"


def test_gamma_sweep_grid(runs):
    (image,) = images_of(runs("prior_swap_gamma_sweep_sd15"))
    stock, swap = panels(image, rows=2, cols=len(workflow_defs.GAMMA_SWEEP))
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
        assert im.size == workflow_defs.INSIGHT_PLOT_SIZE
        assert len(im.convert("RGB").getcolors(1 << 24)) > 2, "the plot is blank"


def test_toy_pair_saves_stock_and_swap_batches(runs, object_info):
    """The main job's workflow: shapes × noises with stock CFG and with prior swap, same noise per position."""
    name = "prior_swap_toy_pair"
    prompt = convert(load(name), object_info)
    batch = next(n for n in prompt.values() if n["class_type"] == "EmptyChromaRadianceLatentImage")["inputs"]
    assert batch["batch_size"] == len(workflow_defs.TOY_SHAPES.split(",")) * workflow_defs.TOY_NOISES
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


def test_toy_edit_saves_sources_and_both_edits(runs, object_info):
    """The toy edit workflow (#19): sources drawn by the fine-tune, each edited by DualCFGGuider and by
    PriorSwapDualCFGGuider with the same noise; the two edits differ."""
    name = "prior_swap_toy_edit"
    prompt = convert(load(name), object_info)
    saves = {n["inputs"]["filename_prefix"]: i for i, n in prompt.items() if n["class_type"] == "SaveImage"}
    result = runs(name)
    count = len(workflow_defs.TOY_EDIT_SOURCES.split(","))
    batches = [result[saves[f"prior_swap/toy_edit_{kind}"]] for kind in ("source", "stock", "swap")]
    assert [len(b) for b in batches] == [count] * 3
    for a, b in zip(batches[1], batches[2]):
        with Image.open(a) as im_a, Image.open(b) as im_b:
            assert im_a.size == im_b.size == (128, 128)
            assert im_a.tobytes() != im_b.tobytes(), "prior swap gave the stock edit"


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
    assert not prior_calls(comfy_server.log_text()[before:]), "the stock graph ran the prior"
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
    assert unet[prompt[prior]["inputs"]["model"][0]] == workflow_defs.WAN_T2V
    shift = prompt[swap]["inputs"]["model"][0]
    assert prompt[shift]["class_type"] == "ModelSamplingSD3" and prompt[shift]["inputs"]["shift"] == 8.0
    assert unet[prompt[shift]["inputs"]["model"][0]] == workflow_defs.WAN_I2V
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
    assert unet[prompt[prior]["inputs"]["model"][0]] == workflow_defs.QWEN_IMAGE
    cond1, cond2 = prompt[g["cond1"][0]], prompt[g["cond2"][0]]
    assert cond1["class_type"] == cond2["class_type"] == "TextEncodeQwenImageEdit"
    assert cond1["inputs"]["prompt"] and cond2["inputs"]["prompt"] == ""
    assert cond1["inputs"]["image"] == cond2["inputs"]["image"]
    empty = prompt[g["negative"][0]]
    assert g["negative"] == prompt[prior]["inputs"]["negative"]
    assert empty["class_type"] == "CLIPTextEncode" and empty["inputs"]["text"] == ""
    assert (g["cfg_conds"], g["cfg_cond2_negative"]) == workflow_defs.QWEN_EDIT_GAMMA and g["style"] == "regular"


def test_pixart_prior_graph(object_info):
    """SD1.5 fine-tune (checkpoint, its own CLIP), PixArt-α prior whose ∅ is encoded by T5 (Load CLIP, pixart)."""
    prompt = convert(load("prior_swap_pixart_prior_sd15"), object_info)
    (prior,) = _of(prompt, "PriorFromModel")
    model = prompt[prompt[prior]["inputs"]["model"][0]]
    assert model["class_type"] == "UNETLoader" and model["inputs"]["unet_name"] == workflow_defs.PIXART_ALPHA
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
    assert prompt[g["model"][0]]["inputs"]["ckpt_name"] == workflow_defs.COSXL_EDIT
    assert prompt[g["prior"][0]]["inputs"]["ckpt_name"] == workflow_defs.SDXL_BASE
    log = runs("prior_swap_ip2p_sdxl")["log"]
    assert "model_type V_PREDICTION_EDM" in log and log.count("outside the prior's range") == 1, log[-3000:]
