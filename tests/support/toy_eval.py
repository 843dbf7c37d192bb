"""Sampling the toy models through the real ComfyUI's nodes, and the judge's measures with bootstrap intervals.

Shared by the evaluation tool (tools/evaluate_toy_pair.py) and the toy pair's tests. Sampling runs the
host's own nodes in this process: the stock ``KSampler`` for the class pair; ``SamplerCustomAdvanced`` with
the stock ``DualCFGGuider`` or the pack's ``PriorSwapDualCFGGuider`` for the edit model, its source image
given by the stock ``InstructPixToPixConditioning`` through the ``pixel_space`` VAE.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.comfy_env import import_comfy, pack_module

REAL_SEED = 777_777  # held-out real shapes: a seed training never uses
EDIT_SEED = 555_555  # held-out edits: another seed training never uses


def toy_and_nodes() -> tuple[Any, dict]:
    """py/toy_pair.py and the pack's node classes, imported as ComfyUI imports the pack."""
    import_comfy()
    return pack_module("py.toy_pair"), pack_module("nodes").NODE_CLASS_MAPPINGS


@dataclass
class Samples:
    """One setting's samples as the judge sees them: per-sample correctness (None when there is no condition
    to match), features for the Fréchet distance, per-sample squared error to a known answer (edits only)."""

    correct: Any  # bool tensor [N] or None
    features: Any  # [N, D]
    error: Any = None  # float tensor [N] or None


class Judge:
    """The shipped classifier, and the features of held-out real shapes that FD compares against."""

    def __init__(self, toy, real_count: int = 2000, weights_dir: Path | None = None) -> None:
        import torch

        self.toy = toy
        self.classifier = toy.load_classifier(Path(weights_dir) / toy.CLASSIFIER_FILE if weights_dir else None)
        labels = torch.arange(real_count) % len(toy.CLASSES)
        with torch.no_grad():
            self.real = toy.draw_shapes(labels, torch.Generator().manual_seed(REAL_SEED))
            self.real_features = self.classifier.features(self.real)
            self.accuracy_on_real = (self.classifier(self.real).argmax(1) == labels).float().mean().item()

    def judge(self, images, labels=None, answers=None) -> Samples:
        """Score images in [-1, 1]: the class they show against ``labels``; squared error to ``answers``."""
        import torch

        images = images.float().clamp(-1, 1)
        with torch.no_grad():
            features = self.classifier.features(images)
            correct = None if labels is None else self.classifier.head(features).argmax(1) == labels
        error = None if answers is None else (images - answers).pow(2).mean(dim=(1, 2, 3))
        return Samples(correct, features, error)


def uncond_errors(patcher, toy, real, seed: int = 0, concat: bool = False):
    """Per-image held-out ε-prediction error of a model's ∅ branch on real shapes ``real`` ([N]): the
    diffusion training loss at noise levels drawn uniformly from the model's own schedule (ComfyUI's
    ``model_sampling``), through ComfyUI's ``apply_model``. An edit model is asked with its ∅ image (zeros)."""
    import torch

    model = patcher.model
    gen = torch.Generator().manual_seed(seed)
    sigmas = model.model_sampling.sigmas.float()
    sigma = sigmas[torch.randint(0, sigmas.shape[0], (real.shape[0],), generator=gen)]
    noise = torch.randn(real.shape, generator=gen)
    noisy = real + sigma.view(-1, 1, 1, 1) * noise
    context = toy.class_context(torch.full((real.shape[0],), len(toy.CLASSES)))
    dtype = model.get_dtype()
    kwargs = {"c_concat": torch.zeros_like(real).to(dtype)} if concat else {}
    errors = []
    with torch.no_grad():
        for i in range(0, real.shape[0], 500):
            part = slice(i, i + 500)
            denoised = model.apply_model(noisy[part].to(dtype), sigma[part].to(dtype),
                                         c_crossattn=context[part].to(dtype),
                                         **{k: v[part] for k, v in kwargs.items()}).float()
            eps = (noisy[part] - denoised) / sigma[part].view(-1, 1, 1, 1)
            errors.append((eps - noise[part]).pow(2).mean(dim=(1, 2, 3)))
    return torch.cat(errors)


class ClassSampler:
    """Class-conditional samples of a batch cycling through the classes, by the stock KSampler node."""

    def __init__(self, toy, per_class: int, steps: int, seed: int) -> None:
        import torch

        self.toy, self.steps, self.seed = toy, steps, seed
        count = per_class * len(toy.CLASSES)
        self.labels = torch.arange(count) % len(toy.CLASSES)
        self.positive = [[toy.class_context(self.labels), {}]]
        self.empty = [[toy.class_context(torch.full((count,), len(toy.CLASSES))), {}]]
        self.latent = {"samples": torch.zeros(count, 3, toy.IMAGE_SIZE, toy.IMAGE_SIZE)}

    def sample(self, model, cfg: float, conditioned: bool = True):
        """Images in [-1, 1]: conditioned on the classes (negative ∅), or ∅ alone at cfg 1."""
        import nodes  # ComfyUI's own node module: the stock KSampler

        positive = self.positive if conditioned else self.empty
        return nodes.KSampler().sample(model, self.seed, self.steps, cfg, "euler", "normal", positive, self.empty,
                                       self.latent)[0]["samples"]


class EditSampler:
    """Edits of held-out sources: stock InstructPixToPixConditioning → a dual guider → SamplerCustomAdvanced."""

    def __init__(self, toy, node_classes: dict, count: int, steps: int, seed: int) -> None:
        import torch

        import comfy.sd
        from comfy_extras.nodes_ip2p import InstructPixToPixConditioning

        self.toy, self.nodes, self.steps, self.seed = toy, node_classes, steps, seed
        self.source, self.target, self.labels = toy.draw_edits(count, torch.Generator().manual_seed(EDIT_SEED))
        vae = comfy.sd.VAE(sd={"pixel_space_vae": torch.tensor(1.0)})  # what VAELoader's "pixel_space" loads
        instruction = [[toy.class_context(self.labels), {}]]
        self.empty = [[toy.class_context(torch.full((count,), len(toy.CLASSES))), {}]]
        pixels = ((self.source + 1) / 2).movedim(1, -1)  # IMAGE: [B, H, W, C] in [0, 1]
        self.cond1, self.cond2, self.latent = InstructPixToPixConditioning.execute(instruction, self.empty, pixels,
                                                                                   vae)

    def sample(self, model, prior, text_scale: float, image_scale: float):
        """Edited images in [-1, 1]: ComfyUI's DualCFGGuider (``prior`` None) or the pack's prior swap one."""
        from comfy_extras.nodes_custom_sampler import (BasicScheduler, DualCFGGuider, KSamplerSelect, RandomNoise,
                                                       SamplerCustomAdvanced)

        if prior is None:
            guider = DualCFGGuider.execute(model, self.cond1, self.cond2, self.empty, text_scale, image_scale,
                                           "regular")[0]
        else:
            guider = self.nodes["PriorSwapDualCFGGuider"].execute(model, prior, self.cond1, self.cond2, self.empty,
                                                                  text_scale, image_scale, "regular", 1.0, 0.0,
                                                                  1.0)[0]
        sigmas = BasicScheduler.execute(model, "normal", self.steps, 1.0)[0]
        out = SamplerCustomAdvanced.execute(RandomNoise.execute(self.seed)[0], guider,
                                            KSamplerSelect.execute("euler")[0], sigmas, self.latent)[0]
        return out["samples"]


# --- intervals -------------------------------------------------------------------------------------

def frechet(features, real_features) -> float:
    """The Fréchet distance (py/toy_pair.py's, FID's formula) of a feature set to the real one."""
    toy = pack_module("py.toy_pair")
    return toy.frechet_distance(features, real_features)


def measure(runs: list[Samples], real_features, key: str):
    """The pooled value of ``key`` ('accuracy', 'fd', 'error') over seeds' runs."""
    import torch

    if key == "accuracy":
        return float(torch.cat([r.correct for r in runs]).float().mean())
    if key == "error":
        return float(torch.cat([r.error for r in runs]).mean())
    return frechet(torch.cat([r.features for r in runs]), real_features)


def bootstrap(settings: dict[str, list[Samples]], real_features, keys=("accuracy", "fd"), replicates: int = 400,
              seed: int = 0, pairs: list[tuple[str, str]] = ()) -> dict:
    """Pooled value and 95 % interval of each measure of each setting, and of paired differences.

    Each setting is a list of runs, one per training seed, whose samples share noise and conditions across
    settings (sample i of one setting is paired with sample i of another). A replicate resamples the seeds
    with replacement, then the samples within each chosen seed — the same indices for every setting, so a
    difference's interval holds both the training seeds' spread and the sampling noise.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    names = list(settings)
    seeds = len(settings[names[0]])
    n = settings[names[0]][0].features.shape[0]
    draws: dict[tuple[str, str], list[float]] = {}
    for _ in range(replicates):
        chosen = torch.randint(0, seeds, (seeds,), generator=gen)
        index = [torch.randint(0, n, (n,), generator=gen) for _ in range(seeds)]
        values = {}
        for name in names:
            runs = [settings[name][s] for s in chosen]
            picked = [_take(run, idx) for run, idx in zip(runs, index)]
            for key in keys:
                if _has(settings[name][0], key):
                    values[(name, key)] = measure(picked, real_features, key)
                    draws.setdefault((name, key), []).append(values[(name, key)])
        for a, b in pairs:
            for key in keys:
                if (a, key) in values and (b, key) in values:
                    draws.setdefault((f"{a} − {b}", key), []).append(values[(a, key)] - values[(b, key)])
    out: dict[str, dict] = {}
    for name in names:
        for key in keys:
            if _has(settings[name][0], key):
                out.setdefault(name, {})[key] = _summary(measure(settings[name], real_features, key),
                                                         draws[(name, key)])
    for a, b in pairs:
        for key in keys:
            if (f"{a} − {b}", key) in draws:
                point = out[a][key]["value"] - out[b][key]["value"]
                out.setdefault(f"{a} − {b}", {})[key] = _summary(point, draws[(f"{a} − {b}", key)])
    return out


def _has(samples: Samples, key: str) -> bool:
    return {"accuracy": samples.correct, "error": samples.error, "fd": samples.features}[key] is not None


def _take(samples: Samples, index) -> Samples:
    return Samples(None if samples.correct is None else samples.correct[index], samples.features[index],
                   None if samples.error is None else samples.error[index])


def _summary(value: float, draws: list[float]) -> dict:
    import torch

    q = torch.tensor(draws, dtype=torch.float64).quantile(torch.tensor([0.025, 0.975], dtype=torch.float64))
    return {"value": value, "low": float(q[0]), "high": float(q[1])}


def interval_mean(values, replicates: int = 1000, seed: int = 0) -> dict:
    """Mean of per-item values (e.g. held-out errors) with a bootstrap 95 % interval."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    values = values.double()
    idx = torch.randint(0, values.shape[0], (replicates, values.shape[0]), generator=gen)
    return _summary(float(values.mean()), values[idx].mean(1).tolist())


def interval_difference(a, b, replicates: int = 1000, seed: int = 0) -> dict:
    """Mean of ``a − b`` over paired items (same image, noise and level) with a bootstrap 95 % interval."""
    return interval_mean(a.double() - b.double(), replicates, seed)


def weights(toy, name: str, seed: int = 0, weights_dir: Path | None = None) -> Path:
    """The file of a trained toy model: base/finetune/edit (seed 0 shipped), base_stepN, small, seeds."""
    root = Path(weights_dir) if weights_dir else toy.WEIGHTS_DIR
    if name in toy.MODEL_FILES and seed == 0:
        return root / toy.MODEL_FILES[name]
    if name in ("finetune", "edit"):
        return root / "evidence" / f"toy_{name}_seed{seed}.safetensors"
    return root / "evidence" / f"toy_{name}.safetensors"
