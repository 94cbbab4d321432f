"""load(RUN): a run folder (or a distillation student folder OUT/steps-N or OUT/consistency) as
an nn.Module plus its diffusion settings, rebuilt from the checkpoint's resolved config as
trainer/trained_model.cpp does (same EMA choice, same tensor-by-tensor shape checks)."""
import dataclasses
import os
from typing import List, Optional

import numpy as np
import torch

from .checkpoint import RunFormatError, find_checkpoint, parse_config, read_checkpoint
from .nets import MlpDenoiser, UNet, cpp_name


@dataclasses.dataclass
class Distilled:
    """A student's [distilled] section (its config.ini, docs/distillation.md): a progressive
    student's own DDIM grid, or a consistency student (method "consistency", no grid:
    sampling_steps 0, timesteps []). guidance_scale is the teacher guidance built into it."""
    sampling_steps: int
    timesteps: List[int]
    guidance_scale: float
    method: str = "progressive"    # "progressive" | "consistency"
    grid: List[int] = dataclasses.field(default_factory=list)  # a consistency student's training grid


@dataclasses.dataclass
class DiffusionSettings:
    """Everything besides the weights that sampling the model needs."""
    kind: str                      # "unet" | "mlp"
    sample_shape: List[int]        # [C, H, W] or [D]
    num_classes: int               # 0: unconditional; else labels 0..C-1, C = the null label
    schedule: str                  # "linear" | "cosine"
    timesteps: int                 # T
    beta_start: Optional[float]    # linear schedule endpoints (None: 1e-4*1000/T, 0.02*1000/T)
    beta_end: Optional[float]
    prediction: str                # "eps" | "x0" | "v"
    learned_variance: bool         # the network returns 2C channels
    distilled: Optional[Distilled] # a student's [distilled] section, else None
    consistency: bool              # objective = consistency: the network gives f(x, t) (consistency_sample)
    step: int
    ema: str                       # the EMA rate loaded, or "none" for the raw weights
    checkpoint: str                # the step folder loaded
    config: dict                   # the resolved config, {section: {key: value}}

    def betas(self):
        """float64 betas, as core/diffusion/schedule.cpp computes them."""
        T = self.timesteps
        if self.schedule == "linear":
            scale = 1000.0 / T
            start = self.beta_start if self.beta_start is not None else scale * 1e-4
            end = self.beta_end if self.beta_end is not None else scale * 0.02
            return np.array([start + (end - start) * t / (T - 1) for t in range(T)], np.float64)
        s = 0.008
        f = lambda u: np.cos((u / T + s) / (1 + s) * np.pi / 2) ** 2
        return np.array([min(1 - f(t + 1) / f(t), 0.999) for t in range(T)], np.float64)

    def alphas_cumprod(self):
        return torch.cumprod(1.0 - torch.tensor(self.betas(), dtype=torch.float64), 0)


_POWER = "sigma-rel-"  # power-function EMA tags (trainer/ema.h): "sigma-rel-0.05"


def _choose_ema(requested, rates, where):
    if requested == "none":
        return "none"
    if not rates:
        if requested is None:
            return "none"  # a run trained without EMA: its raw weights
        raise RunFormatError(f"{where}: ema {requested}: the checkpoint holds no EMA weights (use ema='none')")
    constant = [r for r in rates if not r.startswith(_POWER)]
    power = [r for r in rates if r.startswith(_POWER)]
    if requested is None:  # the slowest: the highest rate, else the widest power EMA
        return max(constant, key=float) if constant else max(power, key=lambda r: float(r[len(_POWER):]))
    if requested.startswith(_POWER):
        try:
            float(requested[len(_POWER):])
        except ValueError:
            raise RunFormatError(f"{where}: ema {requested}: expected sigma-rel-S with a number S") from None
        for r in power:
            if abs(float(r[len(_POWER):]) - float(requested[len(_POWER):])) < 1e-12:
                return r
        raise RunFormatError(f"{where}: ema {requested}: the checkpoint keeps the power EMAs "
                             f"{', '.join(power) or 'none'}; other widths are rebuilt from the run's EMA "
                             f"snapshots by diffusion-sample --ema {requested}, not here")
    for r in constant:
        if abs(float(r) - float(requested)) < 1e-12:
            return r
    raise RunFormatError(f"{where}: ema {requested}: the checkpoint holds EMAs {', '.join(rates)} (or 'none')")


def _ints(s):
    return [int(v) for v in s.split(",") if v.strip()]


def build_network(cfg, source):
    """The untrained network a resolved config describes; `source` names the file in errors."""
    try:
        model, diff, derived = cfg["model"], cfg["diffusion"], cfg["derived"]
        kind = model["model"]
        shape = _ints(derived["sample-shape"])
        classes = int(derived["num-classes"])
        lv = diff["learned-variance"].lower() in ("1", "true", "yes", "on")
        if kind == "unet":
            att = model["attention-resolutions"]
            return UNet(shape[0], int(model["base-channels"]), _ints(model["channel-mult"]),
                        int(model["num-res-blocks"]), [] if att == "none" else _ints(att),
                        int(model["image-size"]), int(model["num-heads"]), int(model["num-groups"]),
                        float(model["dropout"]), classes, lv)
        if kind == "mlp":
            return MlpDenoiser(shape[0], int(model["mlp-hidden"]), int(model["mlp-blocks"]),
                               int(model["mlp-time-dim"]), float(model["dropout"]), classes, lv)
    except KeyError as e:
        raise RunFormatError(f"{source}: missing key {e} in the resolved config") from None
    raise RunFormatError(f"{source}: model = {kind!r}: diffusion_cluster knows the architectures unet and mlp")


def settings_of(cfg, source, manifest, step_dir, ema):
    diff, derived = cfg["diffusion"], cfg["derived"]
    distilled = None
    if "distilled" in cfg:
        # As trainer/train_options.cpp reads it: a consistency student records no grid.
        d = cfg["distilled"]
        method = d.get("method", "progressive")
        if method not in ("progressive", "consistency"):
            raise RunFormatError(f"{source}: [distilled] method = {method}: expected progressive or consistency")
        steps, grid = int(d.get("sampling-steps", "0")), _ints(d.get("timesteps", ""))
        if steps != len(grid):
            raise RunFormatError(f"{source}: [distilled] sampling-steps = {steps} but {len(grid)} timesteps are listed")
        distilled = Distilled(steps, grid, float(d.get("guidance-scale", "1")), method, _ints(d.get("grid", "")))
    opt = lambda k: None if diff.get(k, "auto") == "auto" else float(diff[k])
    return DiffusionSettings(
        kind=cfg["model"]["model"], sample_shape=_ints(derived["sample-shape"]),
        num_classes=int(derived["num-classes"]), schedule=diff["schedule"], timesteps=int(diff["timesteps"]),
        beta_start=opt("beta-start"), beta_end=opt("beta-end"), prediction=diff["prediction"],
        learned_variance=diff["learned-variance"].lower() in ("1", "true", "yes", "on"),
        distilled=distilled, consistency=diff.get("objective", "denoise") == "consistency",
        step=int(manifest["step"]), ema=ema, checkpoint=os.path.abspath(step_dir), config=cfg)


def load(run_dir, ema=None, with_settings=False):
    """The model of RUN (a run folder, its checkpoints/ folder, a step folder or a student folder
    OUT/steps-N or OUT/consistency) in eval mode on the CPU, with `.settings` (a DiffusionSettings)
    attached.

    ema: None takes the highest EMA rate in the checkpoint (the sampler's default), "none" the
    raw weights, a rate such as "0.999" / 0.999, or a power EMA the checkpoint keeps
    ("sigma-rel-0.05"). With with_settings=True returns
    (model, settings). Raises RunFormatError naming the file on bad input."""
    step_dir = find_checkpoint(os.fspath(run_dir))
    manifest, tensors = read_checkpoint(step_dir)
    source = os.path.join(step_dir, "manifest.json")
    cfg = parse_config(manifest["config_text"], source + " (config_text)")
    for section in ("model", "diffusion", "derived"):
        if section not in cfg:
            raise RunFormatError(f"{source}: the config_text has no [{section}] section")
    net = build_network(cfg, source)
    rates = []
    for name in tensors:
        if name.startswith("ema_"):
            r = name[4:name.index("/")]
            if r not in rates:
                rates.append(r)
    chosen = _choose_ema(None if ema is None else str(ema), rates, step_dir)
    prefix = "model/" if chosen == "none" else f"ema_{chosen}/"
    state = {}
    for key, value in net.state_dict().items():
        name = prefix + cpp_name(key)
        t = tensors.get(name)
        if t is None:
            raise RunFormatError(f"{source}: no tensor '{name}' for the model its config describes")
        if tuple(t.shape) != tuple(value.shape):
            raise RunFormatError(f"{source}: tensor '{name}' has shape {list(t.shape)}, "
                                 f"the model needs {list(value.shape)}")
        state[key] = t.to(value.dtype)
    net.load_state_dict(state)
    net.eval()
    settings = settings_of(cfg, source, manifest, step_dir, chosen)
    net.settings = settings
    return (net, settings) if with_settings else net
