"""DDIM sampling in plain PyTorch with the arithmetic of core/diffusion/samplers.cpp and
core/diffusion/gaussian_diffusion.cpp (float64 schedule tables gathered, then cast to the sample dtype),
so a loaded model sampled here matches `diffusion-sample --sampler ddim --eta 0` on the same
latents to float32 round-off."""
import math

import torch


def timestep_spacing(spacing, T, S):
    """The S timesteps visited, descending (core/diffusion/spacing.cpp; half-to-even rounding)."""
    if not 1 <= S <= T:
        raise ValueError(f"sampling steps S = {S}: expected 1 <= S <= T = {T}")
    if spacing == "leading":
        return [i * (T // S) for i in range(S - 1, -1, -1)]
    if spacing == "trailing":
        return [int(round(T - i * (T / S))) - 1 for i in range(S)]
    if spacing == "linspace":
        step = 0.0 if S == 1 else (T - 1) / (S - 1)
        return [T - 1 if S > 1 and i == S - 1 else int(round(i * step)) for i in range(S - 1, -1, -1)]
    raise ValueError(f"unknown timestep spacing {spacing!r}: expected leading, trailing or linspace")


def _gather(table, t, like):
    return table.index_select(0, t).reshape([t.shape[0]] + [1] * (like.dim() - 1)).to(like.dtype)


@torch.no_grad()
def ddim_sample(model, settings, x, labels=None, steps=None, spacing=None, clip_x0=None,
                guidance_scale=1.0):
    """Deterministic DDIM (eta = 0) from latents x [B, *sample_shape].

    Defaults follow diffusion-sample: a distilled student's own grid (trailing, its steps),
    else 50 steps (at most T) with leading spacing; clip x0 to [-1, 1] for images."""
    s = settings
    T = s.timesteps
    if steps is None:
        steps = s.distilled.sampling_steps if s.distilled else min(50, T)
    if spacing is None:
        spacing = "trailing" if s.distilled else "leading"
    if clip_x0 is None:
        clip_x0 = len(s.sample_shape) == 3
    ab = s.alphas_cumprod()
    sqrt_ab, sqrt_1m = ab.sqrt(), (1.0 - ab).sqrt()
    taus = timestep_spacing(spacing, T, steps)
    x = x.to(torch.float32).clone()
    B, C = x.shape[0], x.shape[1]
    for k, tau in enumerate(taus):
        t = torch.full((B,), tau, dtype=torch.long)
        if labels is not None and s.num_classes > 0 and guidance_scale != 1.0:
            null = torch.full((B,), s.num_classes, dtype=torch.long)
            out = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels.long(), null]))
            cond, uncond = out[:B], out[B:]
            if out.shape[1] == 2 * C:
                out = torch.cat([uncond[:, :C] + guidance_scale * (cond[:, :C] - uncond[:, :C]), cond[:, C:]], 1)
            else:
                out = uncond + guidance_scale * (cond - uncond)
        else:
            out = model(x, t, labels) if s.num_classes > 0 else model(x, t)
        if out.shape[1] == 2 * C:
            out = out[:, :C]  # DDIM ignores a learned variance
        a, m = _gather(sqrt_ab, t, x), _gather(sqrt_1m, t, x)
        if s.prediction == "eps":
            eps, x0 = out, (x - m * out) / a
        elif s.prediction == "x0":
            x0, eps = out, (x - a * out) / m
        elif s.prediction == "v":
            x0, eps = a * x - m * out, m * x + a * out
        else:
            raise ValueError(f"unknown prediction {s.prediction!r}")
        if clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
            eps = (x - a * x0) / m
        ab_t = float(ab[tau])
        ab_next = float(ab[taus[k + 1]]) if k + 1 < len(taus) else 1.0
        x = math.sqrt(ab_next) * x0 + math.sqrt(max(0.0, 1.0 - ab_next)) * eps
    return x


def to_uint8(x):
    """[-1, 1] NCHW floats to uint8 NHWC images, as the sampler writes `images`."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
