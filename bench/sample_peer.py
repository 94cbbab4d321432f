"""The PyTorch peer of diffusion-sample's DDIM: a plain loop over diffusers' DDIMScheduler calling a
TorchScript network, and the network's forward time alone. Used by bench/sample_bench.sh.

  sample_peer.py export --config INI --out model.pt     the config's UNet (bench/train_peer.py's
                                                        port of core/models/unet.cpp) with fixed random
                                                        weights, traced to TorchScript
  sample_peer.py run --model model.pt --num-samples N --batch-size B --steps S --threads K
                                                        prints "ddim SAMPLES_PER_S" and
                                                        "forward SAMPLES_PER_S" (S forwards per sample)
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_peer  # noqa: E402

from diffusers import DDIMScheduler  # noqa: E402


def export(args):
    cfg = train_peer.read_config(args.config)
    size = int(cfg["image-size"])
    torch.manual_seed(0)
    net = train_peer.build_model(cfg, [1, size, size], args.num_classes).eval()
    # The zero-initialised output layers would make a constant network: small random weights.
    with torch.no_grad():
        for p in net.parameters():
            if not p.abs().sum():
                p.normal_(0, 0.02)
    params = sum(p.numel() for p in net.parameters())
    x = torch.randn(4, 1, size, size)
    t = torch.full((4,), 999, dtype=torch.long)
    y = torch.zeros(4, dtype=torch.long)
    with torch.no_grad():
        traced = torch.jit.trace(net, (x, t, y))
    traced.save(args.out)
    print(f"exported {args.out}: {params} parameters")


def run(args):
    torch.set_num_threads(args.threads)
    net = torch.jit.load(args.model).eval()
    shape = [int(s) for s in args.sample_shape.split(",")]
    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                          clip_sample=True, set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        net(torch.zeros([2] + shape), torch.full((2,), 999, dtype=torch.long), torch.zeros(2, dtype=torch.long))
        # DDIM: the same loop a diffusers pipeline runs, batch by batch.
        start = time.perf_counter()
        for first in range(0, args.num_samples, args.batch_size):
            b = min(args.batch_size, args.num_samples - first)
            y = torch.arange(first, first + b) % args.num_classes
            x = torch.randn([b] + shape, generator=gen)
            sched.set_timesteps(args.steps)
            for t in sched.timesteps:
                out = net(x, t.expand(b), y)
                x = sched.step(out, t, x, eta=0.0, use_clipped_model_output=True).prev_sample
            images = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
        ddim = args.num_samples / (time.perf_counter() - start)
        # The network alone: the same forward passes on fixed inputs.
        start = time.perf_counter()
        for first in range(0, args.num_samples, args.batch_size):
            b = min(args.batch_size, args.num_samples - first)
            x = torch.randn([b] + shape, generator=gen)
            y = torch.arange(first, first + b) % args.num_classes
            for t in sched.timesteps:
                net(x, t.expand(b), y)
        forward = args.num_samples / (time.perf_counter() - start)
    assert images.shape[0] > 0
    print(f"ddim {ddim:.3f}")
    print(f"forward {forward:.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export")
    e.add_argument("--config", required=True)
    e.add_argument("--num-classes", type=int, default=10)
    e.add_argument("--out", required=True)
    r = sub.add_parser("run")
    r.add_argument("--model", required=True)
    r.add_argument("--sample-shape", default="1,28,28")
    r.add_argument("--num-classes", type=int, default=10)
    r.add_argument("--num-samples", type=int, default=64)
    r.add_argument("--batch-size", type=int, default=64)
    r.add_argument("--steps", type=int, default=50)
    r.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    export(args) if args.cmd == "export" else run(args)


if __name__ == "__main__":
    main()
