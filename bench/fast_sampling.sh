#!/usr/bin/env bash
# Issue #14's quality-against-NFE table and plot for the gmm-ring toy set (docs/results.md,
# "Fast sampling and few-step models"): the toy_2d teacher with DDIM, DPM-Solver++(2M) on the
# Karras grid, Heun and Euler (Karras grid) at about 4, 8, 10, 20 and 50 network evaluations per
# sample (NFE; Heun's S steps cost 2S - 1); the progressive-distillation students
# (configs/distill_toy.ini), a consistency-distilled student (configs/consistency_toy.ini) and a
# consistency-trained model (toy_2d.ini with --objective consistency --prediction v, the same
# 6000 steps at batch 256, lr 1e-3 with a cosine decay) at 1, 2 and 4 steps. Scored by
# diffusion-eval (mean NLL under the true mixture, off-mode fraction). Trains what is missing
# (all of it resumes), on 2 ranks, one thread each.
# Builds nothing: run ./launch/build.sh first. Writes runs/fast_toy/ (samples, eval JSON,
# table.md, times) and docs/results/toy_quality_vs_nfe.png.
# Environment overrides: N (samples per row, 5000), RANKS (2).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-5000}
. bench/common.sh
DATA=data/gmm_ring.h5
OUT=runs/fast_toy
mkdir -p data docs/results "$OUT"
[ -f "$DATA" ] || $BIN/diffusion-data make-toy --kind gmm-ring --num 50000 --seed 0 --out "$DATA"
TIMES=$OUT/times.txt
timed teacher "${MPI[@]}" $BIN/diffusion-train --config configs/toy_2d.ini --threads 1 >"$OUT/teacher.log" 2>&1
timed progressive "${MPI[@]}" $BIN/diffusion-distill --config configs/distill_toy.ini --threads 1 >"$OUT/progressive.log" 2>&1
timed cd "${MPI[@]}" $BIN/diffusion-distill --config configs/consistency_toy.ini --threads 1 >"$OUT/cd.log" 2>&1
timed ct "${MPI[@]}" $BIN/diffusion-train --config configs/toy_2d.ini --objective consistency --prediction v \
  --batch-size 256 --lr 1e-3 --lr-decay cosine \
  --steps 6000 --ema-rates 0.995 --out runs/toy_2d_ct --threads 1 >"$OUT/ct.log" 2>&1

# family | label | NFE | checkpoint | sampler options
ROWS=()
for nfe in 4 8 10 20 50; do
  heun=$(( (nfe + 1) / 2 ))  # Heun: the largest S with 2S - 1 <= NFE
  ROWS+=("DDIM|ddim-$nfe|$nfe|runs/toy_2d|--sampler ddim --steps $nfe"
         "DPM-Solver++(2M), Karras|dpmpp2m-$nfe|$nfe|runs/toy_2d|--sampler dpmpp-2m --karras true --steps $nfe"
         "Heun, Karras|heun-$nfe|$(( 2 * heun - 1 ))|runs/toy_2d|--sampler heun --karras true --steps $heun"
         "Euler, Karras|euler-$nfe|$nfe|runs/toy_2d|--sampler euler --karras true --steps $nfe")
done
for s in 1 2 4; do
  ROWS+=("progressive student|progressive-$s|$s|runs/toy_2d_distill/steps-$s|"
         "consistency distillation|cd-$s|$s|runs/toy_2d_cd/consistency|--steps $s"
         "consistency training|ct-$s|$s|runs/toy_2d_ct|--steps $s")
done
for row in "${ROWS[@]}"; do
  IFS='|' read -r family tag nfe checkpoint options <<<"$row"
  # shellcheck disable=SC2086
  [ -f "$OUT/$tag/samples.h5" ] || timed "$tag" "${MPI[@]}" $BIN/diffusion-sample --checkpoint "$checkpoint" \
    --num-samples "$N" --out "$OUT/$tag" --seed 1 --threads 1 $options >"$OUT/$tag.log" 2>&1
  [ -f "$OUT/$tag.json" ] || $BIN/diffusion-eval --samples "$OUT/$tag/samples.h5" --reference "$DATA" \
    --json "$OUT/$tag.json" --threads 2 >"$OUT/$tag.eval.log" 2>&1
done
"$PY" - "$OUT" docs/results/toy_quality_vs_nfe.png "${ROWS[@]}" <<'PYEOF' | tee "$OUT/table.md"
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
out, png, rows = sys.argv[1], sys.argv[2], [r.split("|") for r in sys.argv[3:]]
print("| model / sampler | NFE | NLL (nats) | off-mode | modes |")
print("|---|---|---|---|---|")
series = {}
for family, tag, nfe, ckpt, opts in rows:
    g = json.load(open(f"{out}/{tag}.json"))["gmm"]
    series.setdefault(family, []).append((int(nfe), g["nll"]))
    print(f"| {family} | {nfe} | {g['nll']:.3f} | {g['off_mode_fraction']:.3f} | {g['covered_modes']}/{g['modes']} |")
fig, ax = plt.subplots(figsize=(6.4, 4.2))
for family, pts in series.items():
    pts.sort()
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-" if len(pts) > 3 else "s--", label=family)
ax.axhline(1.13, color="gray", lw=0.8, ls=":", label="real data (1.13)")
ax.set_xscale("log"); ax.set_yscale("log")
ax.set_xlabel("network evaluations per sample (NFE)"); ax.set_ylabel("mean NLL under the true mixture (nats)")
ax.set_title("gmm-ring: quality against NFE (5000 samples, seed 1)")
ax.legend(fontsize=7); fig.tight_layout(); fig.savefig(png, dpi=110)
PYEOF
