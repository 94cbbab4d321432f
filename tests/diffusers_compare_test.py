"""Our sampler against diffusers (the peer most users sample with), on the same TorchScript
network and the same latents: DDIM (eta = 0) trajectories against DDIMScheduler for each
timestep spacing, and single DDPM steps against DDPMScheduler (fixed-small and fixed-large,
noise given). Usage: diffusers_compare_test.py BIN_DIR WORK_DIR. Prints every difference it
measures and exits non-zero when one is out of bounds.

Tolerances. Both sides compute in float32, but on different tables: diffusers builds betas
with torch.linspace in float32 and alphas_cumprod by a float32 cumprod (drift printed below,
~4e-7 relative), we build them in float64 and round once. The network (exact eps of N(0, I)
data plus a small random MLP) keeps samples of size ~1-3, so float32 round-off over S steps
is a few 1e-7 .. 1e-6: TOL_DDIM = 1e-5, the same with diffusers' alphas_cumprod replaced by
ours. The deliberate differences below must exceed 10 * TOL_DDIM (they measure 1e-3 .. 1e-2).
A single DDPM step at small t has one ill-conditioned float32 operation in diffusers:
1 - alpha_prod_t with alpha_prod_t ~ 1 - 3e-4 (t = 1) loses log2(1/3e-4) ~ 12 bits, so its
coefficients carry a relative error ~ eps32 / (1 - ab_t) (ours come from float64 tables):
TOL_DDPM(t) = 2e-5 + eps32 * max|x_t| / (1 - ab_t).

Where we differ on purpose (docs/sampling.md):
  * trailing with T % S != 0, and linspace: diffusers' DDIM goes from t to t - T // S, a
    timestep it does not visit; we go to the next visited timestep (as its DDPMScheduler
    does). Checked: plain diffusers differs; diffusers stepping to our previous timestep
    (num_inference_steps set per step so that T // n is our gap) matches.
  * set_alpha_to_one=False (alpha_bar_0 after the last step): we use alpha_bar = 1 (the DDIM
    paper's code). Checked: differs.
"""
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sample_models import NearGaussEps, TinyConv, alpha_bar  # noqa: E402

from diffusers import DDIMScheduler, DDPMScheduler  # noqa: E402

T = 1000
B = 16  # one forward batch on both sides (our sampler pads batches under 16 rows)
TOL_DDIM = 1e-5
EPS32 = float(np.finfo(np.float32).eps)
PREDICTION = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}

torch.set_num_threads(1)
BIN, WORK = sys.argv[1], sys.argv[2]
shutil.rmtree(WORK, ignore_errors=True)  # a fresh model file each run: our outputs must not be reused
os.makedirs(WORK)
failures = []


def check(name, diff, tol, expect_equal=True):
    ok = diff <= tol if expect_equal else diff > tol
    print(f"{'ok  ' if ok else 'FAIL'} {name}: max abs diff {diff:.3g} ({'<=' if expect_equal else '>'} {tol:g})")
    if not ok:
        failures.append(name)


# --- the network, saved as TorchScript, and the latents -------------------------------------
torch.manual_seed(0)
mlp = torch.jit.script(NearGaussEps(4))
mlp.save(f"{WORK}/mlp.pt")
conv = torch.jit.script(TinyConv())
conv.save(f"{WORK}/conv.pt")
rng = np.random.default_rng(1)
lat_vec = rng.standard_normal((B, 4)).astype(np.float32)
lat_img = rng.standard_normal((B, 1, 8, 8)).astype(np.float32)
labels = torch.arange(B) % 3
for name, lat in [("lat_vec", lat_vec), ("lat_img", lat_img)]:
    with h5py.File(f"{WORK}/{name}.h5", "w") as f:
        f.create_dataset("x", data=lat)

ab_ours = torch.tensor(alpha_bar(T), dtype=torch.float64)
ab_peer = DDIMScheduler(num_train_timesteps=T, beta_schedule="linear").alphas_cumprod.double()
print(f"alphas_cumprod: diffusers (float32 cumprod) vs ours (float64): max relative diff "
      f"{((ab_peer / ab_ours) - 1).abs().max().item():.3g}")


def ours(tag, model, shape, lat, prediction, spacing, steps, clip):
    out = f"{WORK}/ours_{tag}"
    cmd = [f"{BIN}/diffusion-sample", "--torchscript", f"{WORK}/{model}.pt", "--sample-shape", shape,
           "--latents", f"{WORK}/{lat}.h5", "--sampler", "ddim", "--eta", "0", "--steps", str(steps),
           "--timestep-spacing", spacing, "--prediction", prediction, "--clip-x0", str(clip).lower(),
           "--save-float", "true", "--batch-size", str(B), "--threads", "1", "--out", out]
    if model == "conv":
        cmd += ["--num-classes", "3"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    x = h5py.File(f"{out}/samples.h5")["x"][:]
    return torch.from_numpy(x).permute(0, 3, 1, 2) if x.ndim == 4 else torch.from_numpy(x)  # NHWC -> NCHW


def peer(model, lat, prediction, spacing, steps, clip, next_visited=False, same_table=False, alpha_to_one=True):
    s = DDIMScheduler(num_train_timesteps=T, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                      clip_sample=clip, set_alpha_to_one=alpha_to_one, steps_offset=0,
                      prediction_type=PREDICTION[prediction], timestep_spacing=spacing)
    if same_table:
        s.alphas_cumprod = ab_ours.float()
    s.set_timesteps(steps)
    ts = s.timesteps.tolist()
    x = torch.from_numpy(lat)
    with torch.no_grad():
        for k, t in enumerate(ts):
            tt = torch.full((B,), t, dtype=torch.long)
            out = model(x, tt, labels) if x.dim() == 4 else model(x, tt)
            if next_visited:
                # diffusers steps to t - T // num_inference_steps: pick n so that this is ts[k+1].
                gap = t - ts[k + 1] if k + 1 < len(ts) else t + 1
                n = T // gap
                assert T // n == gap or (k + 1 == len(ts) and T // n > t), (t, gap, n)
                s.num_inference_steps = n
            x = s.step(out, t, x, eta=0.0, use_clipped_model_output=clip).prev_sample
    return x


# --- DDIM trajectories, eta = 0 -----------------------------------------------------------------
cases = [  # tag, model, shape, latents, prediction, spacing, S, clip, diffusers steps to our previous t?
    ("lead50", "mlp", "4", "lat_vec", "eps", "leading", 50, False, True),
    ("lead30", "mlp", "4", "lat_vec", "eps", "leading", 30, False, True),
    ("trail50", "mlp", "4", "lat_vec", "eps", "trailing", 50, False, True),
    ("trail30", "mlp", "4", "lat_vec", "eps", "trailing", 30, False, False),
    ("lin50", "mlp", "4", "lat_vec", "eps", "linspace", 50, False, False),
    ("lead50v", "mlp", "4", "lat_vec", "v", "leading", 50, False, True),
    ("lead50x0", "mlp", "4", "lat_vec", "x0", "leading", 50, False, True),
    ("img_lead20", "conv", "1,8,8", "lat_img", "eps", "leading", 20, True, True),
    ("img_trail20", "conv", "1,8,8", "lat_img", "eps", "trailing", 20, True, True),
]
for tag, model_name, shape, lat_name, pred, spacing, steps, clip, same_prev in cases:
    model = mlp if model_name == "mlp" else conv
    lat = lat_vec if lat_name == "lat_vec" else lat_img
    x_ours = ours(tag, model_name, shape, lat_name, pred, spacing, steps, clip)
    name = f"DDIM {model_name} {pred} {spacing} S={steps}{' clip' if clip else ''}"
    plain = (x_ours - peer(model, lat, pred, spacing, steps, clip)).abs().max().item()
    if same_prev:
        check(f"{name} vs DDIMScheduler", plain, TOL_DDIM)
        same = (x_ours - peer(model, lat, pred, spacing, steps, clip, same_table=True)).abs().max().item()
        check(f"{name} vs DDIMScheduler on our alphas_cumprod", same, TOL_DDIM)
    else:
        check(f"{name} vs DDIMScheduler (it steps to t - T//S: differs on purpose)", plain, 10 * TOL_DDIM,
              expect_equal=False)
        adapted = (x_ours - peer(model, lat, pred, spacing, steps, clip, next_visited=True)).abs().max().item()
        check(f"{name} vs DDIMScheduler stepping to our previous timestep", adapted, TOL_DDIM)
        same = (x_ours - peer(model, lat, pred, spacing, steps, clip, next_visited=True, same_table=True)).abs().max().item()
        check(f"{name} vs DDIMScheduler stepping to our previous timestep on our alphas_cumprod", same, TOL_DDIM)
x_ours = ours("lead50", "mlp", "4", "lat_vec", "eps", "leading", 50, False)
diff = (x_ours - peer(mlp, lat_vec, "eps", "leading", 50, False, alpha_to_one=False)).abs().max().item()
check("DDIM leading S=50 vs set_alpha_to_one=False (we end at alpha_bar = 1: differs on purpose)", diff,
      10 * TOL_DDIM, expect_equal=False)

# --- single DDPM steps, noise given -----------------------------------------------------------
ddpm_cases = []  # (S, t, prediction, variance)
for variance in ("fixed_small", "fixed_large"):
    for t in (999, 500, 10, 1, 0):
        ddpm_cases.append((T, t, "eps", variance))
    ddpm_cases += [(T, 700, "v", variance), (T, 300, "x0", variance), (50, 980, "eps", variance),
                   (50, 20, "eps", variance), (50, 0, "eps", variance)]
probe_file = f"{WORK}/ddpm_cases.h5"
peer_out = {}
with h5py.File(probe_file, "w") as f:
    for k, (steps, t, pred, variance) in enumerate(ddpm_cases):
        g = f.create_group(f"case{k:02d}")
        xt = torch.from_numpy(rng.standard_normal((B, 4)).astype(np.float32))
        with torch.no_grad():
            out = mlp(xt, torch.full((B,), t, dtype=torch.long))
        noise = torch.randn(xt.shape, generator=torch.Generator().manual_seed(k))
        s = DDPMScheduler(num_train_timesteps=T, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                          variance_type=variance, clip_sample=False, prediction_type=PREDICTION[pred])
        if steps < T:
            s.set_timesteps(steps)  # leading spacing, the chain steps to the next visited timestep
        peer_out[g.name] = s.step(out, t, xt, generator=torch.Generator().manual_seed(k)).prev_sample
        g.create_dataset("xt", data=xt.numpy())
        g.create_dataset("output", data=out.numpy())
        g.create_dataset("noise", data=noise.numpy())
        for key, value in dict(T=T, steps=steps, timestep=t, prediction=["eps", "x0", "v"].index(pred),
                               variance=0 if variance == "fixed_large" else 1, clip=0).items():
            g.attrs[key] = np.int64(value)
subprocess.run([f"{BIN}/ddpm_step_probe", probe_file], check=True)
with h5py.File(probe_file) as f:
    for k, (steps, t, pred, variance) in enumerate(ddpm_cases):
        g = f[f"case{k:02d}"]
        diff = (torch.from_numpy(g["ours"][:]) - peer_out[g.name]).abs().max().item()
        tol = 2e-5 + EPS32 * np.abs(g["xt"][:]).max() / (1 - alpha_bar(T)[t])
        check(f"DDPM step S={steps} t={t} {pred} {variance} vs DDPMScheduler.step", diff, tol)

print(f"diffusers_compare: {len(failures)} failed" + (f": {failures}" if failures else ""))
sys.exit(1 if failures else 0)
