"""The shared workflows as the tests run them: loaded, converted prompts with the stand-ins substituted.

Used by tests/test_workflows.py (which runs every workflow) and tests/test_outside_tools.py (which lints them):
real model file names → the stand-ins in the test server's folders, the encoders no stand-in file exists for
→ support/standin_nodes' nodes, small latents and 2 steps.
"""
from __future__ import annotations

import copy
import hashlib
import json

from PIL import Image

from . import families, workflow_defs, workflow_standins, zero123_standin
from .comfy_env import ROOT

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
    workflow_defs.SDXL_FINETUNE: "sdxl_finetune_standin",
    workflow_defs.SDXL_BASE: "sdxl_base_standin",
    workflow_defs.COSXL_EDIT: "cosxl_edit_standin",
}
STAND_INS.update({k: f"{v}.safetensors" for k, v in SDXL_STAND_INS.items()})
TEST_IMAGE = "workflow_input.png"
SIZE, SPACING = 64, 8

# The other families' diffusion models (models/diffusion_models) → the stand-ins of support/families.py,
# which the host's model detection detects as the same classes (Wan 2.1 I2V/T2V, Qwen-Image, PixArt-α).
UNET_STAND_INS = {
    workflow_defs.WAN_I2V: "fam_wan21_i2v",
    workflow_defs.WAN_T2V: "fam_wan21_t2v",
    workflow_defs.QWEN_EDIT: "fam_qwen_image_edit",
    workflow_defs.QWEN_IMAGE: "fam_qwen_image",
    workflow_defs.PIXART_ALPHA: "fam_pixart_alpha",
}
# Wan 2.1's and Qwen-Image's VAE (one architecture) → a narrow real WanVAE (support/workflow_standins.py).
VAE_STAND_INS = {workflow_defs.WAN_VAE: f"{workflow_standins.WAN_VAE}.safetensors",
                 workflow_defs.QWEN_VAE: f"{workflow_standins.WAN_VAE}.safetensors"}
# Text encoders that cannot be stood in at a small size (umT5-XXL, Qwen2.5-VL-7B, T5-XXL): Load CLIP's type →
# the family of support/standin_nodes' PriorSwapTestConditioning, which replaces each encode of that CLIP.
TEXT_ENCODER_FAMILY = {"wan": "wan21", "qwen_image": "qwen_image", "pixart": "pixart_alpha"}
# PixArt needs (H + W) / 2 ≥ 33 latent pixels, both even (model-families.md): its workflow samples 58×8
# latents (464×64 px), 2.5 times fewer than a square 34×34 would need.
LATENT_SIZE = {"prior_swap_pixart_prior_sd15": (464, 64)}
VIDEO_LENGTH = 5  # frames of the Wan workflow under test: two latent frames


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


def write_stand_ins(comfy_server, checkpoint_cache) -> None:
    """The test image and the Zero123 stand-in (written once, ~1 GB, cached) in the server's folders."""
    Image.new("RGB", (SIZE, SIZE), (200, 120, 40)).save(comfy_server.base / "input" / TEST_IMAGE)
    folder = checkpoint_cache.parent / f"zero123-{zero123_standin.cache_key()}"
    link = comfy_server.checkpoints / f"{zero123_standin.NAME}.safetensors"
    if not link.exists():
        link.symlink_to(zero123_standin.write_zero123(folder))
