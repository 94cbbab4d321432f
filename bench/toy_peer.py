"""The toy recipe question of issue #13 in plain PyTorch: the MLP of diffusion-train (python/diffusion_cluster/nets.py),
trained on a gmm-ring set of 8192 points (8 Gaussians, std 0.15, radius 2), sampled with DDIM-50
(leading spacing, 4000 samples), scored by the mean NLL under the true mixture, the share of samples
within 3 std of a mode (true data: 0.989), the largest radius (DDIM outliers) and the median distance
to the nearest mode (true data: 0.18). One process, one thread. Several runs in one process (torch's
import is slow): each --run "ARGS" is one run; without --run the arguments are one run, e.g.

    .venv/bin/python bench/toy_peer.py --pred v --decay cosine --lr 2e-2 --batch 512   # configs/toy_2d.ini
    .venv/bin/python bench/toy_peer.py --run "--pred x0 --decay cosine --lr 3e-3" --run "--pred eps"

Knobs: --lr --lr-min --decay none|cosine --warmup --steps --batch --pred eps|x0|v --schedule linear|cosine
--ema --emawarm --weight none|minsnrG --hidden --blocks --tdim --arch base|nonorm|inmlp|fourier (no
LayerNorm / a two-layer input / random Fourier features of x, which diffusion-train lacks). --oracle 1
samples with the true mixture's posterior mean instead of a network: the sampler's own floor
(DDIM-50: NLL 1.03, 0.982 within 3 std). Results: docs/results.md, "The toy recipe".
"""
import argparse, math, os, shlex, sys, time
import numpy as np, torch
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from diffusion_cluster.nets import MlpDenoiser

def parser():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=3000); p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3); p.add_argument("--lr-min", type=float, default=0.0)
    p.add_argument("--warmup", type=int, default=100); p.add_argument("--decay", default="none")  # none|cosine
    p.add_argument("--ema", type=float, default=0.995); p.add_argument("--emawarm", type=int, default=0)
    p.add_argument("--pred", default="eps"); p.add_argument("--n", type=int, default=8192)
    p.add_argument("--hidden", type=int, default=256); p.add_argument("--blocks", type=int, default=3)
    p.add_argument("--tdim", type=int, default=64); p.add_argument("--seed", type=int, default=0)
    p.add_argument("--schedule", default="linear"); p.add_argument("--wd", type=float, default=0.0)
    p.add_argument("--arch", default="base")  # base|nonorm|inmlp|fourier
    p.add_argument("--weight", default="none")  # none | minsnr5 (min-SNR-5 in the prediction's own units)
    p.add_argument("--oracle", type=int, default=0); p.add_argument("--samples", type=int, default=4000)
    return p

R, S, K, T = 2.0, 0.15, 8, 1000
ang = 2 * math.pi * np.arange(K) / K; mu = np.stack([R*np.cos(ang), R*np.sin(ang)], 1)
MU = torch.tensor(mu, dtype=torch.float32)

def schedule(kind):
    if kind == "linear":
        abar = np.cumprod(1 - np.linspace(1e-4, 0.02, T))
    else:
        s = 0.008; f = lambda t: np.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
        ab = f(np.arange(1, T + 1)) / f(0); betas = 1 - ab / np.concatenate([[1.0], ab[:-1]])
        abar = np.cumprod(1 - np.minimum(betas, 0.999))
    return torch.tensor(np.sqrt(abar), dtype=torch.float32), torch.tensor(np.sqrt(1 - abar), dtype=torch.float32)

def score(x):
    d = ((x[:, None, :] - MU[None]) ** 2).sum(-1)
    lp = torch.logsumexp(-d / (2 * S * S), 1) - math.log(K) - math.log(2 * math.pi * S * S)
    return -lp.mean().item(), (d.min(1).values.sqrt() <= 3 * S).float().mean().item(), x.norm(dim=1).max().item()

def run(a):
    torch.manual_seed(a.seed)
    data = torch.from_numpy((lambda r: (mu[r.integers(0, K, a.n)] + S * r.standard_normal((a.n, 2))).astype(np.float32))(np.random.default_rng(1)))
    sa, sb = schedule(a.schedule)
    net = MlpDenoiser(2, a.hidden, a.blocks, a.tdim, 0.0, 0)
    if a.arch == "nonorm":
        for b in net.blocks: b.norm = torch.nn.Identity()
        net.norm_out = torch.nn.Identity()
    elif a.arch == "inmlp":
        net.in_ = torch.nn.Sequential(torch.nn.Linear(2, a.hidden), torch.nn.SiLU(), torch.nn.Linear(a.hidden, a.hidden))
    elif a.arch == "fourier":  # random Fourier features of x (not in diffusion-train; a probe of spectral bias)
        B = torch.randn(2, a.hidden // 2) * 3.0
        lin = torch.nn.Linear(a.hidden, a.hidden)
        net.in_ = type("FF", (torch.nn.Module,), {"forward": lambda self, x: lin(torch.cat([(x @ B).sin(), (x @ B).cos()], 1))})()
        net.in_.lin = lin
    opt = torch.optim.AdamW(net.parameters(), lr=a.lr, weight_decay=a.wd)
    ema = [q.detach().clone() for q in net.parameters()]
    t0 = time.time(); loss = torch.tensor(float("nan"))
    for step in range(a.steps * (not a.oracle)):
        lr = a.lr * min(1, (step + 1) / max(1, a.warmup))
        if a.decay == "cosine" and step >= a.warmup:
            lr = a.lr_min + (a.lr - a.lr_min) * 0.5 * (1 + math.cos(math.pi * (step - a.warmup) / (a.steps - a.warmup)))
        for g in opt.param_groups: g["lr"] = lr
        x0 = data[torch.randint(0, a.n, (a.batch,))]
        t = torch.randint(0, T, (a.batch,)); e = torch.randn_like(x0)
        xt = sa[t, None] * x0 + sb[t, None] * e
        out = net(xt, t)
        tgt = {"eps": e, "x0": x0, "v": sa[t, None] * e - sb[t, None] * x0}[a.pred]
        per = ((out - tgt) ** 2).mean(1)
        if a.weight.startswith("minsnr"):
            snr = (sa[t] / sb[t]) ** 2; g_ = float(a.weight[6:])
            per = per * {"eps": torch.clamp(snr, max=g_) / snr, "x0": torch.clamp(snr, max=g_), "v": torch.clamp(snr, max=g_) / (snr + 1)}[a.pred]
        loss = per.mean()
        opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0); opt.step()
        rate = a.ema if not a.emawarm else min(a.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for e_, q in zip(ema, net.parameters()): e_.mul_(rate).add_(q, alpha=1 - rate)
    train_s = time.time() - t0
    with torch.no_grad():
        for e_, q in zip(ema, net.parameters()): q.copy_(e_)
    def x0eps(x, t):
        if a.oracle:  # the true mixture's posterior mean E[x0 | x_t]
            var = sa[t]**2 * S*S + sb[t]**2
            w = torch.softmax(-((x[:, None, :] - sa[t] * MU[None]) ** 2).sum(-1) / (2 * var), 1)
            x0 = (w[:, :, None] * (MU[None] + (sa[t] * S * S / var) * (x[:, None, :] - sa[t] * MU[None]))).sum(1)
            return x0, (x - sa[t] * x0) / sb[t]
        o = net(x, torch.full((x.shape[0],), t, dtype=torch.long))
        if a.pred == "eps": return (x - sb[t] * o) / sa[t], o
        if a.pred == "x0": return o, (x - sa[t] * o) / sb[t]
        return sa[t] * x - sb[t] * o, sb[t] * x + sa[t] * o
    g = torch.Generator().manual_seed(123)
    res = {}
    with torch.no_grad():
        ts = list(range(0, T, T // 50))[::-1]  # DDIM-50, leading spacing
        x = torch.randn(a.samples, 2, generator=g)
        for i, t in enumerate(ts):
            x0, e = x0eps(x, t)
            x = x0 if i + 1 == len(ts) else sa[ts[i + 1]] * x0 + sb[ts[i + 1]] * e
        nll, within, maxr = score(x)
        dd = ((x[:, None, :] - MU[None]) ** 2).sum(-1).min(1).values.sqrt()
        med = dd.median().item()
    return nll, within, maxr, med, train_s, loss.item()

if __name__ == "__main__":
    torch.set_num_threads(1)
    top = argparse.ArgumentParser(); top.add_argument("--run", action="append", default=[])
    ta, rest = top.parse_known_args()
    for spec in (ta.run or [" ".join(shlex.quote(r) for r in rest)]):
        a = parser().parse_args(shlex.split(spec))
        nll, within, maxr, med, train_s, loss = run(a)
        print(f"DDIM-50 nll {nll:.3f} within3s {within:.3f} maxr {maxr:.1f} median-dist {med:.3f} | train {train_s:.0f}s loss {loss:.3f} | {spec}", flush=True)
