"""DDIM sampling in plain PyTorch with the arithmetic of core/diffusion/samplers.cpp and
core/diffusion/gaussian_diffusion.cpp (float64 schedule tables gathered, then cast to the sample dtype),
so a loaded model sampled here matches `diffusion-sample --sampler ddim --eta 0` on the same
latents to float32 round-off; consistency_sample likewise matches `--sampler consistency`
(Sampler::sample_consistency, core/diffusion/consistency.cpp)."""
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


def _x0_hat(prediction, x, out, a, m):
    """x0-hat from the network output under its prediction type (interpret_output, unclipped)."""
    if prediction == "eps":
        return (x - m * out) / a
    if prediction == "x0":
        return out
    if prediction == "v":
        return a * x - m * out
    raise ValueError(f"unknown prediction {prediction!r}")


@torch.no_grad()
def ddim_sample(model, settings, x, labels=None, steps=None, spacing=None, clip_x0=None,
                guidance_scale=1.0):
    """Deterministic DDIM (eta = 0) from latents x [B, *sample_shape].

    Defaults follow diffusion-sample: a distilled student's own grid (trailing, its steps),
    else 50 steps (at most T) with leading spacing; clip x0 to [-1, 1] for images."""
    s = settings
    if s.consistency:
        # Its output is f(x, t), not a denoiser's prediction: DDIM would read it as one.
        raise ValueError(f"{s.checkpoint}: a consistency model (objective = consistency); "
                         "sample it with consistency_sample, not ddim_sample")
    T = s.timesteps
    grid = s.distilled.sampling_steps if s.distilled else 0  # a progressive student's own grid
    if steps is None:
        steps = grid if grid else min(50, T)
    if spacing is None:
        spacing = "trailing" if grid else "leading"
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


@torch.no_grad()
def consistency_sample(model, settings, x, labels=None, steps=1, noise=None, clip_x0=None):
    """Consistency sampling (Song et al. 2023, Algorithm 1) from latents x [B, *sample_shape],
    as Sampler::sample_consistency: x0 = f(x_T, T-1), then for each further time point tau of
    trailing spacing x = sqrt(abar) x0 + sqrt(1 - abar) z, x0 = f(x, tau).

    noise: steps - 1 tensors of x's shape, the z of each further point. diffusion-sample draws
    them from keyed streams this package does not reproduce, so its samples are matched here for
    1 step from the same latents, or for multistep with the same noise supplied; None draws them
    with torch.randn. Clips x0 to [-1, 1] for images unless told otherwise. A distilled student
    has its teacher's guidance built in, so there is no guidance_scale."""
    s = settings
    if not s.consistency:
        raise ValueError(f"{s.checkpoint}: not a consistency model (its config has no objective = consistency); "
                         "sample it with ddim_sample")
    T = s.timesteps
    taus = timestep_spacing("trailing", T, steps)  # the first is T-1 at any step count
    grid = s.distilled.grid if s.distilled else []
    if grid:  # a distilled student: the nearest points of its training grid (ties to the larger)
        snapped = []
        for tau in taus:
            g = min(grid, key=lambda u: (abs(u - tau), -u))
            if not snapped or snapped[-1] != g:
                snapped.append(g)
        if len(snapped) != steps:
            raise ValueError(f"steps = {steps}: the student's grid has only {len(snapped)} distinct points near "
                             "trailing spacing")
        taus = snapped
    if clip_x0 is None:
        clip_x0 = len(s.sample_shape) == 3
    x = x.to(torch.float32).clone()
    if noise is None:
        noise = [torch.randn_like(x) for _ in taus[1:]]
    noise = list(noise)
    if len(noise) != len(taus) - 1 or any(tuple(z.shape) != tuple(x.shape) for z in noise):
        raise ValueError(f"noise: {steps} steps need {steps - 1} tensors of shape {list(x.shape)}, "
                         f"got {[list(z.shape) for z in noise]}")
    ab = s.alphas_cumprod()
    sqrt_ab, sqrt_1m = ab.sqrt(), (1.0 - ab).sqrt()
    a0 = math.sqrt(float(ab[0]))
    B, C = x.shape[0], x.shape[1]
    x0 = None
    for k, tau in enumerate(taus):
        ab_t = float(ab[tau])
        if k > 0:  # back onto the trajectory at tau
            x = math.sqrt(ab_t) * x0 + math.sqrt(1.0 - ab_t) * noise[k - 1].to(x.dtype)
        t = torch.full((B,), tau, dtype=torch.long)
        out = model(x, t, labels) if s.num_classes > 0 else model(x, t)
        if out.shape[1] == 2 * C:
            out = out[:, :C]
        x0 = _x0_hat(s.prediction, x, out, _gather(sqrt_ab, t, x), _gather(sqrt_1m, t, x))
        # The boundary condition f(x, sigma_min) = x at t = 0 (consistency_output).
        boundary = (t == 0).reshape([B] + [1] * (x.dim() - 1))
        x0 = torch.where(boundary, x / a0, x0)
        if clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
    return x0


def to_uint8(x):
    """[-1, 1] NCHW floats to uint8 NHWC images, as the sampler writes `images`."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
