#!/usr/bin/env python3
"""The PyTorch peer of diffusion-train for bench/train_bench.sh: the same networks (core/models/unet.cpp,
core/models/mlp_denoiser.cpp) and the same training step, trained with DistributedDataParallel over gloo.

    python -m torch.distributed.run --standalone --nproc_per_node W bench/train_peer.py \
        --config configs/fashion_mnist.ini --data data/fashion_mnist_train.h5 \
        --batch-size 64 --threads 1 --warmup-steps 10 --timed-steps 60

The model, diffusion and optimiser settings come from the same INI file diffusion-train reads
(with diffusion-train's defaults for keys the file leaves out). Rank 0 prints the parameter count
and the images/s measured over the timed steps only (global batch × timed steps / wall time).
`--count-params` prints the parameter count without starting a process group.

What matches diffusion-train, per step: each rank takes its B/W share of the global batch, draws
t ~ U{0..T-1}, eps ~ N(0, I) and the label drop (p-uncond, to the null label C) per sample,
random horizontal flips when the config asks, x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, MSE on
eps (mean over non-batch dims, mean over the batch), backward with the gradient averaged over ranks
(DDP's bucketed all-reduce, 25 MB buckets), clip by global norm, AdamW with the linear lr warmup,
then every EMA updated. What differs, on purpose: the random draws come from one torch generator
per rank instead of diffusion-train's keyed per-sample streams (the peer is for speed, not for
W-invariance), and the loss is read back only on log steps.
"""
import argparse
import configparser
import math
import os
import sys
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

# diffusion-train's defaults (trainer/train_options.cpp) for the keys a config may leave out.
DEFAULTS = {
    "random-flip": "false", "model": "unet", "base-channels": "128", "channel-mult": "1,2,2,2",
    "num-res-blocks": "2", "attention-resolutions": "16", "image-size": "32", "num-heads": "1",
    "num-groups": "32", "dropout": "0.1", "mlp-hidden": "256", "mlp-blocks": "4",
    "mlp-time-dim": "128", "timesteps": "1000", "schedule": "linear", "prediction": "eps",
    "learned-variance": "false", "class-cond": "false", "p-uncond": "0.1", "batch-size": "64",
    "lr": "2e-4", "warmup": "0", "weight-decay": "0", "grad-clip": "1", "ema-rates": "0.9999",
    "seed": "0", "log-every": "50",
}


def read_config(path):
    """The INI's keys, flattened over its sections (names are unique across groups)."""
    parser = configparser.ConfigParser(inline_comment_prefixes=("#", ";"))
    with open(path) as f:
        parser.read_file(f)
    flat = dict(DEFAULTS)
    for section in parser.sections():
        flat.update(parser[section])
    return flat


def as_bool(s):
    return s.strip().lower() in ("1", "true", "yes", "on")


def as_ints(s):
    if s.strip() == "none":  # attention-resolutions = none (the C++ options' spelling of "empty")
        return []
    return [int(v) for v in s.split(",") if v.strip()]


# ---- networks: python/diffusion_cluster/nets.py, module for module the C++ ones -------------

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from diffusion_cluster.nets import MlpDenoiser, UNet  # noqa: E402  (after the path above)


# ---- data and model from the config ----------------------------------------------------------


def load_data(path):
    """The whole set in memory: images → float [-1, 1] NCHW, or vectors [N, D]; labels or None."""
    # h5py and numpy are imported here, not at the top: bench/gpu_peer.py imports this module
    # on machines that may have neither.
    import h5py
    import numpy as np

    with h5py.File(path, "r") as f:
        labels = torch.from_numpy(f["labels"][:]) if "labels" in f else None
        num_classes = int(f.attrs["num_classes"]) if labels is not None else 0
        if "images" in f:
            images = f["images"][:]  # uint8 [N, H, W, C]
            x = torch.from_numpy(images.astype(np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2).contiguous()
        else:
            x = torch.from_numpy(f["x"][:].astype(np.float32))
    return x, labels, num_classes


def build_model(cfg, sample_shape, num_classes):
    if cfg["model"] == "unet":
        return UNet(sample_shape[0], int(cfg["base-channels"]), as_ints(cfg["channel-mult"]),
                    int(cfg["num-res-blocks"]), as_ints(cfg["attention-resolutions"]),
                    int(cfg["image-size"]), int(cfg["num-heads"]), int(cfg["num-groups"]),
                    float(cfg["dropout"]), num_classes)
    if cfg["model"] == "mlp":
        return MlpDenoiser(sample_shape[0], int(cfg["mlp-hidden"]), int(cfg["mlp-blocks"]),
                           int(cfg["mlp-time-dim"]), float(cfg["dropout"]), num_classes)
    sys.exit(f"train_peer: model '{cfg['model']}' is not unet or mlp")


def linear_sqrt_tables(T):
    """sqrt(abar_t), sqrt(1 - abar_t) of the linear schedule, 1e-4 … 0.02 scaled by 1000/T."""
    import numpy as np

    scale = 1000.0 / T
    betas = np.linspace(scale * 1e-4, scale * 0.02, T, dtype=np.float64)
    abar = np.cumprod(1.0 - betas)
    return torch.from_numpy(np.sqrt(abar)), torch.from_numpy(np.sqrt(1.0 - abar))


def optimiser_settings(cfg, params):
    """The config's optimiser as diffusion-train runs it: lr and warmup, AdamW, one EMA copy per
    rate, the clip norm, T and the label-drop probability."""
    lr, warmup = float(cfg["lr"]), int(cfg["warmup"])
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=float(cfg["weight-decay"]))
    ema_rates = [float(r) for r in cfg["ema-rates"].split(",")]
    emas = [[p.detach().clone() for p in params] for _ in ema_rates]
    clip = float(cfg["grad-clip"]) or math.inf
    return lr, warmup, opt, ema_rates, emas, clip, int(cfg["timesteps"]), float(cfg["p-uncond"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--batch-size", type=int, help="global batch (default: the config's)")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads per rank")
    ap.add_argument("--warmup-steps", type=int, default=10, help="steps run before the clock starts")
    ap.add_argument("--timed-steps", type=int, default=60)
    ap.add_argument("--bind-core", action="store_true",
                    help="pin local rank r to core r, as mpirun's default --bind-to core does")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                    help="bf16: the forward under torch.autocast(bfloat16), as a user would write it")
    ap.add_argument("--count-params", action="store_true", help="print the parameter count and exit")
    args = ap.parse_args()
    if args.bind_core:
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cores[int(os.environ.get("LOCAL_RANK", "0")) % len(cores)]})

    cfg = read_config(args.config)
    if cfg["schedule"] != "linear" or cfg["prediction"] != "eps" or as_bool(cfg["learned-variance"]):
        sys.exit("train_peer: only the linear schedule, eps prediction, fixed variance are written here")
    torch.set_num_threads(args.threads)
    x_all, labels_all, data_classes = load_data(args.data)
    class_cond = as_bool(cfg["class-cond"])
    num_classes = data_classes if class_cond else 0
    torch.manual_seed(int(cfg["seed"]))
    model = build_model(cfg, tuple(x_all.shape[1:]), num_classes)
    n_params = sum(p.numel() for p in model.parameters())
    if args.count_params:
        print(f"[peer] {cfg['model']} with {n_params} parameters")
        return

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    global_batch = args.batch_size or int(cfg["batch-size"])
    if global_batch % world:
        sys.exit(f"train_peer: batch {global_batch} not divisible by {world} ranks")
    local = global_batch // world
    log = print if rank == 0 else (lambda *a, **k: None)
    log(f"[peer] {cfg['model']} with {n_params} parameters on {world} rank(s), global batch "
        f"{global_batch} ({local} per rank), {args.threads} thread(s) per rank, "
        f"{'bound to a core' if args.bind_core else 'unbound'}, {args.precision}, torch {torch.__version__}")

    ddp = DDP(model)  # broadcasts rank 0's parameters; 25 MB gradient buckets
    params = list(model.parameters())
    lr, warmup, opt, ema_rates, emas, clip, T, p_uncond = optimiser_settings(cfg, params)
    flip = as_bool(cfg["random-flip"]) and x_all.dim() == 4
    sqrt_ab, sqrt_1mab = linear_sqrt_tables(T)
    view = (-1,) + (1,) * (x_all.dim() - 1)
    gen = torch.Generator().manual_seed(int(cfg["seed"]) * 1000 + rank)
    order = torch.randperm(x_all.shape[0], generator=torch.Generator().manual_seed(int(cfg["seed"])))
    log_every = int(cfg["log-every"])

    ddp.train()
    total = args.warmup_steps + args.timed_steps
    start = None
    for step in range(total):
        if step == args.warmup_steps:
            dist.barrier()
            start = time.perf_counter()
        # This rank's slice of the global batch (epochs wrap around the shuffled order).
        first = (step * global_batch + rank * local) % x_all.shape[0]
        idx = order[torch.arange(first, first + local) % x_all.shape[0]]
        x0 = x_all[idx]
        if flip:
            mask = torch.rand(local, generator=gen) < 0.5
            x0 = torch.where(mask[:, None, None, None], x0.flip(-1), x0)
        t = torch.randint(0, T, (local,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        y = None
        if num_classes > 0:
            drop = torch.rand(local, generator=gen) < p_uncond
            y = torch.where(drop, torch.full_like(labels_all[idx], num_classes), labels_all[idx])
        xt = (sqrt_ab[t].float().view(view) * x0 + sqrt_1mab[t].float().view(view) * eps)

        opt.zero_grad()
        with torch.autocast(xt.device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            out = ddp(xt, t, y)
        loss = (eps - out.float()).pow(2).flatten(1).mean(1).mean()  # MSE per sample, mean over the batch
        loss.backward()  # DDP averages gradients over ranks, bucket by bucket, during backward

        for g in opt.param_groups:
            g["lr"] = lr * (min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
        if torch.isfinite(grad_norm):
            opt.step()
            with torch.no_grad():
                for rate, shadow in zip(ema_rates, emas):
                    for s, p in zip(shadow, params):
                        s.mul_(rate).add_(p.detach(), alpha=1.0 - rate)
        if (step + 1) % log_every == 0:
            log(f"[peer] step {step + 1}/{total} loss {loss.item():.5f} grad-norm {float(grad_norm):.3f}")

    elapsed = time.perf_counter() - start
    images_per_s = global_batch * args.timed_steps / elapsed
    log(f"[peer] images/s {images_per_s:.1f} over {args.timed_steps} timed steps "
        f"({elapsed:.2f} s, after {args.warmup_steps} warm-up steps)")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
