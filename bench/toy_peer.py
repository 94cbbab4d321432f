"""The toy recipe question of issue #13 in plain PyTorch: the MLP of diffusion-train (python/diffusion_cluster/nets.py),
trained on a gmm-ring set of 8192 points (8 Gaussians, std 0.15, radius 2), sampled with DDIM-50 and -100
(leading spacing, 4000 samples), scored by the mean NLL under the true mixture and the share of samples
within 3 std of a mode (true data: 0.989). One process, one thread. Knobs: --lr --decay none|cosine --pred
eps|x0|v --steps --batch --arch base|nonorm|inmlp (no LayerNorm / a two-layer input). Results:
docs/results.md, "The toy recipe".

    .venv/bin/python bench/toy_peer.py --decay cosine --pred x0 --lr 3e-3
"""
import argparse, math, time, sys
import numpy as np, torch
sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__file__), "..", "python"))
from diffusion_cluster.nets import MlpDenoiser
p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=3000); p.add_argument("--batch", type=int, default=256)
p.add_argument("--lr", type=float, default=1e-3); p.add_argument("--warmup", type=int, default=100)
p.add_argument("--decay", default="none"); p.add_argument("--ema", type=float, default=0.995)
p.add_argument("--pred", default="eps"); p.add_argument("--n", type=int, default=8192)
p.add_argument("--hidden", type=int, default=256); p.add_argument("--blocks", type=int, default=3)
p.add_argument("--tdim", type=int, default=64); p.add_argument("--seed", type=int, default=0)
p.add_argument("--schedule", default="linear"); p.add_argument("--wd", type=float, default=0.0)
p.add_argument("--emawarm", type=int, default=0); p.add_argument("--arch", default="base")
a = p.parse_args()
torch.set_num_threads(1); torch.manual_seed(a.seed)
R, S, K = 2.0, 0.15, 8
ang = 2 * math.pi * np.arange(K) / K; mu = np.stack([R*np.cos(ang), R*np.sin(ang)], 1)
rng = np.random.default_rng(1)
def ring(n, rng):
    k = rng.integers(0, K, n); return (mu[k] + S * rng.standard_normal((n, 2))).astype(np.float32)
data = torch.from_numpy(ring(a.n, rng))
T = 1000
if a.schedule == "linear":
    betas = np.linspace(1e-4, 0.02, T)
    abar = np.cumprod(1 - betas)
else:
    s = 0.008; f = lambda t: np.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    abar = f(np.arange(1, T + 1)) / f(0); abar = np.clip(abar, 1e-12, 1)
    betas = 1 - abar / np.concatenate([[1.0], abar[:-1]]); betas = np.minimum(betas, 0.999); abar = np.cumprod(1 - betas)
sa = torch.tensor(np.sqrt(abar), dtype=torch.float32); sb = torch.tensor(np.sqrt(1 - abar), dtype=torch.float32)
net = MlpDenoiser(2, a.hidden, a.blocks, a.tdim, 0.0, 0)
if a.arch == "nonorm":
    for b in net.blocks: b.norm = torch.nn.Identity()
    net.norm_out = torch.nn.Identity()
elif a.arch == "inmlp":
    net.in_ = torch.nn.Sequential(torch.nn.Linear(2, a.hidden), torch.nn.SiLU(), torch.nn.Linear(a.hidden, a.hidden))
opt = torch.optim.AdamW(net.parameters(), lr=a.lr, weight_decay=a.wd)
ema = [q.detach().clone() for q in net.parameters()]
t0 = time.time()
for step in range(a.steps):
    lr = a.lr * min(1, (step + 1) / max(1, a.warmup))
    if a.decay == "cosine" and step >= a.warmup:
        lr = a.lr * 0.5 * (1 + math.cos(math.pi * (step - a.warmup) / (a.steps - a.warmup)))
    for g in opt.param_groups: g["lr"] = lr
    idx = torch.randint(0, a.n, (a.batch,)); x0 = data[idx]
    t = torch.randint(0, T, (a.batch,)); e = torch.randn_like(x0)
    xt = sa[t, None] * x0 + sb[t, None] * e
    out = net(xt, t)
    tgt = {"eps": e, "x0": x0, "v": sa[t, None] * e - sb[t, None] * x0}[a.pred]
    loss = ((out - tgt) ** 2).mean()
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0); opt.step()
    rate = a.ema if not a.emawarm else min(a.ema, (1 + step) / (10 + step))
    with torch.no_grad():
        for e_, q in zip(ema, net.parameters()): e_.mul_(rate).add_(q, alpha=1 - rate)
train_s = time.time() - t0
with torch.no_grad():
    for e_, q in zip(ema, net.parameters()): q.copy_(e_)
def x0eps(x, t):
    tt = torch.full((x.shape[0],), t, dtype=torch.long); o = net(x, tt)
    if a.pred == "eps": e = o; x0 = (x - sb[t] * e) / sa[t]
    elif a.pred == "x0": x0 = o; e = (x - sa[t] * x0) / sb[t]
    else: x0 = sa[t] * x - sb[t] * o; e = sb[t] * x + sa[t] * o
    return x0, e
def nll(x):
    d = ((x[:, None, :] - torch.tensor(mu, dtype=torch.float32)[None]) ** 2).sum(-1)
    lp = torch.logsumexp(-d / (2 * S * S), 1) - math.log(K) - math.log(2 * math.pi * S * S)
    within = (d.min(1).values.sqrt() <= 3 * S).float().mean()
    return -lp.mean().item(), within.item(), x.norm(dim=1).max().item()
g = torch.Generator().manual_seed(123)
with torch.no_grad():
    for name, nsteps in (("ddim50", 50), ("ddim100", 100)):
        ts = list(range(0, T, T // nsteps))[::-1]  # leading spacing
        x = torch.randn(4000, 2, generator=g)
        for i, t in enumerate(ts):
            x0, e = x0eps(x, t)
            tp = ts[i + 1] if i + 1 < len(ts) else None
            x = x0 if tp is None else sa[tp] * x0 + sb[tp] * e
        print(f"{name}: nll {nll(x)[0]:.3f} within3s {nll(x)[1]:.3f} maxr {nll(x)[2]:.1f}", end="; ")
print(f"train {train_s:.0f}s loss {loss.item():.3f}", vars(a))
