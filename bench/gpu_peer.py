#!/usr/bin/env python3
"""The PyTorch peer of diffusion-train on one GPU, for launch/gpu-check.sh: images/s of our networks
(python/diffusion_cluster/nets.py, built from the same INI values as bench/train_peer.py does)
trained in plain PyTorch, fp32 and bf16 autocast, eager and torch.compile; and the GPU's bf16
matmul rate. One JSON object per line on stdout (and in --out):

    python3 bench/gpu_peer.py --config configs/fashion_mnist.ini --channels 1 --device cuda
    python3 bench/gpu_peer.py --config configs/cifar10_ddpm.ini --channels 3 --device cuda --matmul
    python3 bench/gpu_peer.py --config configs/fashion_mnist.ini --channels 1 --device cpu --quick

  {"kind": "train", "config": "fashion_mnist", "precision": "bf16", "mode": "compile",
   "images_per_s": ..., "compile_s": ..., "params": ..., "batch": 64, ...}
  {"kind": "matmul", "dtype": "bf16", "n": 8192, "tflops": ...}

The step is bench/train_peer.py's on one device without DDP: t ~ U{0..T-1}, eps ~ N(0, I),
label drop to the null label, random flips when the config asks, x_t = sqrt(abar_t) x0 +
sqrt(1 - abar_t) eps, MSE on eps, backward, clip by global norm, AdamW with the linear warm-up,
skip of non-finite steps, EMA. The data are random images already on the device (the input
pipeline is not what is measured; diffusion-train reads its HDF5 file). The batch is the
config's (--batch-size overrides).

Timing: WARMUP untimed steps, then TIMED steps between two device synchronisations. With
torch.compile the first step compiles; its wall time minus one timed step is `compile_s`, reported
apart and not in images/s. The matmul rate is timed with CUDA events (2 n^3 flops per product).
`--quick` (for testing on CPU) takes a batch of 4, 1 warm-up and 2 timed steps, a 512 matmul.
"""
import argparse
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_peer import as_bool, build_model, optimiser_settings, read_config  # noqa: E402  (after the path above)


def linear_sqrt_tables(T, device):
    """sqrt(abar_t), sqrt(1 - abar_t) of the linear schedule (train_peer.linear_sqrt_tables, in torch)."""
    scale = 1000.0 / T
    betas = torch.linspace(scale * 1e-4, scale * 0.02, T, dtype=torch.float64)
    abar = torch.cumprod(1.0 - betas, dim=0)
    return abar.sqrt().float().to(device), (1.0 - abar).sqrt().float().to(device)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_train(cfg, name, channels, num_classes, precision, mode, batch, warmup, timed, device, seed):
    """One (precision, mode) measurement; returns the JSON record."""
    if cfg["model"] != "unet":
        sys.exit(f"gpu_peer: {name}: only the UNet configs are measured here (model = {cfg['model']})")
    if cfg["schedule"] != "linear" or cfg["prediction"] != "eps" or as_bool(cfg["learned-variance"]):
        sys.exit("gpu_peer: only the linear schedule, eps prediction, fixed variance are written here")
    size = int(cfg["image-size"])
    classes = num_classes if as_bool(cfg["class-cond"]) else 0
    torch.manual_seed(seed)
    model = build_model(cfg, (channels, size, size), classes).to(device)
    params = list(model.parameters())
    n_params = sum(p.numel() for p in params)
    lr, warm_lr, opt, ema_rates, emas, clip, T, p_uncond = optimiser_settings(cfg, params)
    flip = as_bool(cfg["random-flip"])
    sqrt_ab, sqrt_1mab = linear_sqrt_tables(T, device)

    # A pool of random images and labels on the device, indexed per step.
    gen = torch.Generator(device=device).manual_seed(seed)
    pool = max(4 * batch, 256)
    x_pool = torch.rand(pool, channels, size, size, generator=gen, device=device) * 2 - 1  # [N, C, H, W]
    y_pool = torch.randint(0, max(classes, 1), (pool,), generator=gen, device=device)  # [N]

    net = torch.compile(model) if mode == "compile" else model
    def amp():
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    model.train()

    def step(i):
        idx = (torch.arange(batch, device=device) + i * batch) % pool
        x0 = x_pool[idx]  # [B, C, H, W]
        if flip:
            mask = torch.rand(batch, generator=gen, device=device) < 0.5
            x0 = torch.where(mask[:, None, None, None], x0.flip(-1), x0)
        t = torch.randint(0, T, (batch,), generator=gen, device=device)
        eps = torch.randn(x0.shape, generator=gen, device=device)
        y = None
        if classes > 0:
            drop = torch.rand(batch, generator=gen, device=device) < p_uncond
            y = torch.where(drop, torch.full_like(y_pool[idx], classes), y_pool[idx])
        xt = sqrt_ab[t].view(-1, 1, 1, 1) * x0 + sqrt_1mab[t].view(-1, 1, 1, 1) * eps
        opt.zero_grad(set_to_none=True)
        with amp():
            out = net(xt, t, y)
            loss = (eps - out.float()).pow(2).flatten(1).mean(1).mean()
        loss.backward()
        for g in opt.param_groups:
            g["lr"] = lr * (min(1.0, (i + 1) / warm_lr) if warm_lr > 0 else 1.0)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
        if torch.isfinite(grad_norm):  # a host sync per step, as diffusion-train's skip check
            opt.step()
            with torch.no_grad():
                for rate, shadow in zip(ema_rates, emas):
                    torch._foreach_lerp_(shadow, [p.detach() for p in params], 1.0 - rate)
        return loss

    synchronize(device)
    first_start = time.perf_counter()
    step(0)
    synchronize(device)
    first_s = time.perf_counter() - first_start
    for i in range(1, warmup):
        step(i)
    synchronize(device)
    start = time.perf_counter()
    for i in range(warmup, warmup + timed):
        loss = step(i)
    synchronize(device)
    elapsed = time.perf_counter() - start
    final_loss = float(loss.detach())
    record = {
        "kind": "train", "config": name, "precision": precision, "mode": mode,
        "images_per_s": round(batch * timed / elapsed, 2), "step_ms": round(1000 * elapsed / timed, 3),
        "compile_s": round(max(0.0, first_s - elapsed / timed), 2) if mode == "compile" else None,
        "first_step_s": round(first_s, 3), "params": n_params, "batch": batch,
        "warmup_steps": warmup, "timed_steps": timed, "final_loss": round(final_loss, 5),
        "loss_finite": math.isfinite(final_loss),
    }
    del net, model, opt, emas
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return record


def bench_matmul(n, device, repeats):
    """bf16 [n, n] @ [n, n]: TFLOP/s over `repeats` products after 3 untimed ones."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        c = a @ b
    if device.type == "cuda":
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        for _ in range(repeats):
            c = a @ b
        end.record()
        end.synchronize()
        seconds = begin.elapsed_time(end) / 1000.0
    else:
        start = time.perf_counter()
        for _ in range(repeats):
            c = a @ b
        seconds = time.perf_counter() - start
    del c
    return {"kind": "matmul", "dtype": "bf16", "n": n, "repeats": repeats,
            "seconds": round(seconds, 4), "tflops": round(2.0 * n ** 3 * repeats / seconds / 1e12, 3)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="training INI (model, diffusion, optimiser keys)")
    ap.add_argument("--channels", type=int, required=True, help="image channels of the config's data (1 or 3)")
    ap.add_argument("--num-classes", type=int, default=10, help="classes when the config is class-conditional")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--modes", default="eager,compile")
    ap.add_argument("--batch-size", type=int, help="default: the config's")
    ap.add_argument("--warmup-steps", type=int, default=10)
    ap.add_argument("--timed-steps", type=int, default=50)
    ap.add_argument("--matmul", action="store_true", help="also measure the bf16 matmul rate")
    ap.add_argument("--matmul-size", type=int, default=8192)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, to test the script on CPU")
    ap.add_argument("--out", help="also append the JSON lines to this file")
    args = ap.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_peer: --device cuda but torch.cuda.is_available() is False "
                 f"(torch {torch.__version__}, CUDA {torch.version.cuda})")
    if device.type == "cpu":
        torch.set_num_threads(min(torch.get_num_threads(), 2))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32, as in diffusion-train
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    cfg = read_config(args.config)
    name = os.path.splitext(os.path.basename(args.config))[0]
    batch = args.batch_size or int(cfg["batch-size"])
    warmup, timed, mm_n, mm_repeats = args.warmup_steps, args.timed_steps, args.matmul_size, 20
    if args.quick:
        batch, warmup, timed, mm_n, mm_repeats = min(batch, 4), 1, 2, 512, 2
    warmup = max(warmup, 1)  # the first step is the compile step

    out = open(args.out, "a") if args.out else None
    context = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "torch": torch.__version__}

    def emit(record):
        line = json.dumps({**record, **context})
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()

    # The quick measurements first, torch.compile last: a run cut short by its time limit still
    # has the matmul rate and the eager numbers.
    if args.matmul:
        emit(bench_matmul(mm_n, device, mm_repeats))
    failed = False
    for mode in args.modes.split(","):
        for precision in args.precisions.split(","):
            try:
                emit(bench_train(cfg, name, args.channels, args.num_classes, precision, mode, batch,
                                 warmup, timed, device, seed=int(cfg["seed"])))
            except Exception as e:  # one failed variant (e.g. no compiler for inductor) is reported, the rest run
                failed = True
                emit({"kind": "train", "config": name, "precision": precision, "mode": mode,
                      "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
