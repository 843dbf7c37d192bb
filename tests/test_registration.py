"""The pack loads in the real ComfyUI as a V3 extension and every node is registered as it was in V1.

``tests/data/object_info_v1.json`` is ``/object_info`` of the pack's nodes as ComfyUI 0.3.75 served them
when the nodes were still V1 classes (recorded from a running server before the V3 migration, with
``sd15_base.safetensors`` and ``sd15_finetune.safetensors`` in the checkpoints folder). The V3 nodes must
serve the same ids, display names, categories, descriptions, inputs (names, order, types, defaults,
min/max/step/round, tooltips, multiline), hidden inputs and outputs (types, names, tooltips, list flags).

The V3 serializer (``comfy_api.latest._io.Schema.get_v1_info`` in 0.3.75) forces three differences, and
only these are allowed (each asserted exactly, not ignored):

1. A combo is ``["COMBO", {"options": [...], "multiselect": false, ...}]`` instead of V1's
   ``[[...], {...}]``: the same choices, moved into the options dict (both frontends read both forms).
2. A hidden input is ``{"unique_id": ["UNIQUE_ID"]}`` instead of ``{"unique_id": "UNIQUE_ID"}``.
3. Three node flags V1 left out: ``deprecated``, ``experimental``, ``api_node``, all ``false``.

Deliberate changes since the recording are listed in ``ADDED_OPTIONAL_SINCE_V1`` and ``APPENDED_SINCE_V1`` and
asserted exactly, then taken out before the comparison (issue #20: PriorCheckpointLoader's optional
``weight_dtype``; PriorFromModel says it takes an fp8 MODEL).
"""
from __future__ import annotations

import copy
import inspect
import re
import json
from pathlib import Path

import pytest

V1_RECORDING = Path(__file__).resolve().parent / "data" / "object_info_v1.json"
V1_INFO: dict = json.loads(V1_RECORDING.read_text())
# The checkpoints folder the V1 recording was made with; the live list is the server's folder instead.
RECORDED_CHECKPOINTS = ["sd15_base.safetensors", "sd15_finetune.safetensors"]
V3_ONLY_FLAGS = {"deprecated": False, "experimental": False, "api_node": False}
# Nodes added after the V1 recording (each checked by its own tests): Prior Swap Options (#17).
ADDED_SINCE_V1 = ["PriorSwapOptions"]
PACK_MODULE = "custom_nodes.comfyui-prior-swap"

# Issue #20 (the prior's weights in fp8). Optional inputs added after V1, with their full spec as as_v1 gives it:
ADDED_OPTIONAL_SINCE_V1 = {
    "PriorCheckpointLoader": {
        "weight_dtype": [["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"], {
            "tooltip": "How the prior's weights are stored, as in Load Diffusion Model (UNETLoader): default keeps the "
                       "checkpoint's precision; fp8_e4m3fn / fp8_e5m2 store them in 8 bits (half the memory of fp16) "
                       "and cast them to the compute dtype at use; fp8_e4m3fn_fast also uses fp8 matrix "
                       "multiplication where the GPU has it. fp8 lets the fine-tune and the prior fit together on a "
                       "smaller card, but rounds the prior's weights: its cost in quality is in docs/performance.md.",
            "default": "default"}],
    },
}
# … choices appended to a V1 combo: (node, input) → the choices after V1's (#19: the toy edit model).
APPENDED_CHOICES_SINCE_V1 = {("PriorSwapToyModelLoader", "model"): ["edit"]}
# … and text appended to a V1 field: (node, path of keys) → the exact sentence added after the V1 text.
APPENDED_SINCE_V1 = {
    # Issue #19: the toy edit model.
    ("PriorSwapToyModelLoader", ("description",)): (
        " 'edit' is an InstructPix2Pix-style fine-tune of the base: give it the source image through "
        "InstructPixToPixConditioning and 'make it a <shape>' (a shape name) as the condition, and sample it with "
        "Dual CFG Guider or Prior Swap Dual CFG Guider."),
    ("PriorSwapToyModelLoader", ("input", "required", "model", 1, "tooltip")): (
        " edit: the edit model, for the dual guiders."),
    ("PriorFromModel", ("description",)): (
        ", or for a prior stored in fp8: Load Diffusion Model (UNETLoader) with weight_dtype fp8_e4m3fn/fp8_e5m2 gives "
        "a MODEL this node accepts as it is."),
    ("PriorFromModel", ("input", "required", "model", 1, "tooltip")): (
        " A MODEL loaded with weight_dtype fp8 (Load Diffusion Model) works as it is: half the memory of fp16."),
}


def undo_changes_since_v1(node: str, got: dict, recorded: dict) -> None:
    """Assert each deliberate change of ``node`` since V1 exactly, then take it out of ``got`` (in place)."""
    added = ADDED_OPTIONAL_SINCE_V1.get(node, {})
    optional = got["input"].get("optional", {})
    for name, spec in added.items():
        assert optional.get(name) == spec, f"{node}.{name}: {optional.get(name)!r} != {spec!r}"
        assert got["input_order"]["optional"][-len(added):] == list(added), f"{node}: added inputs come last"
        del optional[name]
        got["input_order"]["optional"].remove(name)
    if added and not optional and "optional" not in recorded["input"]:
        del got["input"]["optional"], got["input_order"]["optional"]
    for (changed_node, path), suffix in APPENDED_SINCE_V1.items():
        if changed_node != node:
            continue
        parent_got, parent_rec = got, recorded
        for key in path[:-1]:
            parent_got, parent_rec = parent_got[key], parent_rec[key]
        v1_text = parent_rec[path[-1]]
        # the V1 description ended in "." where the added clause continues the sentence
        base = v1_text[:-1] if suffix.startswith(",") and v1_text.endswith(".") else v1_text
        assert parent_got[path[-1]] == base + suffix, f"{node}.{'.'.join(map(str, path))}: {parent_got[path[-1]]!r}"
        parent_got[path[-1]] = v1_text


def as_v1(node: str, live: dict, checkpoints: list[str]) -> dict:
    """``live`` (a V3 node's /object_info) with the three serializer differences undone; fails on any other."""
    out = copy.deepcopy(live)
    for flag, value in V3_ONLY_FLAGS.items():
        assert out.pop(flag, "missing") is value, f"{node}: V3 flag {flag!r} should be {value}"
    for section in ("required", "optional"):
        for name, spec in out["input"].get(section, {}).items():
            if spec[0] != "COMBO":
                continue
            options = spec[1]
            assert options.pop("multiselect") is False, f"{node}.{name}: a plain combo, not multiselect"
            choices = options.pop("options")
            appended = APPENDED_CHOICES_SINCE_V1.get((node, name), [])
            if appended:
                assert choices[-len(appended):] == appended, f"{node}.{name}: {choices}"
                choices = choices[:-len(appended)]
            if name == "ckpt_name":  # the checkpoints folder of this server instead of the recording's
                assert choices == checkpoints, f"{node}.{name} does not list the checkpoints folder"
                choices = RECORDED_CHECKPOINTS
            out["input"][section][name] = [choices, *spec[1:]]
    for name, spec in out["input"].get("hidden", {}).items():
        assert isinstance(spec, list) and len(spec) == 1, f"{node}: hidden {name} as V3 serializes it"
        out["input"]["hidden"][name] = spec[0]
    return out


def test_v1_recording_covers_the_pack():
    assert sorted(V1_INFO) == ["PriorCheckpointLoader", "PriorFromModel", "PriorSwapCFG", "PriorSwapDualCFGGuider",
                               "PriorSwapGuider", "PriorSwapInsight", "PriorSwapInsightPlot", "PriorSwapToyCondition",
                               "PriorSwapToyModelLoader"]
    assert all(spec["python_module"] == PACK_MODULE for spec in V1_INFO.values())


@pytest.mark.parametrize("node", sorted(V1_INFO))
def test_object_info_same_as_v1(comfy_server, node):
    """Field by field: the V3 node serves what the V1 node served, but for the three forced differences."""
    live = comfy_server.get(f"/object_info/{node}")[node]
    checkpoints = comfy_server.get("/models/checkpoints")
    recorded = V1_INFO[node]
    got = as_v1(node, live, checkpoints)
    assert sorted(got) == sorted(recorded), f"{node}: top-level fields differ"
    assert got["input_order"] == {s: list(live["input"][s]) for s in live["input"]}, f"{node}: input_order vs input"
    undo_changes_since_v1(node, got, recorded)
    for field in sorted(recorded):
        if field == "input":
            continue
        assert got[field] == recorded[field], f"{node}.{field}: {got[field]!r} != V1 {recorded[field]!r}"
    assert sorted(got["input"]) == sorted(recorded["input"]), f"{node}: input sections differ"
    for section, inputs in recorded["input"].items():
        # The recording's dicts are key-sorted; the order is compared through the input_order field above.
        assert sorted(got["input"][section]) == sorted(inputs), f"{node}: {section} inputs differ"
        for name, spec in inputs.items():
            assert got["input"][section][name] == spec, f"{node}.{name}: {got['input'][section][name]!r} != V1 {spec!r}"


def test_nodes_are_v3_and_the_pack_enters_through_comfy_entrypoint(comfy_server):
    """ComfyUI loads a package with NODE_CLASS_MAPPINGS as V1; ours has only comfy_entrypoint."""
    import asyncio

    from comfy_api.latest import ComfyExtension, io
    from support.comfy_env import load_pack, pack_module

    pack = load_pack()
    assert not hasattr(pack, "NODE_CLASS_MAPPINGS") and not hasattr(pack, "NODE_DISPLAY_NAME_MAPPINGS")
    assert pack.WEB_DIRECTORY == "./js"
    assert inspect.iscoroutinefunction(pack.comfy_entrypoint)
    extension = asyncio.run(pack.comfy_entrypoint())
    assert isinstance(extension, ComfyExtension)
    nodes = asyncio.run(extension.get_node_list())
    assert all(issubclass(n, io.ComfyNode) for n in nodes)
    ids = [n.GET_SCHEMA().node_id for n in nodes]
    assert sorted(ids) == sorted([*V1_INFO, *ADDED_SINCE_V1])
    # For scripts: nodes.NODE_CLASS_MAPPINGS maps each id to its class (classes are named after their ids).
    assert pack_module("nodes").NODE_CLASS_MAPPINGS == dict(zip(ids, nodes))
    log = comfy_server.log_text()
    assert "comfy_entrypoint in" not in log, "ComfyUI could not use the pack's comfy_entrypoint"
    assert "lack of NODE_CLASS_MAPPINGS" not in log


def test_node_modules_stay_thin():
    """Nodes declare inputs and call py/: no torch, no sampling code in nodes/."""
    from support.comfy_env import ROOT

    for path in sorted((ROOT / "nodes").glob("*.py")):
        text = path.read_text()
        assert "import torch" not in text and "comfy.samplers" not in text, path.name


def test_every_node_has_tooltips_and_a_description(comfy_server):
    info = comfy_server.get("/object_info")
    for node in V1_INFO:
        spec = info[node]
        declared = {**spec["input"].get("required", {}), **spec["input"].get("optional", {})}
        for name, (_type, *options) in declared.items():
            assert options and options[0].get("tooltip"), f"{node}.{name} has no tooltip"
        assert all(spec["output_tooltips"]), f"{node} has an output without a tooltip"
        assert spec["description"], f"{node} has no description"


def test_pack_imported_without_error(comfy_server):
    log = comfy_server.log_text()
    assert "comfyui-prior-swap" in log
    assert "IMPORT FAILED" not in "\n".join(l for l in log.splitlines() if "prior-swap" in l)
    assert "Unable to parse pyproject.toml" not in log  # ComfyUI reads the pack's [tool.comfy] at load


def test_stand_in_checkpoints_listed(comfy_server):
    spec = comfy_server.get("/object_info/PriorCheckpointLoader")["PriorCheckpointLoader"]["input"]["required"]["ckpt_name"]
    assert {"sd15_base.safetensors", "sd15_finetune.safetensors", "ip2p_finetune.safetensors"} <= set(spec[1]["options"])


def test_frontend_extension_served(comfy_server):
    """WEB_DIRECTORY is registered and the server serves the pack's scripts to the frontend.

    ComfyUI lists every .js under WEB_DIRECTORY, subfolders included, so the shared module js/lib/common.js is
    listed too: it registers no extension, and the two scripts import it by the same URL (loaded once; the
    browser tests check the fetches).
    """
    import requests

    scripts = comfy_server.get("/extensions")
    ours = [s for s in scripts if "comfyui-prior-swap" in s]
    assert sorted(ours) == ["/extensions/comfyui-prior-swap/insight.js",
                            "/extensions/comfyui-prior-swap/lib/common.js",
                            "/extensions/comfyui-prior-swap/prior_swap.js"], scripts
    bodies = {}
    for script in ours:
        body = requests.get(comfy_server.url + script, timeout=10)
        assert body.ok and "javascript" in body.headers["Content-Type"]
        bodies[script.rsplit("/", 2)[-1] if "/lib/" not in script else "lib/common.js"] = body.text
    for name in ("insight.js", "prior_swap.js"):
        assert "registerExtension" in bodies[name] and 'from "./lib/common.js"' in bodies[name], name
        code = re.sub(r"//[^\n]*", "", bodies[name])  # comments may name what the code avoids
        assert not re.search(r"\.links?\b", code), f"{name}: deprecated graph API (output.links / input.link)"
    assert "registerExtension" not in bodies["lib/common.js"]


# ComfyUI 0.3.75 checks a V1 combo's value against its list before a prompt runs, but not a V3 combo's
# ("COMBO" with its options): each pack node with a combo refuses what V1 refused, in validate_inputs.
COMBOS = [("PriorSwapDualCFGGuider", "style", "regular"), ("PriorSwapInsightPlot", "x_axis", "sigma"),
          ("PriorSwapToyModelLoader", "model", "base"), ("PriorCheckpointLoader", "weight_dtype", "fp8_e5m2"),
          ("PriorSwapOptions", "cuda_graphs", "off"), ("PriorSwapOptions", "prior_device", "another GPU")]


@pytest.mark.parametrize("node, name, good", COMBOS)
def test_combo_values_outside_the_list_refused_as_in_v1(node, name, good):
    from support.comfy_env import pack_module

    cls = pack_module("nodes").NODE_CLASS_MAPPINGS[node]
    extra = {"ckpt_name": None} if node == "PriorCheckpointLoader" else {}
    assert cls.validate_inputs(**extra, **{name: good}) is True
    assert cls.validate_inputs(**extra, **{name: None}) is True  # linked: no value at validation, as in V1
    refused = cls.validate_inputs(**extra, **{name: "no such choice"})
    assert isinstance(refused, str) and name in refused and good in refused


def test_every_combo_of_the_pack_is_validated():
    from support.comfy_env import pack_module

    combos = {(node_id, i.id) for node_id, cls in pack_module("nodes").NODE_CLASS_MAPPINGS.items()
              for i in cls.GET_SCHEMA().inputs if i.get_io_type() == "COMBO" and i.id != "ckpt_name"}
    assert combos == {(node, name) for node, name, _good in COMBOS}


def test_server_refuses_a_combo_value_outside_the_list(comfy_server):
    prompt = {"1": {"class_type": "PriorSwapToyModelLoader", "inputs": {"model": "../../etc/passwd"}},
              "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    r = comfy_server.post("/prompt", {"prompt": prompt, "client_id": comfy_server.client_id})
    assert r.status_code == 400
    errors = r.json()["node_errors"]["1"]["errors"]
    assert [e["type"] for e in errors] == ["custom_validation_failed"]
    assert errors[0]["details"].startswith("model - model: '../../etc/passwd' is not one of finetune, base")
