"""TorchScript models and input files for the sampler's CLI tests (deterministic, no training).

  gauss OUT.pt            exact eps of 2-D Gaussian data N(MU, COV) under the linear T=1000
                          schedule (docs/math.md): forward(x, t), float64 inside
  conv OUT.pt             a tiny class-conditional conv net for [1, 8, 8] images, 3 classes,
                          fixed random weights: forward(x, t, y)
  mlp OUT.pt D            a fixed random MLP for vectors [D]: forward(x, t)
  near-gauss OUT.pt D     exact eps of N(0, I) data plus a small random MLP: forward(x, t)
  gauss-data OUT.h5 N     N samples of the Gaussian as a dataset file (`x` float32 [N, 2])
  images OUT.h5 N         N random uint8 [8, 8, 1] images with labels 0..2 (dataset format)
  latents OUT.h5 N SHAPE  N standard normal latents `x` float32 [N, SHAPE] (SHAPE like 1,8,8)
"""
import sys

import h5py
import numpy as np
import torch

MU = [0.5, -0.3]
COV = [[0.30, 0.10], [0.10, 0.20]]
T = 1000


def alpha_bar(timesteps=T):
    # Our default linear schedule: DDPM's 1e-4 .. 0.02 scaled by 1000/T, in float64.
    betas = np.linspace(1e-4 * 1000 / timesteps, 0.02 * 1000 / timesteps, timesteps, dtype=np.float64)
    return np.cumprod(1.0 - betas)


class GaussEps(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("ab", torch.tensor(alpha_bar(), dtype=torch.float64))
        self.register_buffer("mu", torch.tensor(MU, dtype=torch.float64))
        self.register_buffer("cov", torch.tensor(COV, dtype=torch.float64))

    def forward(self, x, t):
        a = self.ab[t]  # [B]
        c = a[:, None, None] * self.cov + (1 - a)[:, None, None] * torch.eye(2, dtype=torch.float64)
        d = x.double() - a.sqrt()[:, None] * self.mu
        return ((1 - a).sqrt()[:, None] * torch.linalg.solve(c, d.unsqueeze(-1)).squeeze(-1)).float()


class TinyConv(torch.nn.Module):
    def __init__(self, classes: int = 3, width: int = 8):
        super().__init__()
        self.embed_t = torch.nn.Embedding(T, width)
        self.embed_y = torch.nn.Embedding(classes + 1, width)  # label `classes` = null
        self.inp = torch.nn.Conv2d(1, width, 3, padding=1)
        self.mid = torch.nn.Conv2d(width, width, 3, padding=1)
        self.out = torch.nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, x, t, y):
        h = self.inp(x) + (self.embed_t(t) + self.embed_y(y))[:, :, None, None]
        return 0.5 * self.out(torch.tanh(self.mid(torch.tanh(h))))


class TinyMlp(torch.nn.Module):
    def __init__(self, dim: int, width: int = 32):
        super().__init__()
        self.embed_t = torch.nn.Embedding(T, width)
        self.inp = torch.nn.Linear(dim, width)
        self.out = torch.nn.Linear(width, dim)

    def forward(self, x, t):
        return 0.5 * self.out(torch.tanh(self.inp(x) + self.embed_t(t)))


class NearGaussEps(torch.nn.Module):
    """The exact eps of standard normal data, sqrt(1 - ab_t) x_t, plus a small fixed random MLP:
    a non-trivial network whose samples stay of size ~1 (a plain random eps-network's DDIM
    samples grow to ~1e2, where float32 round-off hides in the magnitude)."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("sigma", torch.tensor(np.sqrt(1 - alpha_bar()), dtype=torch.float32))
        self.mlp = TinyMlp(dim)

    def forward(self, x, t):
        return self.sigma[t][:, None] * x + 0.2 * self.mlp(x, t)


def main(argv):
    what, out = argv[1], argv[2]
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    if what == "gauss":
        torch.jit.script(GaussEps()).save(out)
    elif what == "conv":
        torch.jit.script(TinyConv()).save(out)
    elif what == "mlp":
        torch.jit.script(TinyMlp(int(argv[3]))).save(out)
    elif what == "near-gauss":
        torch.jit.script(NearGaussEps(int(argv[3]))).save(out)
    elif what == "gauss-data":
        n = int(argv[3])
        x = rng.standard_normal((n, 2)) @ np.linalg.cholesky(np.array(COV)).T + MU
        with h5py.File(out, "w") as f:
            f.create_dataset("x", data=x.astype(np.float32), maxshape=(None, 2), chunks=(n, 2))
    elif what == "images":
        n = int(argv[3])
        with h5py.File(out, "w") as f:
            f.create_dataset("images", data=rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8),
                             maxshape=(None, 8, 8, 1), chunks=(n, 8, 8, 1))
            f.create_dataset("labels", data=rng.integers(0, 3, n).astype(np.int64), maxshape=(None,), chunks=(n,))
            f.attrs["num_classes"] = np.int64(3)
    elif what == "latents":
        n, shape = int(argv[3]), [int(s) for s in argv[4].split(",")]
        with h5py.File(out, "w") as f:
            f.create_dataset("x", data=rng.standard_normal([n] + shape).astype(np.float32))
    else:
        sys.exit(f"unknown: {what}")


if __name__ == "__main__":
    main(sys.argv)
