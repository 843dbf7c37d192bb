"""Train the toy pair (py/toy_pair.py): a classifier, an unconditional base, and CFG-dropout fine-tunes.

    python3 tests/train_toy_pair.py --device cuda --out py/toy_pair          # on an H100: 7 minutes
    python3 tests/host.py python tests/train_toy_pair.py --quick --out /tmp/toy   # CPU smoke run

The models are ComfyUI's own ``UNetModel`` (py/toy_pair.py's config) trained with the usual ε-prediction
loss on ComfyUI's own noise schedule, so ``load_toy_model`` loads them like any diffusion model. Data is
drawn procedurally (``draw_shapes``), so nothing is downloaded:

- classifier: held-out judge of sample quality (Fréchet distance on its features) and condition accuracy;
- base: unconditional (always the ∅ context), on fresh images every step, many steps — the prior;
- fine-tune: from the base's weights, class-conditional with CFG dropout (``--dropout`` of its samples see
  ∅), for fewer steps and images than the base: fresh images (the default) or a fixed set of N per class.
  Several fine-tunes can be trained in one run (``--finetune name:images:steps:lr`` repeated) to compare
  settings; the default trains the shipped one, ``finetune:0:1000:1e-3``.

Weights are saved as fp16 safetensors of the EMA parameters.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support.comfy_env import import_comfy, pack_module  # noqa: E402


def toy_module():
    """py/toy_pair.py, imported the way ComfyUI imports the pack (a package), after ComfyUI itself."""
    import_comfy()
    return pack_module("py.toy_pair")


def _ema_update(ema, model, decay: float) -> None:
    import torch

    with torch.no_grad():
        torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - decay)


def _save(module, path: Path) -> None:
    import safetensors.torch

    path.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file({k: v.detach().half().contiguous().cpu() for k, v in module.state_dict().items()},
                                str(path))


def train_classifier(tp, device, steps: int, batch: int, seed: int, log) -> object:
    """Train the judge on fresh shapes; report its accuracy on a held-out draw."""
    import torch

    gen = torch.Generator(device=device).manual_seed(seed)
    clf = tp.ToyClassifier().to(device)
    opt = torch.optim.AdamW(clf.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    for step in range(steps):
        labels = torch.randint(0, len(tp.CLASSES), (batch,), device=device, generator=gen)
        loss = torch.nn.functional.cross_entropy(clf(tp.draw_shapes(labels, gen)), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % max(1, steps // 5) == 0:
            log(f"classifier step {step} loss {loss.item():.4f}")
    clf.eval()
    test_gen = torch.Generator(device=device).manual_seed(seed + 1)
    labels = torch.arange(2000, device=device) % len(tp.CLASSES)
    with torch.no_grad():
        acc = (clf(tp.draw_shapes(labels, test_gen)).argmax(1) == labels).float().mean().item()
    log(f"classifier held-out accuracy {acc:.4f}")
    return clf.cpu()


def train_diffusion(tp, unet, device, steps: int, batch: int, lr: float, seed: int, log, *,
                    data=None, dropout: float | None = None, ema_decay: float = 0.999, name: str = "base",
                    amp: bool = True):
    """ε-prediction training on ComfyUI's schedule. ``data`` = (images, labels) for a fixed data set,
    else fresh shapes each step; ``dropout`` None = unconditional (∅ always), else CFG dropout rate."""
    import torch

    gen = torch.Generator(device=device).manual_seed(seed)
    acp = tp.alphas_cumprod().to(device)
    empty = len(tp.CLASSES)
    ema = copy.deepcopy(unet).requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0)
    warmup = min(300, steps // 10 + 1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16) if device.type == "cuda" and amp else None
    t0 = time.time()
    for step in range(steps):
        if data is None:
            labels = torch.randint(0, empty, (batch,), device=device, generator=gen)
            x0 = tp.draw_shapes(labels, gen)
        else:
            idx = torch.randint(0, data[0].shape[0], (batch,), device=device, generator=gen)
            x0, labels = data[0][idx], data[1][idx]
        if dropout is None:
            cond = torch.full_like(labels, empty)
        else:
            drop = torch.rand(batch, device=device, generator=gen) < dropout
            cond = torch.where(drop, torch.full_like(labels, empty), labels)
        t = torch.randint(0, acp.shape[0], (batch,), device=device, generator=gen)
        noise = torch.randn(x0.shape, device=device, generator=gen)
        a = acp[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        if autocast is not None:
            with autocast:
                pred = unet(x_t, t.float(), context=tp.class_context(cond))
        else:
            pred = unet(x_t, t.float(), context=tp.class_context(cond))
        loss = torch.nn.functional.mse_loss(pred.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        _ema_update(ema, unet, ema_decay if step > warmup else 0.0)
        if step % max(1, steps // 10) == 0 or step == steps - 1:
            log(f"{name} step {step} loss {loss.item():.4f} ({time.time() - t0:.1f}s)")
    return ema


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=2048,
                        help="base batch; large because a step of this small UNet is bound by Python/launch "
                             "overhead on a GPU (measured on an H100: ~80 ms/step at batch 256 with the GPU busy 12 ms of it)")
    parser.add_argument("--finetune-batch", type=int, default=512)
    parser.add_argument("--classifier-steps", type=int, default=1500)
    parser.add_argument("--base-steps", type=int, default=3000)
    parser.add_argument("--base-lr", type=float, default=1e-3)
    parser.add_argument("--dropout", type=float, default=0.1, help="CFG dropout of the fine-tunes")
    parser.add_argument("--finetune", action="append", default=None, metavar="NAME:IMAGES_PER_CLASS:STEPS:LR",
                        help="a fine-tune to train from the base (repeatable); IMAGES_PER_CLASS 0 = fresh "
                             "images every step. Default: finetune:0:1000:1e-3")
    parser.add_argument("--base", type=Path, help="fine-tune these base weights instead of training a base "
                                                  "(the classifier is then not retrained either)")
    parser.add_argument("--quick", action="store_true", help="a few steps of everything (smoke test)")
    args = parser.parse_args()

    tp = toy_module()
    import torch

    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    if args.quick:
        args.classifier_steps, args.base_steps, args.batch, args.finetune_batch = 20, 20, 16, 16
    finetunes = args.finetune or ["finetune:0:1000:1e-3"]
    log_lines: list[str] = []

    args.out.mkdir(parents=True, exist_ok=True)
    log_file = (args.out / "train_log.txt").open("a")

    def log(msg: str) -> None:
        print(msg, flush=True)
        log_file.write(msg + "\n")
        log_file.flush()  # a run stopped by a time limit keeps its log
        log_lines.append(msg)

    log(f"device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, torch {torch.__version__}")
    if not args.base:
        _save(train_classifier(tp, device, args.classifier_steps, 512, args.seed + 100, log),
              args.out / tp.CLASSIFIER_FILE)

    base = tp.new_unet(device)
    if args.base:
        import safetensors.torch

        base.load_state_dict({k: v.float() for k, v in safetensors.torch.load_file(str(args.base)).items()})
    else:
        base = train_diffusion(tp, base, device, args.base_steps, args.batch, args.base_lr, args.seed + 200, log)
        _save(base, args.out / tp.MODEL_FILES["base"])

    for i, spec in enumerate(finetunes):
        name, per_class, steps, lr = spec.split(":")
        per_class, steps, lr = int(per_class), int(steps), float(lr)
        if args.quick:
            steps = 20
        data = None
        if per_class > 0:
            gen = torch.Generator(device=device).manual_seed(args.seed + 300)
            labels = torch.arange(per_class * len(tp.CLASSES), device=device) % len(tp.CLASSES)
            data = (tp.draw_shapes(labels, gen), labels)
        unet = copy.deepcopy(base).requires_grad_(True)
        ft = train_diffusion(tp, unet, device, steps, args.finetune_batch, lr, args.seed + 400 + i, log,
                             data=data, dropout=args.dropout, name=name)
        _save(ft, args.out / f"toy_{name}.safetensors")
    (args.out / "train_log.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                          "finetunes": finetunes, "log": log_lines}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
