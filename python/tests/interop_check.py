"""Checks for interop_test.sh, run in its scratch folder.

  compare NAME:RUN:LATENTS ...   ck_NAME/ (diffusion-sample --checkpoint) vs ts_NAME/
                                 (--torchscript of the export) vs a Python DDIM loop over
                                 diffusion_cluster.load(RUN), all from LATENTS
  consistency NAME:RUN:LATENTS[:STEPS:NOISE] ...
                                 ck_NAME/ (diffusion-sample --checkpoint of a consistency model)
                                 vs consistency_sample over load(RUN) from LATENTS; multistep
                                 with the sampler's keyed noise from NOISE (ddpm_step_probe);
                                 ddim_sample refuses the model
  load-checks RUN ST_FILE ST_RUN EMA selection; safetensors weights equal the checkpoint's
  exceptions NOTRUN BADCRC BADARCH  load() raises RunFormatError naming the file
  plots DIR RUN DISTILL             DIR holds PNGs; the distillation's rounds sit where its
                                    steps-N metrics.jsonl say
"""
import json
import sys

import h5py
import numpy as np
import torch

import diffusion_cluster as dc

torch.set_num_threads(1)


def samples(folder):
    with h5py.File(f"{folder}/samples.h5", "r") as f:
        x = f["x"][:]
        labels = f["labels"][:] if "labels" in f else None
    return x, labels


def python_ddim(run, latents, labels, ema=None, weights_of=None):
    model = dc.load(run, ema=ema)
    s = model.settings
    if weights_of is not None:  # the same settings with another run's weights
        model.load_state_dict(dc.load(weights_of).state_dict())
    with h5py.File(latents, "r") as f:
        lat = torch.from_numpy(f["x"][:])
    # The settings interop_test.sh passes: 4 trailing DDIM steps without clipping, or a
    # student's own grid (the defaults of ddim_sample, as of diffusion-sample).
    kw = {} if s.distilled else {"steps": 4, "spacing": "trailing"}
    x = dc.ddim_sample(model, s, lat, labels=None if labels is None else torch.from_numpy(labels),
                       clip_x0=False, **kw)
    if x.dim() == 4:
        x = x.permute(0, 2, 3, 1)  # samples.h5 stores images NHWC
    return x.numpy()


def compare(specs):
    ok = True
    print(f"{'model':8} {'|ck|max':>9} {'ck-ts':>9} {'ck-py':>9} {'tol':>9} {'ck-py(other weights)':>21}")
    for spec in specs:
        name, run, latents = spec.split(":")
        ck, labels = samples(f"ck_{name}")
        ts, ts_labels = samples(f"ts_{name}")
        py = python_ddim(run, latents, labels)
        # Round-off of float32 over a few steps, relative to the samples' size (v and eps
        # models at t = T-1 divide by sqrt(abar) ≈ 0.006, so values can be large).
        scale = float(np.abs(ck).max())
        tol = 1e-5 * max(1.0, scale)
        d_ts = float(np.abs(ck - ts).max())
        d_py = float(np.abs(ck - py).max())
        # Sensitivity: other weights of the same run (raw vs EMA) must be far outside tol, or
        # the comparison would pass for any weights.
        other = "none" if dc.load(run).settings.ema != "none" else None
        d_other = float("nan")
        if other is not None:
            d_other = float(np.abs(ck - python_ddim(run, latents, labels, ema=other)).max())
        elif name == "student":
            # A student trained without EMA: compare with its teacher's weights instead.
            d_other = float(np.abs(ck - python_ddim(run, latents, labels, weights_of="mlp")).max())
        print(f"{name:8} {scale:9.3g} {d_ts:9.2g} {d_py:9.2g} {tol:9.2g} {d_other:21.3g}")
        if not (ck.shape == ts.shape == py.shape and np.array_equal(labels, ts_labels)):
            print(f"  {name}: shapes {ck.shape} {ts.shape} {py.shape} or labels differ")
            ok = False
        if not (d_ts <= tol and d_py <= tol and np.all(np.isfinite(ck))):
            print(f"  {name}: differences above tol")
            ok = False
        if not d_other > 100 * tol:
            print(f"  {name}: other weights give samples within 100 tol: the test is not sensitive")
            ok = False
    return ok


def python_consistency(run, latents, labels, steps=1, noise=None, ema=None):
    model = dc.load(run, ema=ema)
    with h5py.File(latents, "r") as f:
        lat = torch.from_numpy(f["x"][:])
    x = dc.consistency_sample(model, model.settings, lat, labels=None if labels is None else torch.from_numpy(labels),
                              steps=steps, noise=noise)
    if x.dim() == 4:
        x = x.permute(0, 2, 3, 1)
    return x.numpy()


def consistency(specs):
    ok = True
    print(f"{'model':8} {'steps':>5} {'|ck|max':>9} {'ck-py':>9} {'tol':>9} {'ck-py(other weights)':>21}")
    for spec in specs:
        name, run, latents, *multi = spec.split(":")
        steps, noise = 1, None
        if multi:
            # Draw 0 of each sample's keyed stream is x_T (replaced by the latents); draws 1 …
            # steps-1 re-noise x0 at the further time points.
            steps = int(multi[0])
            with h5py.File(multi[1], "r") as f:
                noise = list(torch.from_numpy(f["keyed"]["noise"][1:steps]))
        ck, labels = samples(f"ck_{name}")
        py = python_consistency(run, latents, labels, steps, noise)
        scale = float(np.abs(ck).max())
        tol = 1e-5 * max(1.0, scale)
        d_py = float(np.abs(ck - py).max())
        # Sensitivity as in compare: the raw weights against the EMA the sampler loads.
        d_other = float(np.abs(ck - python_consistency(run, latents, labels, steps, noise, ema="none")).max())
        print(f"{name:8} {steps:5} {scale:9.3g} {d_py:9.2g} {tol:9.2g} {d_other:21.3g}")
        if not (ck.shape == py.shape and np.all(np.isfinite(ck)) and d_py <= tol):
            print(f"  {name}: shapes {ck.shape} {py.shape} or differences above tol"); ok = False
        if not d_other > 100 * tol:
            print(f"  {name}: other weights give samples within 100 tol: the test is not sensitive"); ok = False
        model = dc.load(run)
        if not model.settings.consistency:
            print(f"  {name}: settings.consistency is False"); ok = False
        try:
            dc.ddim_sample(model, model.settings, torch.zeros([2] + model.settings.sample_shape))
            print(f"  {name}: ddim_sample sampled a consistency model"); ok = False
        except ValueError as e:
            if model.settings.checkpoint not in str(e) or "consistency_sample" not in str(e):
                print(f"  {name}: ddim_sample's refusal {e!s} lacks the checkpoint or consistency_sample"); ok = False
        # A consistency student's [distilled] records its method and no grid.
        d = model.settings.distilled
        if (d is None) != ("distilled" not in model.settings.config) or \
                (d is not None and (d.method, d.sampling_steps, d.timesteps) != ("consistency", 0, [])):
            print(f"  {name}: distilled = {d} for [distilled] {model.settings.config.get('distilled')}"); ok = False
    return ok


def load_checks(run, st_file, st_run):
    from safetensors import safe_open

    ok = True
    # EMA choice as diffusion-sample's: the slowest rate by default, any stored rate, or none.
    if dc.load(run).settings.ema != "0.9" or dc.load(run, ema=0.5).settings.ema != "0.5":
        print("default EMA is not the slowest rate 0.9 / ema=0.5 not taken"); ok = False
    try:
        dc.load(run, ema="0.25")
        print("ema=0.25 (not in the checkpoint) loaded"); ok = False
    except dc.RunFormatError as e:
        ok &= "0.9, 0.5" in str(e)
    # A power EMA the run keeps loads by its tag; another width is diffusion-sample's post-hoc job.
    if dc.load(run, ema="sigma-rel-0.1").settings.ema != "sigma-rel-0.1":
        print("ema=sigma-rel-0.1 not taken"); ok = False
    try:
        dc.load(run, ema="sigma-rel-0.07")
        print("ema=sigma-rel-0.07 (not kept) loaded"); ok = False
    except dc.RunFormatError as e:
        ok &= "diffusion-sample --ema sigma-rel-0.07" in str(e)
    model = dc.load(st_run)
    _, tensors = dc.read_checkpoint(model.settings.checkpoint)
    with safe_open(st_file, "pt") as f:
        keys = set(f.keys())
        cfg = json.loads(f.metadata()["config"])
        if keys != {dc.cpp_name(k) for k in model.state_dict()}:
            print("safetensors keys differ from the module's"); ok = False
        for k in keys:
            if not torch.equal(f.get_tensor(k), tensors[f"ema_{model.settings.ema}/{k}"]):
                print(f"safetensors tensor {k} differs from the checkpoint's"); ok = False
    rebuilt = dc.build_network({"model": cfg["model"], "diffusion": {"learned-variance": str(cfg["learned_variance"])},
                                "derived": {"sample-shape": ",".join(map(str, cfg["sample_shape"])),
                                            "num-classes": str(cfg["num_classes"])}}, st_file)
    if {dc.cpp_name(k) for k in rebuilt.state_dict()} != keys:
        print("the JSON config does not rebuild the architecture"); ok = False
    return ok


def exceptions(notrun, badcrc, badarch):
    ok = True
    for path, expect in ((notrun, f"{notrun}: not a run folder"),
                         (badcrc, "shard-00000-of-00001.h5: checksum mismatch"),
                         (badarch, "manifest.json: model = 'transformer'")):
        try:
            dc.load(path)
            print(f"{path}: loaded"); ok = False
        except dc.RunFormatError as e:
            if expect not in str(e):
                print(f"{path}: message {e!s} lacks {expect!r}"); ok = False
    return ok


def plots(folder, run, distill):
    import os
    from diffusion_cluster import plot

    ok = True
    for name in ("loss.png", "training.png", "quality.png"):
        p = os.path.join(folder, name)
        with open(p, "rb") as f:
            head = f.read(24)
        width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        if head[:8] != b"\x89PNG\r\n\x1a\n" or width < 400 or height < 200:
            print(f"{p}: not a PNG of a plot ({width}x{height})"); ok = False
    # Rounds run most steps first; round k starts after the images of the rounds before it.
    label, rows, rounds = plot.read_run(distill)
    folders = sorted((d for d in os.listdir(distill) if d.startswith("steps-")), key=lambda d: -int(d[6:]))
    metrics = [[json.loads(l) for l in open(os.path.join(distill, d, "metrics.jsonl"))] for d in folders]
    starts = list(np.cumsum([0] + [m[-1]["images_seen"] for m in metrics[:-1]]))
    if len(folders) < 2 or rounds != [(int(x), f"{d[6:]} steps") for x, d in zip(starts, folders)] or \
            len(rows) != sum(map(len, metrics)) or rows[-1]["images_seen"] != starts[-1] + metrics[-1][-1]["images_seen"]:
        print(f"distillation rounds {rounds} / rows do not follow the rounds' metrics {folders}"); ok = False
    # The smoothing is a trailing mean.
    if not np.allclose(plot.smooth([1, 2, 3, 4, 5], 2), [1, 1.5, 2.5, 3.5, 4.5]):
        print("smooth() is not a trailing mean"); ok = False
    return ok


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    ok = {"compare": lambda: compare(args), "consistency": lambda: consistency(args), "load-checks": lambda: load_checks(*args),
          "exceptions": lambda: exceptions(*args), "plots": lambda: plots(*args)}[cmd]()
    sys.exit(0 if ok else 1)
