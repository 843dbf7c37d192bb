"""Train the toy models (py/toy_pair.py) the evidence uses: judge, base, its checkpoints, a small control, fine-tunes.

    python3 tools/train_toy_pair.py --device cuda --out py/toy_pair        # everything, on one GPU (see docs/evidence.md)
    python3 tools/host.py python tools/train_toy_pair.py --quick --out /tmp/toy     # CPU smoke run of every stage

Every model is ComfyUI's own ``UNetModel`` (py/toy_pair.py's configs) trained with the ε-prediction loss on
ComfyUI's own noise schedule, so ``load_toy_model`` loads it like any diffusion model. Data is drawn
procedurally (``draw_shapes``, ``draw_edits``), so nothing is downloaded. The stages:

- ``classifier``: the held-out judge (condition accuracy; its features give the Fréchet distance);
- ``base``: unconditional (always ∅) on the broad data — a pool of fresh shapes of every class, colour,
  position and size, far larger than any fine-tune sees — trained far longer than the fine-tunes; its EMA
  weights are also saved at earlier steps (the prior-quality sweep) and its held-out ∅ error is logged
  along the way (``base_curve.json``), which shows whether it converged;
- ``small``: a separate model of less capacity (``SMALL_UNET_CONFIG``), briefly trained: Autoguidance's
  "weaker model", the control of the sweep;
- ``finetune``: from the base's weights, class-conditional with CFG dropout, on a narrow fine-tuning set
  (``--finetune-images`` per class, fixed) for many epochs — the paper's setting of a fine-tune on a narrow
  task whose ∅ branch sees little data;
- ``edit``: an InstructPix2Pix-style fine-tune of the base: 3 more input channels (zero-initialised, as IP2P
  does) take the source image, the instruction "make it a <shape>" is the condition; it learns from a
  fixed set of edits, dropping the image, the instruction or both for 5 % of samples each, as IP2P trains.

``--stage all`` runs the stages as separate processes on the one GPU (a step of so small a UNet is bound by
launch overhead, so processes side by side use the GPU better than one): first judge, base and small
together, then three training seeds of each fine-tune. (Training steps are eager: CUDA-graphing them with
``torch.cuda.make_graphed_callables`` was tried and trained worse — the base's held-out ∅ error stalled at
0.048 where the eager small model reached 0.020, fine-tunes diverged — so it was removed.) Weights are fp16 safetensors of the EMA
parameters, each with its UNet config in the metadata. GPU training is not bit-deterministic: a rerun gives
similar models, not the same bytes.
"""
from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.comfy_env import import_comfy, pack_module  # noqa: E402

SEEDS = (0, 1, 2)  # training seeds of each fine-tune; seed 0 is the shipped one (toy_finetune, toy_edit)
HELD_OUT_SEED = 99_999  # the base's held-out curve: a seed no training data uses


def toy_module():
    """py/toy_pair.py, imported the way ComfyUI imports the pack (a package), after ComfyUI itself."""
    import_comfy()
    return pack_module("py.toy_pair")


def output_path(tp, out: Path, stage: str, seed: int = 0, step: int | None = None) -> Path:
    """Where a stage writes its weights: the shipped names in ``out``, the evidence-only ones in ``out/evidence``."""
    if stage == "base":
        return out / tp.MODEL_FILES["base"] if step is None else out / "evidence" / f"toy_base_step{step}.safetensors"
    if stage == "small":
        return out / "evidence" / "toy_small.safetensors"
    if stage in ("finetune", "edit"):
        return out / tp.MODEL_FILES[stage] if seed == 0 else out / "evidence" / f"toy_{stage}_seed{seed}.safetensors"
    return out / tp.CLASSIFIER_FILE


# --- the training loop ---------------------------------------------------------------------------

class Trainer:
    """ε-prediction training of one UNet: AdamW, warm-up, gradient clipping, an EMA copy; bf16 autocast on a GPU."""

    def __init__(self, tp, unet, device, lr: float, seed: int, ema_decay: float) -> None:
        import contextlib

        import torch

        self.device = device
        self.gen = torch.Generator(device=device).manual_seed(seed)
        self.acp = tp.alphas_cumprod().to(device)
        self.unet = unet
        self.ema = copy.deepcopy(unet).requires_grad_(False)
        self.ema_decay = ema_decay
        fused = {"fused": True} if device.type == "cuda" else {}
        self.opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0, **fused)
        self.lr = lr
        self.autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" \
            else contextlib.nullcontext
        self.step_count = 0

    def step(self, x0, context, concat=None, warmup: int = 300) -> float | None:
        """One optimiser step on clean images ``x0`` with cross-attention ``context`` (and ``concat``, the
        edit model's extra input channels). Returns the loss every 100 steps (reading it syncs the GPU)."""
        import torch

        t = torch.randint(0, self.acp.shape[0], (x0.shape[0],), device=self.device, generator=self.gen)
        noise = torch.randn(x0.shape, device=self.device, generator=self.gen)
        a = self.acp[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        net_in = x_t if concat is None else torch.cat([x_t, concat], dim=1)
        for group in self.opt.param_groups:
            group["lr"] = self.lr * min(1.0, (self.step_count + 1) / warmup)
        with self.autocast():
            pred = self.unet(net_in, t.float(), context)
        loss = torch.nn.functional.mse_loss(pred.float(), noise)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.unet.parameters(), 1.0)
        self.opt.step()
        decay = min(self.ema_decay, (1 + self.step_count) / (10 + self.step_count))
        with torch.no_grad():
            torch._foreach_lerp_(list(self.ema.parameters()), list(self.unet.parameters()), 1 - decay)
        self.step_count += 1
        return loss.item() if self.step_count % 100 == 1 else None


def uncond_error(tp, unet, images, seed: int = 0) -> float:
    """Held-out ε-prediction error of a UNet's ∅ branch on ``images`` (noise levels uniform over the schedule)."""
    import torch

    gen = torch.Generator(device=images.device).manual_seed(seed)
    acp = tp.alphas_cumprod().to(images.device)
    errors = []
    with torch.no_grad():
        for chunk in images.split(1024):
            t = torch.randint(0, acp.shape[0], (chunk.shape[0],), device=images.device, generator=gen)
            noise = torch.randn(chunk.shape, device=images.device, generator=gen)
            a = acp[t].view(-1, 1, 1, 1)
            context = tp.class_context(torch.full((chunk.shape[0],), len(tp.CLASSES), device=images.device))
            pred = unet(a.sqrt() * chunk + (1 - a).sqrt() * noise, t.float(), context=context)
            errors.append((pred.float() - noise).pow(2).mean(dim=(1, 2, 3)))
    return float(torch.cat(errors).mean())


def draw_pool(tp, count: int, seed: int, device) -> tuple:
    """``count`` real shapes of every class, drawn in chunks: ``(images, labels)`` on ``device``."""
    import torch

    gen = torch.Generator(device=device).manual_seed(seed)
    labels = torch.randint(0, len(tp.CLASSES), (count,), device=device, generator=gen)
    images = torch.cat([tp.draw_shapes(chunk, gen) for chunk in labels.split(8192)])
    return images, labels


# --- the stages ----------------------------------------------------------------------------------

def train_classifier(tp, args, device, log) -> None:
    import torch

    gen = torch.Generator(device=device).manual_seed(args.seed + 100)
    clf = tp.ToyClassifier().to(device)
    opt = torch.optim.AdamW(clf.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=args.classifier_steps)
    for step in range(args.classifier_steps):
        labels = torch.randint(0, len(tp.CLASSES), (512,), device=device, generator=gen)
        loss = torch.nn.functional.cross_entropy(clf(tp.draw_shapes(labels, gen)), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % max(1, args.classifier_steps // 5) == 0:
            log(f"classifier step {step} loss {loss.item():.4f}")
    clf.eval()
    images, labels = draw_pool(tp, 2000, args.seed + 101, device)
    with torch.no_grad():
        log(f"classifier held-out accuracy {(clf(images).argmax(1) == labels).float().mean().item():.4f}")
    tp.save_toy_weights(clf, output_path(tp, args.out, "classifier"))


def train_unconditional(tp, args, device, log, *, name: str, unet_config: dict, steps: int, lr: float,
                        checkpoints: tuple = ()) -> None:
    """The base (or the small control): ∅ context always, batches from a large pool of fresh shapes."""
    import torch

    pool, _ = draw_pool(tp, args.pool, args.seed + 200, device)
    held_out, _ = draw_pool(tp, 4096, HELD_OUT_SEED, device)
    unet = tp.new_unet(device, unet_config)
    trainer = Trainer(tp, unet, device, lr, args.seed + (210 if name == "base" else 220), args.base_ema)
    empty = tp.class_context(torch.full((args.batch,), len(tp.CLASSES), device=device))
    curve, t0 = [], time.time()
    probe = sorted({*checkpoints, *range(0, steps + 1, max(1, steps // 20)), steps})
    for step in range(steps + 1):
        if step in probe:
            error = uncond_error(tp, trainer.ema, held_out)
            curve.append({"step": step, "heldout_uncond_error": error, "seconds": round(time.time() - t0, 1)})
            log(f"{name} step {step}: held-out ∅ error {error:.5f} ({time.time() - t0:.0f}s)")
            if step in checkpoints:
                tp.save_toy_weights(trainer.ema, output_path(tp, args.out, "base", step=step), unet_config)
        if step == steps:
            break
        idx = torch.randint(0, pool.shape[0], (args.batch,), device=device, generator=trainer.gen)
        trainer.step(pool[idx], empty)
    target = output_path(tp, args.out, "base") if name == "base" else output_path(tp, args.out, "small")
    tp.save_toy_weights(trainer.ema, target, unet_config)
    (args.out / f"{name}_curve.json").write_text(json.dumps(curve, indent=1))


def _from_base(tp, args, device, unet_config: dict):
    """A fine-tune's starting point: the base's weights; extra input channels (the edit model's image) zero."""
    import torch

    import comfy.utils

    unet = tp.new_unet(device, unet_config)
    base = comfy.utils.load_torch_file(str(output_path(tp, args.out, "base")), safe_load=True)
    state = unet.state_dict()
    for key, value in base.items():
        value = value.float().to(device)
        if state[key].shape != value.shape:  # input_blocks.0.0.weight: [C, 3, k, k] → [C, 6, k, k]
            padded = torch.zeros_like(state[key])
            padded[:, :value.shape[1]] = value
            value = padded
        state[key] = value
    unet.load_state_dict(state)
    return unet


def train_finetune(tp, args, device, log) -> None:
    """Class-conditional fine-tune of the base with CFG dropout, on a narrow fixed set."""
    import torch

    gen = torch.Generator(device=device).manual_seed(args.seed + 300)  # one data set for every training seed
    labels = torch.arange(args.finetune_images * len(tp.CLASSES), device=device) % len(tp.CLASSES)
    images = tp.draw_shapes(labels, gen)
    unet = _from_base(tp, args, device, tp.UNET_CONFIG)
    trainer = Trainer(tp, unet, device, args.finetune_lr, args.seed + 400 + 17 * args.train_seed, args.finetune_ema)
    empty = len(tp.CLASSES)
    for step in range(args.finetune_steps):
        idx = torch.randint(0, images.shape[0], (args.finetune_batch,), device=device, generator=trainer.gen)
        drop = torch.rand(args.finetune_batch, device=device, generator=trainer.gen) < args.dropout
        cond = torch.where(drop, torch.full_like(labels[idx], empty), labels[idx])
        loss = trainer.step(images[idx], tp.class_context(cond))
        if loss is not None and (trainer.step_count - 1) % max(100, args.finetune_steps // 10) == 0:
            log(f"finetune seed {args.train_seed} step {trainer.step_count - 1} loss {loss:.4f}")
    tp.save_toy_weights(trainer.ema, output_path(tp, args.out, "finetune", args.train_seed), tp.UNET_CONFIG)


def train_edit(tp, args, device, log) -> None:
    """InstructPix2Pix-style fine-tune of the base: source image concatenated, instruction as the condition."""
    import torch

    gen = torch.Generator(device=device).manual_seed(args.seed + 500)  # one data set for every training seed
    source, target, target_labels = tp.draw_edits(args.edit_images, gen, device)
    config = dict(tp.UNET_CONFIG, in_channels=tp.EDIT_IN_CHANNELS)
    unet = _from_base(tp, args, device, config)
    trainer = Trainer(tp, unet, device, args.finetune_lr, args.seed + 600 + 17 * args.train_seed, args.finetune_ema)
    empty = len(tp.CLASSES)
    for step in range(args.edit_steps):
        idx = torch.randint(0, source.shape[0], (args.finetune_batch,), device=device, generator=trainer.gen)
        r = torch.rand(args.finetune_batch, device=device, generator=trainer.gen)
        # IP2P's dropout: 5 % without the instruction, 5 % without the image, 5 % without both.
        no_text = (r < 0.05) | ((r >= 0.10) & (r < 0.15))
        no_image = (r >= 0.05) & (r < 0.15)
        cond = torch.where(no_text, torch.full_like(target_labels[idx], empty), target_labels[idx])
        concat = source[idx] * (~no_image).float().view(-1, 1, 1, 1)  # ∅ image: zeros, as IP2P
        loss = trainer.step(target[idx], tp.class_context(cond), concat=concat)
        if loss is not None and (trainer.step_count - 1) % max(100, args.edit_steps // 10) == 0:
            log(f"edit seed {args.train_seed} step {trainer.step_count - 1} loss {loss:.4f}")
    tp.save_toy_weights(trainer.ema, output_path(tp, args.out, "edit", args.train_seed), config)


# --- driver ----------------------------------------------------------------------------------------

def run_all(args) -> int:
    """Every stage as its own process: judge, base and small side by side, then the fine-tunes' seeds."""
    common = [sys.executable, "-P", __file__, "--device", args.device, "--out", str(args.out)]
    for flag in ("batch", "pool", "base_steps", "base_lr", "small_steps", "finetune_steps", "edit_steps",
                 "finetune_batch", "finetune_lr", "finetune_images", "edit_images", "classifier_steps"):
        common += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    common += ["--base-checkpoints", ",".join(map(str, args.base_checkpoints))]
    logs = args.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    def phase(jobs: list[tuple[str, list[str]]]) -> None:
        procs = [(name, subprocess.Popen(common + extra, stdout=(logs / f"{name}.txt").open("w"),
                                         stderr=subprocess.STDOUT)) for name, extra in jobs]
        failed = [name for name, p in procs if p.wait() != 0]
        if failed:
            raise SystemExit(f"training failed: {failed}; see {logs}")

    t0 = time.time()
    if args.phase in ("both", "1"):
        phase([("classifier", ["--stage", "classifier"]), ("base", ["--stage", "base"]),
               ("small", ["--stage", "small"])])
        print(f"judge, base, small: {time.time() - t0:.0f}s", flush=True)
    if args.phase in ("both", "2"):
        phase([(f"{stage}_seed{s}", ["--stage", stage, "--train-seed", str(s)])
               for stage in ("finetune", "edit") for s in SEEDS])
        print(f"fine-tunes: {time.time() - t0:.0f}s", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--stage", default="all", choices=["all", "classifier", "base", "small", "finetune", "edit"])
    parser.add_argument("--phase", default="both", choices=["both", "1", "2"],
                        help="with --stage all: 1 = judge, base and small; 2 = the fine-tunes (needs 1's base)")
    parser.add_argument("--seed", type=int, default=0, help="the data and initialisation seed of the whole run")
    parser.add_argument("--train-seed", type=int, default=0, help="a fine-tune's training seed (0 is shipped)")
    parser.add_argument("--classifier-steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=2048, help="batch of the base and the small control")
    parser.add_argument("--pool", type=int, default=400_000, help="fresh shapes the base and small draw from")
    parser.add_argument("--base-steps", type=int, default=2400)
    parser.add_argument("--base-lr", type=float, default=2e-3)
    parser.add_argument("--base-ema", type=float, default=0.999)
    parser.add_argument("--base-checkpoints", type=lambda s: tuple(int(x) for x in s.split(",") if x),
                        default=(100, 300, 1000), help="steps at which the base's EMA is also saved (the sweep)")
    parser.add_argument("--small-steps", type=int, default=1000)
    parser.add_argument("--finetune-images", type=int, default=64, help="images per class of the narrow set")
    parser.add_argument("--finetune-steps", type=int, default=1500)
    parser.add_argument("--finetune-batch", type=int, default=256)
    parser.add_argument("--finetune-lr", type=float, default=5e-4)
    parser.add_argument("--finetune-ema", type=float, default=0.999)
    parser.add_argument("--dropout", type=float, default=0.1, help="CFG dropout of the class fine-tune")
    parser.add_argument("--edit-images", type=int, default=4000, help="edits in the edit model's fixed set")
    parser.add_argument("--edit-steps", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="a few steps of every stage (smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.classifier_steps, args.batch, args.pool, args.base_steps, args.small_steps = 20, 16, 512, 20, 10
        args.base_checkpoints, args.finetune_steps, args.edit_steps, args.finetune_batch = (5, 10), 20, 20, 16
        args.finetune_images, args.edit_images = 4, 64
    args.out.mkdir(parents=True, exist_ok=True)
    if args.stage == "all":
        return run_all(args) if not args.quick else _sequential(args)
    return run_stage(args)


def _sequential(args) -> int:
    for stage, seeds in (("classifier", (0,)), ("base", (0,)), ("small", (0,)), ("finetune", SEEDS), ("edit", SEEDS)):
        for s in seeds:
            args.stage, args.train_seed = stage, s
            run_stage(args)
    return 0


def run_stage(args) -> int:
    tp = toy_module()
    import torch

    device = torch.device(args.device)
    torch.manual_seed(args.seed + args.train_seed)
    torch.backends.cudnn.benchmark = True
    log_file = (args.out / "train_log.txt").open("a")

    def log(msg: str) -> None:
        line = f"[{args.stage}{'' if args.stage not in ('finetune', 'edit') else f' seed {args.train_seed}'}] {msg}"
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()  # a run stopped by a time limit keeps its log

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    log(f"device {name}, torch {torch.__version__}")
    t0 = time.time()
    if args.stage == "classifier":
        train_classifier(tp, args, device, log)
    elif args.stage == "base":
        train_unconditional(tp, args, device, log, name="base", unet_config=tp.UNET_CONFIG, steps=args.base_steps,
                            lr=args.base_lr, checkpoints=args.base_checkpoints)
    elif args.stage == "small":
        train_unconditional(tp, args, device, log, name="small", unet_config=tp.SMALL_UNET_CONFIG,
                            steps=args.small_steps, lr=args.base_lr)
    elif args.stage == "finetune":
        train_finetune(tp, args, device, log)
    elif args.stage == "edit":
        train_edit(tp, args, device, log)
    log(f"done in {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
