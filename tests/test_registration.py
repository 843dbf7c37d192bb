"""The pack loads in the real ComfyUI and every node is registered with its inputs and tooltips."""
from __future__ import annotations

EXPECTED = {
    "PriorCheckpointLoader": ["ckpt_name", "negative_prompt"],
    "PriorFromModel": ["model", "negative"],
    "PriorSwapCFG": ["model", "prior", "prior_weight", "start_percent", "end_percent"],
    "PriorSwapGuider": ["model", "prior", "positive", "cfg", "prior_weight", "start_percent", "end_percent", "negative"],
    "PriorSwapDualCFGGuider": ["model", "prior", "cond1", "cond2", "negative", "cfg_conds", "cfg_cond2_negative",
                               "style", "prior_weight", "start_percent", "end_percent"],
    "PriorSwapInsight": ["model"],
    "PriorSwapInsightPlot": ["model", "samples", "x_axis", "width", "height"],
    "PriorSwapToyModelLoader": ["model"],
    "PriorSwapToyCondition": ["shapes"],
}


def test_every_node_registered_with_inputs_and_tooltips(comfy):
    info = comfy.get("/object_info")
    for node, inputs in EXPECTED.items():
        assert node in info, f"{node} not registered"
        spec = info[node]
        declared = {**spec["input"].get("required", {}), **spec["input"].get("optional", {})}
        assert list(declared) == inputs
        for name, (_type, *options) in declared.items():
            assert options and options[0].get("tooltip"), f"{node}.{name} has no tooltip"
        assert spec["description"], f"{node} has no description"
        assert spec["python_module"].startswith("custom_nodes.")


def test_pack_imported_without_error(comfy):
    log = comfy.log_text()
    assert "comfyui-prior-swap" in log
    assert "IMPORT FAILED" not in "\n".join(l for l in log.splitlines() if "prior-swap" in l)


def test_stand_in_checkpoints_listed(comfy):
    names = comfy.get("/object_info/PriorCheckpointLoader")["PriorCheckpointLoader"]["input"]["required"]["ckpt_name"][0]
    assert {"sd15_base.safetensors", "sd15_finetune.safetensors", "ip2p_finetune.safetensors"} <= set(names)


def test_frontend_extension_served(comfy):
    """WEB_DIRECTORY is registered and the server serves the pack's script to the frontend."""
    import requests

    scripts = comfy.get("/extensions")
    ours = [s for s in scripts if "comfyui-prior-swap" in s]
    assert sorted(ours) == ["/extensions/comfyui-prior-swap/insight.js",
                            "/extensions/comfyui-prior-swap/prior_swap.js"], scripts
    for script in ours:
        body = requests.get(comfy.url + script, timeout=10)
        assert body.ok and "registerExtension" in body.text
