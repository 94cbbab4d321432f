"""python -m diffusion_cluster.export RUN --out model.pt [--ema RATE|none]

Writes, next to each other and only once RUN has loaded completely:
  model.pt           TorchScript, forward(x, t) or forward(x, t, y), for
                     `diffusion-sample --torchscript model.pt` (the flags that describe it are
                     printed and stored in model.json)
  model.safetensors  the weights under the C++ names, the JSON config in its metadata
  model.json         the same config: architecture, diffusion settings, sampler flags
A learned-variance network's TorchScript returns only its prediction channels (the sampler's
--torchscript takes an output of the input's shape; DDIM never uses the variance).
A consistency model is refused: --torchscript has no flag that makes the sampler read the
network as f(x, t) (it treats any TorchScript file as a denoiser).
"""
import argparse
import json
import os
import sys

import torch

from .checkpoint import RunFormatError
from .model import load
from .nets import cpp_name


class _Script(torch.nn.Module):
    """The signature diffusion-sample --torchscript calls (sampler/sampling_model.cpp)."""

    def __init__(self, net, channels):
        super().__init__()
        self.net = net
        self.channels = channels

    def forward(self, x, t, y=None):
        out = self.net(x, t, y)
        return out[:, :self.channels]


def sampler_flags(s):
    flags = ["--sample-shape", ",".join(map(str, s.sample_shape)), "--schedule", s.schedule,
             "--timesteps", str(s.timesteps), "--prediction", s.prediction]
    if s.num_classes:
        flags += ["--num-classes", str(s.num_classes)]
    if s.distilled and s.distilled.sampling_steps:
        # The progressive student's own grid: the checkpoint path applies it by itself, TorchScript cannot.
        flags += ["--sampler", "ddim", "--steps", str(s.distilled.sampling_steps), "--timestep-spacing", "trailing"]
    return flags


def config_json(model, s):
    return {
        "format": "diffusion-cluster-export/1",
        "architecture": s.kind,
        "model": s.config["model"],
        "sample_shape": s.sample_shape, "num_classes": s.num_classes,
        "schedule": s.schedule, "timesteps": s.timesteps, "beta_start": s.beta_start, "beta_end": s.beta_end,
        "prediction": s.prediction, "learned_variance": s.learned_variance,
        "distilled": None if s.distilled is None else vars(s.distilled),
        "step": s.step, "ema": s.ema, "checkpoint": s.checkpoint,
        "parameters": sum(p.numel() for p in model.parameters()),
        "diffusion_sample_flags": sampler_flags(s),
    }


def export(run, out, ema=None):
    """Writes out (TorchScript), its .safetensors and .json; returns the config dict."""
    from safetensors.torch import save_file

    model, s = load(run, ema=ema, with_settings=True)
    if s.consistency:
        raise RunFormatError(f"{s.checkpoint}/manifest.json: a consistency model (objective = consistency): "
                             "diffusion-sample --torchscript samples any TorchScript file as a denoiser, so the "
                             "export would sample wrongly; use diffusion-sample --checkpoint or "
                             "diffusion_cluster.consistency_sample")
    if s.schedule == "linear" and (s.beta_start is not None or s.beta_end is not None):
        raise RunFormatError(f"{s.checkpoint}/manifest.json: explicit beta-start/beta-end: diffusion-sample "
                             "--torchscript only knows the default linear endpoints, so the export would sample "
                             "another schedule")
    stem = os.path.splitext(out)[0]
    paths = {"pt": out, "safetensors": stem + ".safetensors", "json": stem + ".json"}
    for p in paths.values():
        if os.path.exists(p):
            raise FileExistsError(f"{p}: exists (export never overwrites)")
    cfg = config_json(model, s)
    C = s.sample_shape[0]
    wrapper = _Script(model, C).eval()
    example = (torch.zeros([2] + s.sample_shape), torch.full((2,), s.timesteps - 1, dtype=torch.long))
    if s.num_classes:
        example += (torch.zeros(2, dtype=torch.long),)
    with torch.no_grad():
        # Tracing records the one path the network takes; sizes are traced from the inputs, so
        # any batch size works. check_trace=False: the check re-runs the same inputs anyway.
        script = torch.jit.trace(wrapper, example, check_trace=False)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = {k: f"{p}.tmp-{os.getpid()}" for k, p in paths.items()}
    try:
        script.save(tmp["pt"])
        state = {cpp_name(k): v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, tmp["safetensors"], metadata={"config": json.dumps(cfg)})
        with open(tmp["json"], "w") as f:
            json.dump(cfg, f, indent=2)
            f.write("\n")
        for k in paths:
            os.replace(tmp[k], paths[k])
    finally:
        for p in tmp.values():
            if os.path.exists(p):
                os.remove(p)
    return cfg


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m diffusion_cluster.export", description=__doc__.split("\n")[2])
    ap.add_argument("run", help="run folder, step folder or student folder OUT/steps-N")
    ap.add_argument("--out", required=True, help="TorchScript file to write (.safetensors/.json beside it)")
    ap.add_argument("--ema", default=None, help="EMA rate, or none (default: the slowest, as diffusion-sample)")
    args = ap.parse_args(argv)
    try:
        cfg = export(args.run, args.out, args.ema)
    except (RunFormatError, FileExistsError) as e:
        sys.exit(f"export: {e}")
    print(f"[export] wrote {args.out} (+ .safetensors, .json): {cfg['architecture']}, "
          f"{cfg['parameters']} parameters, step {cfg['step']}, ema {cfg['ema']}")
    print("[export] sample it with: diffusion-sample --torchscript " + args.out + " " +
          " ".join(cfg["diffusion_sample_flags"]))


if __name__ == "__main__":
    main()
