#!/usr/bin/env python3
"""The pictures and the table of bench/fashion_budget.sh (issue #13, docs/results.md):

    python bench/fashion_budget_plot.py --out runs/fashion_budget RUN [RUN ...]

For each run folder RUN (diffusion-train --out) it reads RUN/metrics.jsonl and the diffusion-eval
reports RUN_eval/curve_step-*/eval.json (the curve) and RUN_eval/final/eval.json (the goal's figure).

The x axis is training wall clock on 2 ranks. A run trained on 2 ranks has it in its metrics
(the sum of its log windows). A run trained on another rank count is drawn at the 2-rank rate:
images seen / the median images/s of the 2-rank runs' windows, since the trainer gives the same
model at any rank count (W-invariance) and only the clock differs; with no 2-rank run among
RUN, --rate gives that rate. --clock-rate R draws every run at R images/s instead: the 2-rank
rate of the machines the budget is stated for, when the runs were trained on slower ones. Writes
docs/results/fashion_budget_frechet.png, docs/results/fashion_budget_loss.png,
docs/results/fashion_budget_grid.png (the first run's final samples) and OUT/table.md.
"""
import argparse
import configparser
import json
import os
import re
import shutil
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# The two measured points (1581 s on 2 ranks of these machines, 2000 DDIM-50 samples at
# guidance 1), drawn for reference; this script does not rerun them.
REFERENCE = [
    ("plain PyTorch DDPM script (issue #13, guidance 1)", 1581, 21.8, "s"),
    ("old configs/fashion_mnist.ini, fp32 (issue #13, guidance 1)", 1581, 30.6, "X"),
    ("the recipe with random flips, seed 0 (2026-12-03, guidance 3 on the interval)", 1544, 23.62, "P"),
]
BUDGET_S = 1581
GOAL_FRECHET = 17.4


def read_run(path):
    metrics = [json.loads(l) for l in open(os.path.join(path, "metrics.jsonl")) if l.strip()]
    if not metrics:
        sys.exit(f"{path}/metrics.jsonl: no records")
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(path, "config.ini"))
    world = int(cfg["derived"]["world-size"])
    # Window k covers images_seen[k-1] .. images_seen[k] at images_per_s[k].
    wall, seen_prev, clock = {}, 0, 0.0
    for m in metrics:
        clock += (m["images_seen"] - seen_prev) / m["images_per_s"]
        seen_prev = m["images_seen"]
        wall[m["step"]] = (m["images_seen"], clock)
    evals = {}
    edir = path + "_eval"
    for name in sorted(os.listdir(edir)) if os.path.isdir(edir) else []:
        report = os.path.join(edir, name, "eval.json")
        if not os.path.isfile(report) or not (name == "final" or name.startswith("curve_step-")):
            continue  # other folders there are side experiments (guidance, EMA sweeps)
        r = json.load(open(report))
        mt = re.match(r"curve_step-(\d+)$", name)
        step = int(mt.group(1)) if mt else metrics[-1]["step"]
        evals[name] = dict(step=step, frechet=r["frechet_distance"], acc=r.get("conditional_accuracy"),
                           n=r["samples"]["rows_used"])
    return dict(path=path, metrics=metrics, world=world, wall=wall, evals=evals,
                rates=[m["images_per_s"] for m in metrics[1:]])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--guide", default="?")
    ap.add_argument("--steps-ddim", default="50")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--rate", type=float, help="2-rank images/s when no run here was trained on 2 ranks "
                    "(a bench/train_bench.sh or 60-step probe figure)")
    ap.add_argument("--clock-rate", type=float, help="draw every run at this many images/s (see above)")
    ap.add_argument("runs", nargs="+")
    a = ap.parse_args()
    runs = [read_run(p) for p in a.runs]
    two = [r for run in runs if run["world"] == a.ranks for r in run["rates"]]
    rate = statistics.median(two) if two else a.rate

    def clock(run, step):
        seen, own = run["wall"][step]
        if a.clock_rate:
            return seen / a.clock_rate
        if run["world"] == a.ranks:
            return own
        if rate is None:
            sys.exit(f"{run['path']}: trained on {run['world']} rank(s) and no {a.ranks}-rank run gives the rate")
        return seen / rate

    os.makedirs("docs/results", exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in runs:
        pts = sorted((clock(run, e["step"]), e["frechet"]) for k, e in run["evals"].items() if k.startswith("curve_"))
        label = os.path.basename(run["path"]) + ("" if run["world"] == a.ranks else f" (trained on {run['world']} rank, clock at the {a.ranks}-rank rate)")
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=label + f", curve ({a.steps_ddim} DDIM steps)")
        if "final" in run["evals"]:
            f = run["evals"]["final"]
            ax.plot([clock(run, f["step"])], [f["frechet"]], "*", ms=14, label=os.path.basename(run["path"]) + " final")
    for name, t, fd, marker in REFERENCE:
        ax.plot([t], [fd], marker, ms=10, color="k", label=name)
    ax.axhline(GOAL_FRECHET, ls="--", color="g", lw=1, label=f"goal {GOAL_FRECHET}")
    ax.axvline(BUDGET_S, ls=":", color="gray", lw=1)
    xlabel = f"training wall clock on {a.ranks} ranks (s)" + (
        f", drawn at {a.clock_rate:.0f} images/s" if a.clock_rate else "")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("diffusion-eval Fréchet distance")
    ax.set_yscale("log")
    ax.set_xlim(left=0)
    ax.set_title(f"Fashion-MNIST: quality against training time (ours at guidance {a.guide})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig("docs/results/fashion_budget_frechet.png", dpi=110)

    fig, ax = plt.subplots(figsize=(7, 4))
    for run in runs:
        m = run["metrics"]
        k = 5
        loss = [statistics.mean(x["loss"] for x in m[max(0, i - k + 1):i + 1]) for i in range(len(m))]
        ax.plot([clock(run, x["step"]) for x in m], loss, label=os.path.basename(run["path"]))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("training loss (moving mean of 5 log windows)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig("docs/results/fashion_budget_loss.png", dpi=110)

    grid = os.path.join(runs[0]["path"] + "_eval", "final", "grid.png")
    if os.path.isfile(grid):
        shutil.copy(grid, "docs/results/fashion_budget_grid.png")

    lines = ["| run | ranks trained on | images seen | training wall clock on 2 ranks (s) | own clock (s) | samples | Fréchet | class accuracy |",
             "|---|---|---|---|---|---|---|---|"]
    for run in runs:
        for name in sorted(run["evals"], key=lambda k: run["evals"][k]["step"] + (0.5 if k == "final" else 0)):
            e = run["evals"][name]
            seen, _ = run["wall"][e["step"]]
            acc = "–" if e["acc"] is None else f"{e['acc']:.3f}"
            lines.append(f"| {os.path.basename(run['path'])} step {e['step']}{' (final)' if name == 'final' else ''} | "
                         f"{run['world']} | {seen} | {clock(run, e['step']):.0f} | {run['wall'][e['step']][1]:.0f} | "
                         f"{e['n']} | {e['frechet']:.2f} | {acc} |")
    if rate:
        lines.append(f"\n{a.ranks}-rank rate (median window): {rate:.1f} images/s")
    if a.clock_rate:
        lines.append(f"\nwall clock drawn at {a.clock_rate:.1f} images/s; own clock: the sum of the run's log windows")
    with open(os.path.join(a.out, "table.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
