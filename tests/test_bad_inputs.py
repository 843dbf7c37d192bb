"""Bad inputs on the real ComfyUI: each gets a clear error that names the node and the fix, before sampling.

Models of other families come from ``support/foreign_models.py``: tiny random-weight state dicts that
ComfyUI's own model detection loads (through ``UNETLoader``) as SD3 (16-channel flow), PixArt Sigma
(the 4-channel SDXL latent) and SD2.x (1024-wide text context).
"""
from __future__ import annotations

import importlib
import re

import pytest
import torch

from support import foreign_models, reference
from support.comfy_env import ROOT
from support.prompts import POSITIVE, fine_tune, graph, run_latent, sample_latent, text2img
from support.server import ExecutionError, prior_calls


@pytest.fixture(scope="module")
def foreign(comfy_server):
    """The foreign models and broken files, linked into the server's models folders for this module."""
    paths = foreign_models.write_all(ROOT / ".host" / "cache" / f"foreign-{foreign_models.cache_key()}")
    links = foreign_models.install(paths, comfy_server.base / "models")
    yield paths
    for link in links:
        link.unlink(missing_ok=True)


def _sd15_ft(g):
    return fine_tune(g)


def _sample(g, model, pos, neg, steps: int = 2):
    return sample_latent(g, model, pos, neg, steps=steps, prefix="latents/bad")


def _swap(g, model, prior, **schedule):
    schedule = {"prior_weight": 1.0, "start_percent": 0.0, "end_percent": 1.0, **schedule}
    return g.node("PriorSwapCFG", model=model, prior=prior.out(0), **schedule).out(0)


def failure(comfy_server, prompt: dict) -> tuple[dict, str]:
    """Run a prompt that must fail while executing; returns ComfyUI's execution_error and the prompt's log."""
    start = len(comfy_server.log_text())
    with pytest.raises(ExecutionError) as err:
        comfy_server.run(prompt)
    info = dict(err.value.info)
    info["exception_message"] = info["exception_message"].strip()  # ComfyUI appends "\n" + tips (none here)
    return info, comfy_server.log_text()[start:]


def assert_before_sampling(info: dict, log: str, node: str) -> None:
    assert info["node_type"] == node, info
    assert not prior_calls(log) and "KSampler" not in info["node_type"]
    assert not re.search(r"\d+/\d+ \[", log), "sampling started"  # no progress bar


# -- another latent space ---------------------------------------------------------------------------------

def _foreign_prior_graph(unet_name: str) -> dict:
    """SD1.5 fine-tune, prior = a model of another family loaded with UNETLoader."""
    g = graph()
    ckpt, pos, neg = _sd15_ft(g)
    unet = g.node("UNETLoader", unet_name=unet_name, weight_dtype="default")
    empty = g.node("CLIPTextEncode", clip=ckpt.out(1), text="")
    prior = g.node("PriorFromModel", model=unet.out(0), negative=empty.out(0))
    return _sample(g, _swap(g, ckpt.out(0), prior), pos, neg)


def _foreign_finetune_graph(unet_name: str) -> dict:
    """The reverse: the sampled model is of another family, the prior an SD1.5 checkpoint."""
    g = graph()
    ckpt, pos, neg = _sd15_ft(g)
    unet = g.node("UNETLoader", unet_name=unet_name, weight_dtype="default")
    prior = g.node("PriorCheckpointLoader", ckpt_name="sd15_base.safetensors", negative_prompt="")
    return _sample(g, _swap(g, unet.out(0), prior), pos, neg)


LATENT_SPACE = {
    "sd3_tiny.safetensors": "SD3, 16 channels",
    "pixart_sigma_tiny.safetensors": "SDXL, 4 channels",  # same channel count as SD1.5, another latent scale
}


@pytest.mark.parametrize("unet_name", sorted(LATENT_SPACE))
def test_prior_of_another_latent_space_refused(comfy_server, foreign, unet_name):
    info, log = failure(comfy_server, _foreign_prior_graph(unet_name))
    assert_before_sampling(info, log, "PriorSwapCFG")
    assert info["exception_message"].startswith(
        f"PriorSwapCFG: the prior works in another latent space ({LATENT_SPACE[unet_name]}) than the model "
        "(SD15, 4 channels). Pick a prior of the same family"), info["exception_message"]


@pytest.mark.parametrize("unet_name", sorted(LATENT_SPACE))
def test_model_of_another_latent_space_refused(comfy_server, foreign, unet_name):
    info, log = failure(comfy_server, _foreign_finetune_graph(unet_name))
    assert_before_sampling(info, log, "PriorSwapCFG")
    assert info["exception_message"].startswith(
        "PriorSwapCFG: the prior works in another latent space (SD15, 4 channels) than the model "
        f"({LATENT_SPACE[unet_name]})."), info["exception_message"]


def test_guider_refuses_prior_of_another_latent_space(comfy_server, foreign):
    g = graph()
    ckpt, pos, neg = _sd15_ft(g)
    unet = g.node("UNETLoader", unet_name="sd3_tiny.safetensors", weight_dtype="default")
    empty = g.node("CLIPTextEncode", clip=ckpt.out(1), text="")
    prior = g.node("PriorFromModel", model=unet.out(0), negative=empty.out(0))
    guider = g.node("PriorSwapGuider", model=ckpt.out(0), prior=prior.out(0), positive=pos.out(0), cfg=5.0,
                    prior_weight=1.0, start_percent=0.0, end_percent=1.0)
    latent = g.node("EmptyLatentImage", width=64, height=64, batch_size=1)
    samples = g.node("SamplerCustomAdvanced", noise=g.node("RandomNoise", noise_seed=1).out(0), guider=guider.out(0),
                     sampler=g.node("KSamplerSelect", sampler_name="euler").out(0),
                     sigmas=g.node("BasicScheduler", model=ckpt.out(0), scheduler="simple", steps=2, denoise=1.0).out(0),
                     latent_image=latent.out(0))
    g.node("SaveLatent", samples=samples.out(0), filename_prefix="latents/bad")
    info, log = failure(comfy_server, g.finalize())
    assert_before_sampling(info, log, "PriorSwapGuider")
    assert info["exception_message"].startswith("PriorSwapGuider: the prior works in another latent space (SD3, 16 ")


# -- conditioning of another text encoder ---------------------------------------------------------------

def test_prior_conditioning_from_another_text_encoder_refused(comfy_server, foreign):
    """An SD2.x-style prior (context 1024) given an SD1.5 CLIP encoding (768 wide)."""
    info, log = failure(comfy_server, _foreign_prior_graph("sd21_tiny.safetensors"))
    assert_before_sampling(info, log, "PriorFromModel")
    assert info["exception_message"] == (
        "PriorFromModel: the prior's conditioning is 768 wide but the prior model expects 1024 (it was encoded "
        "by another model's CLIP). Encode the prior's negative prompt with the prior's own CLIP.")


# -- schedule -------------------------------------------------------------------------------------------

def test_start_after_end_refused(comfy_server):
    info, log = failure(comfy_server, text2img(start_percent=0.8, end_percent=0.2))
    assert_before_sampling(info, log, "PriorSwapCFG")
    assert info["exception_message"] == ("PriorSwapCFG: start_percent (0.8) is after end_percent (0.2); the prior "
                                         "would never be used. Swap them.")


# -- checkpoint files -----------------------------------------------------------------------------------

BROKEN_FILE_MESSAGES = {
    "damaged_header.safetensors": "PriorCheckpointLoader: 'damaged_header.safetensors' is not a readable .safetensors "
                                  "file (Error while deserializing header: ",
    "cut_download.safetensors": "PriorCheckpointLoader: 'cut_download.safetensors' is not a readable .safetensors "
                                "file (Error while deserializing header: ",
    "a_lora.safetensors": "PriorCheckpointLoader: 'a_lora.safetensors' is not a diffusion model checkpoint that "
                          "ComfyUI recognises (a LoRA, VAE or text-encoder file?). Pick the prior model's full checkpoint",
    "pickle_with_code.ckpt": "PriorCheckpointLoader: 'pickle_with_code.ckpt' is a legacy pickle (.ckpt/.pt) that holds "
                             "more than weights; loading it would run code stored in the file, so it was refused. "
                             "Use a .safetensors release of this model.",
    "unet_only.ckpt": "PriorCheckpointLoader: 'unet_only.ckpt' has no text encoder, so its negative prompt cannot be "
                      "encoded. Load it with your own loaders and use PriorFromModel instead.",
    foreign_models.DELETED: "PriorCheckpointLoader: 'deleted_prior.safetensors' is not in the checkpoints folder "
                            "(deleted, moved, or a link to a missing file). Refresh the node list (press R)",
}


@pytest.mark.parametrize("ckpt_name", sorted(BROKEN_FILE_MESSAGES))
def test_broken_checkpoint_file_refused_with_reason(comfy_server, foreign, ckpt_name):
    info, log = failure(comfy_server, text2img(prior=ckpt_name))
    assert_before_sampling(info, log, "PriorCheckpointLoader")
    assert info["exception_message"].startswith(BROKEN_FILE_MESSAGES[ckpt_name]), info["exception_message"]
    assert foreign_models.PICKLE_MARKER not in comfy_server.log_text()  # the pickle's code never ran


@pytest.mark.parametrize("ckpt_name", ["../../../../etc/passwd", "../checkpoints/../../sd15_base.safetensors",
                                       "/etc/passwd", "not_there.safetensors"])
def test_name_outside_the_list_refused_by_validation(comfy_server, ckpt_name):
    """ComfyUI validates combo inputs: a name not listed in the checkpoints folder never reaches the node."""
    prompt = text2img(prior=ckpt_name)
    node_id = next(k for k, v in prompt.items() if v["class_type"] == "PriorCheckpointLoader")
    with pytest.raises(ExecutionError) as err:
        comfy_server.queue(prompt)
    body = err.value.info
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    errors = body["node_errors"][node_id]
    assert errors["class_type"] == "PriorCheckpointLoader"
    # ComfyUI validates a V1 combo against its list (value_not_in_list); for the V3 node, 0.3.75 leaves that to
    # the node's validate_inputs (custom_validation_failed). Either way the node never runs.
    kinds = [e["type"] for e in errors["errors"]]
    assert kinds in (["value_not_in_list"], ["custom_validation_failed"]), kinds
    assert errors["errors"][0]["details"].startswith(f"ckpt_name: '{ckpt_name}' not in ") or (
        f"'{ckpt_name}' is not in the checkpoints folder list" in errors["errors"][0]["details"])


def test_name_outside_the_folder_cannot_leave_it_in_process():
    """Defense in depth, should validation be bypassed: the loader resolves names inside the folder only."""
    from support.inprocess import core

    errors = core("errors")
    nodes = importlib.import_module(f"{core('prior').__name__.rsplit('.', 2)[0]}.nodes.prior_nodes")
    with pytest.raises(errors.PriorSwapError, match=r"^PriorCheckpointLoader: '\.\./\.\./\.\./\.\./etc/hostname' is "
                                                    r"not in the checkpoints folder"):
        nodes.PriorCheckpointLoader.execute("../../../../etc/hostname", "")


# -- NaN / inf from the prior ---------------------------------------------------------------------------

@pytest.mark.parametrize("downstream", [None, "CFGZeroStar"])
def test_nan_prior_detected_at_first_step_and_named(comfy_server, foreign, downstream):
    """A LoRA full of NaN on the prior: the first prior evaluation raises an error naming the prior.

    ``downstream``: a node after PriorSwapCFG clones the MODEL, and with it the prior (an additional model).
    """
    g = graph()
    ckpt, pos, neg = _sd15_ft(g)
    base = g.node("CheckpointLoaderSimple", ckpt_name="sd15_base.safetensors")
    broken = g.node("LoraLoaderModelOnly", model=base.out(0), lora_name=foreign_models.NAN_LORA, strength_model=1.0)
    empty = g.node("CLIPTextEncode", clip=base.out(1), text="")
    prior = g.node("PriorFromModel", model=broken.out(0), negative=empty.out(0))
    model = _swap(g, ckpt.out(0), prior)
    if downstream:
        model = g.node(downstream, model=model).out(0)
    info, log = failure(comfy_server, _sample(g, model, pos, neg, steps=3))
    assert info["node_type"] == "KSampler"
    sigma_max = float(reference.discrete_sigmas()[-1])
    assert info["exception_message"] == (
        f"Prior swap: the prior from Prior From Model returned NaN/inf (at sigma {sigma_max:.4g}), which would turn "
        "the image black or into noise. Its weights or a patch on it (LoRA, merge, low-precision dtype) are broken: "
        "load the prior without the patch, download the checkpoint again, or run the prior in fp32 "
        "(ModelComputeDtype, --force-fp32).")
    assert (1, 1) in prior_calls(log)  # stopped at the first step


# -- batch sizes ----------------------------------------------------------------------------------------

def test_latent_batch_of_three_with_batch_one_conditioning_matches_reference(comfy_server, checkpoint_cache):
    """Latent batch 3, conditioning batch 1 (fine-tune and prior): repeated to the batch as ComfyUI does."""
    swapped = run_latent(comfy_server, text2img(batch=3, seed=4, steps=2))
    assert swapped.shape[0] == 3
    ft_unet, ft_clip = reference.load(str(checkpoint_cache / "sd15_finetune.safetensors"))
    prior_unet, prior_clip = reference.load(str(checkpoint_cache / "sd15_base.safetensors"))
    ft, prior = reference.Net(ft_unet, "eps"), reference.Net(prior_unet, "eps")
    c, u = reference.encode(ft_clip, POSITIVE), reference.encode(prior_clip, "")

    def denoise(x, sigma):
        cond_eps, uncond_eps = ft.eps(x, sigma, c), prior.eps(x, sigma, u)
        return x - sigma * reference.cfg_eps(cond_eps, uncond_eps, 5.0)

    expected = reference.euler(denoise, tuple(swapped.shape), seed=4, steps=2)
    assert float((swapped - expected).abs().max() / expected.abs().max()) < 1e-5
    assert (swapped[0] - swapped[2]).abs().max() > 0.1


@pytest.fixture(scope="module")
def sd15_inprocess(checkpoint_cache):
    import comfy.sd

    model, clip, _vae, _ = comfy.sd.load_checkpoint_guess_config(
        str(checkpoint_cache / "sd15_finetune.safetensors"), output_vae=False, output_clip=True)
    return model, clip


@pytest.mark.parametrize("negative_batch", [2, 4])
def test_prior_conditioning_batch_other_than_latent_batch_follows_comfyui(sd15_inprocess, negative_batch):
    """No node in ComfyUI 0.3.75 makes a batched text conditioning, but a custom node may: a prior negative of
    batch 2 or 4 on a latent batch of 3 is repeated / cut to the batch exactly as stock CFG does with the
    same negative (the fine-tune as its own prior gives the stock result)."""
    import comfy.sample

    from support.inprocess import core

    routing, prior_mod = core("routing"), core("prior")
    model, clip = sd15_inprocess
    texts = ["blurry", "", "dark", "low quality"][:negative_batch]
    encoded = [prior_mod.encode_text(clip, t)[0] for t in texts]
    negative = [[torch.cat([e[0] for e in encoded]), dict(encoded[0][1])]]
    positive = prior_mod.encode_text(clip, POSITIVE)
    latent = torch.zeros(3, 4, 8, 8)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(3))

    def sample(m):
        return comfy.sample.sample(m, noise, 2, 5.0, "euler", "simple", positive, negative, latent, seed=3,
                                   disable_pbar=True)

    stock = sample(model)
    swapped = sample(routing.apply_prior_swap(model, prior_mod.make_prior(model, negative), routing.SwapSchedule()))
    assert float((swapped - stock).abs().max() / stock.abs().max()) < 1e-5
    # The batch really mattered: the first negative alone gives another result.
    single = [[encoded[0][0], dict(encoded[0][1])]]
    alone = comfy.sample.sample(model, noise, 2, 5.0, "euler", "simple", positive, single, latent, seed=3,
                                disable_pbar=True)
    assert float((alone - stock).abs().max() / stock.abs().max()) > 1e-3
