"""python -m diffusion_cluster.plot RUN [RUN ...] [--out DIR] [--smooth K]
   python -m diffusion_cluster.plot --eval EVAL.json [EVAL.json ...] --out DIR

Training curves from each run's metrics.jsonl (trainer/trainer.cpp writes one record per
log step): DIR/loss.png (the loss smoothed, and the loss per quarter of the t range, against
images seen) and DIR/training.png (learning rate, gradient norm, images/s). Several runs are
overlaid. A distillation folder (diffusion-distill --out, with distill.json) is drawn as one
curve through its rounds steps-N, with a dashed line where each round starts.

With --eval: diffusion-eval --json reports of several sample sets as quality against sampling
steps (DIR/quality.png); the steps and the model come from each set's manifest.json
(diffusion-sample --out). Sets of the same run (or the students of one distillation) form
one line. DIR defaults to RUN/plots. Bad input raises PlotInputError naming the file; nothing
is written then.
"""
import argparse
import json
import os
import re
import sys

import numpy as np


class PlotInputError(ValueError):
    """A folder or file that is not a run, a distillation or an eval report."""


def _read_jsonl(path):
    rows = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise PlotInputError(f"{path}: line {number}: not JSON: {e}") from None
    for key in ("step", "images_seen", "loss"):
        if rows and key not in rows[0]:
            raise PlotInputError(f"{path}: records lack '{key}' (expected diffusion-train's metrics.jsonl)")
    if not rows:
        raise PlotInputError(f"{path}: no records")
    return rows


def read_run(path):
    """(label, rows, rounds): rows with images_seen made cumulative over distillation rounds,
    rounds = [(images_seen at its start, 'N steps')] (empty for a plain run)."""
    path = os.path.normpath(path)
    label = os.path.basename(path)
    if os.path.isfile(os.path.join(path, "metrics.jsonl")):
        return label, _read_jsonl(os.path.join(path, "metrics.jsonl")), []
    dj = os.path.join(path, "distill.json")
    if os.path.isfile(dj):
        try:
            with open(dj) as f:
                records = json.load(f)["rounds"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise PlotInputError(f"{dj}: not diffusion-distill's record of rounds: {e}") from None
        rows, rounds, offset = [], [], 0
        # The rounds in the order they ran (most steps first); the one running now may lack a record.
        folders = sorted((d for d in os.listdir(path) if re.fullmatch(r"steps-\d+", d)),
                         key=lambda d: -int(d[6:]))
        for d in folders:
            mj = os.path.join(path, d, "metrics.jsonl")
            if not os.path.isfile(mj):
                continue
            part = _read_jsonl(mj)
            rounds.append((offset, f"{d[6:]} steps"))
            for r in part:
                rows.append(dict(r, images_seen=r["images_seen"] + offset, round=len(rounds) - 1))
            offset = rows[-1]["images_seen"]
        if not rows:
            raise PlotInputError(f"{path}: a distillation folder ({dj}) without any steps-N/metrics.jsonl")
        return label + " (distillation)", rows, rounds
    raise PlotInputError(f"{path}: not a run folder (no metrics.jsonl) nor a distillation folder (no distill.json)")


def smooth(values, k):
    """Trailing moving average over k records (shorter at the start)."""
    v = np.asarray(values, dtype=np.float64)
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(0, idx - k)
    return (c[idx] - c[lo]) / (idx - lo)


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt
    return plt


def _mark_rounds(ax, rounds, color):
    for x, text in rounds:
        ax.axvline(x, color=color, linestyle="--", linewidth=0.8, alpha=0.7)
        ax.annotate(text, (x, 1), xycoords=("data", "axes fraction"), rotation=90, fontsize=7,
                    va="top", ha="right", color=color)


def plot_runs(runs, out, k=10):
    """Writes out/loss.png and out/training.png; returns their paths."""
    data = [read_run(r) for r in runs]  # every input read before anything is written
    plt = _pyplot()
    os.makedirs(out, exist_ok=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (label, rows, rounds) in enumerate(data):
        c = colors[i % len(colors)]
        x = [r["images_seen"] for r in rows]
        loss = [r["loss"] for r in rows]
        a1.plot(x, loss, color=c, alpha=0.25, linewidth=0.8)
        # Smoothed within each distillation round: each round has its own loss scale.
        rid = np.array([r.get("round", 0) for r in rows])
        smoothed = np.concatenate([smooth(np.asarray(loss)[rid == g], k) for g in dict.fromkeys(rid)])
        a1.plot(x, smoothed, color=c, label=label)
        _mark_rounds(a1, rounds, c)
        q = [r.get("loss_per_t_quarter") for r in rows]
        if all(v is not None and len(v) == 4 for v in q):
            q = np.asarray(q, dtype=np.float64)
            for j, style in enumerate(["-", "--", "-.", ":"]):
                # A quarter no sample fell in this log step is 0 in the record: not a loss.
                y = np.where(q[:, j] > 0, q[:, j], np.nan)
                a2.plot(x, y, color=c, linestyle=style,
                        label=f"{label}: t in quarter {j + 1}")
            _mark_rounds(a2, rounds, c)
    a1.set(title=f"loss (moving average over {k} records)", xlabel="images seen", ylabel="loss", yscale="log")
    a2.set(title="loss per quarter of the t range (1 = t near 0)", xlabel="images seen", yscale="log")
    a1.legend(fontsize=8, loc="lower left")
    a2.legend(fontsize=6, ncol=1 if len(data) == 1 else 2, loc="lower left")
    fig.tight_layout()
    loss_png = os.path.join(out, "loss.png")
    fig.savefig(loss_png, dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for i, (label, rows, rounds) in enumerate(data):
        c = colors[i % len(colors)]
        x = [r["images_seen"] for r in rows]
        for ax, key in zip(axes, ("lr", "grad_norm", "images_per_s")):
            y = [r.get(key, np.nan) for r in rows]
            ax.plot(x, y, color=c, label=label)
            _mark_rounds(ax, rounds, c)
    for ax, title in zip(axes, ("learning rate", "gradient norm (before clipping)", "images/s")):
        ax.set(title=title, xlabel="images seen")
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    training_png = os.path.join(out, "training.png")
    fig.savefig(training_png, dpi=110)
    plt.close(fig)
    return loss_png, training_png


# ---- diffusion-eval reports ----------------------------------------------------------------

_QUALITY = [("frechet_distance", "Fréchet distance (lower is better)"),
            ("conditional_accuracy", "class accuracy of the samples"),
            ("gmm.nll", "mixture NLL (nats)")]


def _get(report, dotted):
    v = report
    for part in dotted.split("."):
        if not isinstance(v, dict) or part not in v:
            return None
        v = v[part]
    return v


def _is_sample_manifest(path):
    try:
        with open(path) as f:
            return str(json.load(f).get("format", "")).startswith("diffusion-sample")
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def read_eval(path):
    """(series name, steps, report) of a diffusion-eval --json report, from its sample set's
    manifest.json: the run sampled (students of one distillation share a series) and its steps."""
    try:
        with open(path) as f:
            report = json.load(f)
        samples = report["samples"]["path"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise PlotInputError(f"{path}: not a diffusion-eval --json report: {e}") from None
    # The report records the samples' path as given to diffusion-eval (maybe relative to where
    # it ran): try it as it is, then relative to the report's folder, then beside the report.
    here = os.path.dirname(os.path.abspath(path))
    candidates = [os.path.join(os.path.dirname(samples), "manifest.json"),
                  os.path.join(here, os.path.dirname(samples), "manifest.json"), os.path.join(here, "manifest.json")]
    manifest = next((c for c in candidates if _is_sample_manifest(c)), candidates[0])
    try:
        with open(manifest) as f:
            settings = json.load(f)["settings"]
    except (OSError, json.JSONDecodeError, KeyError) as e:
        raise PlotInputError(f"{path}: its samples' {manifest} is not diffusion-sample's manifest: {e}") from None
    model = settings["model"]
    where = model.get("checkpoint") or model.get("torchscript", "?")
    run = re.sub(r"/checkpoints/step-\d+$", "", where)
    m = re.match(r"(.*)/steps-\d+$", run)
    name = f"{os.path.basename(m.group(1))} (students)" if m else f"{os.path.basename(run)} ({settings['sampler']})"
    if settings.get("guidance_scale", 1.0) != 1.0:
        name += f", guidance {settings['guidance_scale']:g}"
    return name, int(settings["steps"]), report


def plot_eval(reports, out):
    """Writes out/quality.png: each metric the reports hold against sampling steps."""
    data = [read_eval(r) for r in reports]
    metrics = [(k, t) for k, t in _QUALITY if any(_get(r, k) is not None for _, _, r in data)]
    if not metrics:
        raise PlotInputError(f"{reports[0]}: none of {', '.join(k for k, _ in _QUALITY)} in the reports")
    plt = _pyplot()
    os.makedirs(out, exist_ok=True)
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.8), squeeze=False)
    series = {}
    for name, steps, report in data:
        series.setdefault(name, []).append((steps, report))
    for ax, (key, title) in zip(axes[0], metrics):
        for name, points in series.items():
            points = sorted((s, _get(r, key)) for s, r in points if _get(r, key) is not None)
            if points:
                ax.plot([s for s, _ in points], [v for _, v in points], marker="o", label=name)
        ax.set(title=title, xlabel="sampling steps", xscale="log")
        ticks = sorted({s for _, s, _ in data})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(out, "quality.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m diffusion_cluster.plot", description=__doc__.split("\n")[0])
    ap.add_argument("inputs", nargs="+", help="run or distillation folders, or with --eval diffusion-eval reports")
    ap.add_argument("--eval", action="store_true", help="the inputs are diffusion-eval --json reports")
    ap.add_argument("--out", help="folder for the PNGs (default: the first input's plots/)")
    ap.add_argument("--smooth", type=int, default=10, help="moving-average window, in records")
    args = ap.parse_args(argv)
    out = args.out
    if out is None:
        if args.eval:
            ap.error("--eval needs --out")
        out = os.path.join(args.inputs[0], "plots")
    try:
        paths = plot_eval(args.inputs, out) if args.eval else plot_runs(args.inputs, out, args.smooth)
    except PlotInputError as e:
        sys.exit(f"plot: {e}")
    for p in [paths] if isinstance(paths, str) else paths:
        print(f"[plot] wrote {p}")


if __name__ == "__main__":
    main()
