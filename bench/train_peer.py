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

import h5py
import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
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
    return [int(v) for v in s.split(",") if v.strip()]


# ---- networks: module for module and in registration order the same as the C++ ones ---------


def timestep_embedding(t, dim):
    """Sinusoidal embedding, cosines then sines, frequencies 10000^(-i/half) (core/models/denoiser.cpp)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float().unsqueeze(1) * freqs.unsqueeze(0)  # [B, half]
    emb = torch.cat([args.cos(), args.sin()], dim=1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros(t.shape[0], 1)], dim=1)
    return emb


def zero_init(module):
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()


class ResBlock(nn.Module):
    def __init__(self, cin, cout, emb_dim, dropout, groups):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        zero_init(self.conv2)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, emb):  # [B, C, H, W], [B, E]
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb_proj(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (self.skip(x) if self.skip is not None else x) + h


class AttentionBlock(nn.Module):
    def __init__(self, channels, num_heads, groups):
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        zero_init(self.proj)

    def forward(self, x):
        B, C, H, W = x.shape
        d = C // self.num_heads
        qkv = self.qkv(self.norm(x)).reshape(B, 3, self.num_heads, d, H * W)
        q, k, v = (qkv.select(1, i).transpose(-1, -2) for i in range(3))  # [B, heads, HW, d]
        a = F.scaled_dot_product_attention(q, k, v)
        a = a.transpose(-1, -2).reshape(B, C, H, W)
        return x + self.proj(a)


class UNet(nn.Module):
    def __init__(self, in_channels, base, mult, num_res_blocks, attention_resolutions, image_size,
                 num_heads, groups, dropout, num_classes):
        super().__init__()
        ch, emb_dim = base, 4 * base
        self.base = base
        self.num_classes = num_classes
        factors = [image_size // r for r in attention_resolutions]
        self.time_mlp = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_embedding = nn.Embedding(num_classes + 1, emb_dim) if num_classes > 0 else None
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)

        # Stages are (kind, module, attention); modules are registered under the C++ names.
        self.down, self.up = [], []
        skip_channels, cur, ds = [ch], ch, 1
        for level, m in enumerate(mult):
            for _ in range(num_res_blocks):
                name = f"down{len(self.down)}"
                res = self._add(name + "_res", ResBlock(cur, m * ch, emb_dim, dropout, groups))
                attn = (self._add(name + "_attn", AttentionBlock(m * ch, num_heads, groups))
                        if ds in factors else None)
                self.down.append(("res", res, attn))
                cur = m * ch
                skip_channels.append(cur)
            if level + 1 < len(mult):
                conv = self._add(f"down{len(self.down)}_downsample", nn.Conv2d(cur, cur, 3, stride=2, padding=1))
                self.down.append(("resample", conv, None))
                skip_channels.append(cur)
                ds *= 2
        self.mid_res1 = ResBlock(cur, cur, emb_dim, dropout, groups)
        self.mid_attn = AttentionBlock(cur, num_heads, groups)
        self.mid_res2 = ResBlock(cur, cur, emb_dim, dropout, groups)
        for level in reversed(range(len(mult))):
            for _ in range(num_res_blocks + 1):
                skip = skip_channels.pop()
                name = f"up{len(self.up)}"
                out = mult[level] * ch
                res = self._add(name + "_res", ResBlock(cur + skip, out, emb_dim, dropout, groups))
                attn = (self._add(name + "_attn", AttentionBlock(out, num_heads, groups))
                        if ds in factors else None)
                self.up.append(("res", res, attn))
                cur = out
            if level > 0:
                conv = self._add(f"up{len(self.up)}_upsample", nn.Conv2d(cur, cur, 3, padding=1))
                self.up.append(("resample", conv, None))
                ds //= 2
        self.norm_out = nn.GroupNorm(groups, cur)
        self.conv_out = nn.Conv2d(cur, in_channels, 3, padding=1)
        zero_init(self.conv_out)

    def _add(self, name, module):
        self.add_module(name, module)
        return module

    def forward(self, x, t, y):
        emb = self.time_mlp(timestep_embedding(t, self.base))  # [B, 4ch]
        if self.class_embedding is not None:
            emb = emb + self.class_embedding(y)
        h = self.conv_in(x)
        skips = [h]
        for kind, module, attn in self.down:
            h = module(h) if kind == "resample" else module(h, emb)
            if attn is not None:
                h = attn(h)
            skips.append(h)
        h = self.mid_res2(self.mid_attn(self.mid_res1(h, emb)), emb)
        for kind, module, attn in self.up:
            if kind == "resample":
                # Upsample to the next skip's size, so 28 → 14 → 7 → 4 comes back exactly.
                h = module(F.interpolate(h, size=skips[-1].shape[-2:], mode="nearest"))
            else:
                h = module(torch.cat([h, skips.pop()], dim=1), emb)
                if attn is not None:
                    h = attn(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class MlpBlock(nn.Module):
    def __init__(self, hidden, emb_dim, dropout):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.emb_proj = nn.Linear(emb_dim, hidden)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, hidden)
        zero_init(self.fc2)

    def forward(self, h, emb):
        z = self.fc1(F.silu(self.norm(h))) + self.emb_proj(F.silu(emb))
        return h + self.fc2(self.dropout(F.silu(z)))


class MlpDenoiser(nn.Module):
    def __init__(self, data_dim, hidden, num_blocks, time_dim, dropout, num_classes):
        super().__init__()
        self.time_dim = time_dim
        self.in_ = nn.Linear(data_dim, hidden)
        self.time_fc1 = nn.Linear(time_dim, hidden)
        self.time_fc2 = nn.Linear(hidden, hidden)
        self.class_embedding = nn.Embedding(num_classes + 1, hidden) if num_classes > 0 else None
        self.blocks = nn.ModuleList(MlpBlock(hidden, hidden, dropout) for _ in range(num_blocks))
        self.norm_out = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, data_dim)

    def forward(self, x, t, y):
        emb = self.time_fc2(F.silu(self.time_fc1(timestep_embedding(t, self.time_dim))))
        if self.class_embedding is not None:
            emb = emb + self.class_embedding(y)
        h = self.in_(x)  # [B, hidden]
        for block in self.blocks:
            h = block(h, emb)
        return self.out(F.silu(self.norm_out(h)))


# ---- data and model from the config ----------------------------------------------------------


def load_data(path):
    """The whole set in memory: images → float [-1, 1] NCHW, or vectors [N, D]; labels or None."""
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
    scale = 1000.0 / T
    betas = np.linspace(scale * 1e-4, scale * 0.02, T, dtype=np.float64)
    abar = np.cumprod(1.0 - betas)
    return torch.from_numpy(np.sqrt(abar)), torch.from_numpy(np.sqrt(1.0 - abar))


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
        f"{'bound to a core' if args.bind_core else 'unbound'}, torch {torch.__version__}")

    ddp = DDP(model)  # broadcasts rank 0's parameters; 25 MB gradient buckets
    params = list(model.parameters())
    lr, warmup = float(cfg["lr"]), int(cfg["warmup"])
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=float(cfg["weight-decay"]))
    ema_rates = [float(r) for r in cfg["ema-rates"].split(",")]
    emas = [[p.detach().clone() for p in params] for _ in ema_rates]
    clip = float(cfg["grad-clip"]) or math.inf
    T = int(cfg["timesteps"])
    p_uncond = float(cfg["p-uncond"])
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
        out = ddp(xt, t, y)
        loss = (eps - out).pow(2).flatten(1).mean(1).mean()  # MSE per sample, mean over the batch
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
