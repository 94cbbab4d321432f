#!/usr/bin/env bash
# Issue #14's quality-against-NFE table and plot for Fashion-MNIST (docs/results.md, "Fast
# sampling on Fashion-MNIST"): the teacher of the fixed-budget recipe (configs/fashion_mnist.ini,
# trained by bench/fashion_budget.sh) sampled with DDIM, DPM-Solver++(2M) (on the Karras grid
# and on trailing timesteps), Heun and Euler (Karras grid) at about 4, 8, 10, 20 and 50 network
# evaluations per sample (NFE; Heun's S steps cost 2S - 1), plus DDIM-100 as the reference of the
# issue's goal. Every row uses the recipe's guidance (scale 3 on sigma in (0.28, 5.42]); NFE
# counts sampler steps, as diffusers does, and guidance doubles the rows of the in-interval steps
# for every sampler alike.
# Scored by diffusion-eval (Frechet distance in classifier features, class accuracy).
#   bench/fashion_fast_sampling.sh
# Environment overrides: TEACHER (runs/fashion_budget/seed0; trained with bench/fashion_budget.sh
# when missing), N (samples per row, 2000), RANKS (2), GUIDE (3), INTERVAL (0.28,5.42),
# EMA (0.995), OUT (runs/fast_fashion).
# Builds nothing: run ./launch/build.sh first. Writes $OUT/ (samples, eval JSON, table.md, times),
# docs/results/fashion_quality_vs_nfe.png and a grid per row, docs/results/fashion_fast_<row>.png.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-2000}
GUIDE=${GUIDE:-3}
INTERVAL=${INTERVAL:-0.28,5.42}
EMA=${EMA:-0.995}
TEACHER=${TEACHER:-runs/fashion_budget/seed0}
OUT=${OUT:-runs/fast_fashion}
. bench/common.sh
DATA=data/fashion_mnist_train.h5
mkdir -p docs/results "$OUT"
if [ ! -e "$TEACHER/checkpoints/latest" ]; then
  CURVE=0 bench/fashion_budget.sh 0
fi
TIMES=$OUT/times.txt

# family | label | NFE | sampler options
ROWS=("DDIM|ddim-100|100|--sampler ddim --steps 100")
for nfe in 4 8 10 20 50; do
  heun=$(( (nfe + 1) / 2 ))  # Heun: the largest S with 2S - 1 <= NFE
  ROWS+=("DDIM|ddim-$nfe|$nfe|--sampler ddim --steps $nfe"
         "DPM-Solver++(2M), Karras|dpmpp2m-$nfe|$nfe|--sampler dpmpp-2m --karras true --steps $nfe"
         "DPM-Solver++(2M), trailing|dpmpp2m-trailing-$nfe|$nfe|--sampler dpmpp-2m --timestep-spacing trailing --steps $nfe"
         "Heun, Karras|heun-$nfe|$(( 2 * heun - 1 ))|--sampler heun --karras true --steps $heun"
         "Euler, Karras|euler-$nfe|$nfe|--sampler euler --karras true --steps $nfe")
done
for row in "${ROWS[@]}"; do
  IFS='|' read -r family tag nfe options <<<"$row"
  if [ ! -f "$OUT/$tag.json" ]; then
    rm -rf "${OUT:?}/$tag"
    # shellcheck disable=SC2086
    timed "$tag" "${MPI[@]}" $BIN/diffusion-sample --checkpoint "$TEACHER" --num-samples "$N" \
      --guidance-scale "$GUIDE" --guidance-interval "$INTERVAL" --ema "$EMA" --precision bf16 \
      --seed 1 --threads 1 --out "$OUT/$tag" $options >"$OUT/$tag.log" 2>&1
    $BIN/diffusion-eval --samples "$OUT/$tag/samples.h5" --reference "$DATA" \
      --json "$OUT/$tag.json" --threads "$RANKS" >"$OUT/$tag.eval.log" 2>&1
    rm -f "$OUT/$tag/samples.h5"  # 2000 images each; the score is what the table needs
  fi
  echo "$tag: $(grep -o '"frechet_distance": *[0-9.]*' "$OUT/$tag.json")"
  cp "$OUT/$tag/grid.png" "docs/results/fashion_fast_$tag.png"
done
"$PY" - "$OUT" docs/results/fashion_quality_vs_nfe.png "${ROWS[@]}" <<'PYEOF' | tee "$OUT/table.md"
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
out, png, rows = sys.argv[1], sys.argv[2], [r.split("|") for r in sys.argv[3:]]
print("| sampler | NFE | Fréchet | class accuracy | grid |")
print("|---|---|---|---|---|")
series, ref = {}, None
for family, tag, nfe, opts in rows:
    e = json.load(open(f"{out}/{tag}.json"))
    fd, acc = e["frechet_distance"], e["conditional_accuracy"]
    if tag == "ddim-100":
        ref = fd
    series.setdefault(family, []).append((int(nfe), fd))
    print(f"| {family} | {nfe} | {fd:.2f} | {acc:.3f} | ![](results/fashion_fast_{tag}.png) |")
fig, ax = plt.subplots(figsize=(6.4, 4.4))
top = 3 * min(fd for pts in series.values() for _, fd in pts)  # keeps the useful range readable
off = []
for family, pts in series.items():
    pts.sort()
    ax.plot([p[0] for p in pts], [min(p[1], top) for p in pts], "o-", label=family)
    off += [f"{family.split(',')[0]} {n}: {fd:.0f}" for n, fd in pts if fd > top]
if ref is not None:
    ax.axhline(1.1 * ref, color="gray", lw=0.8, ls=":", label=f"1.1 x DDIM-100 ({1.1 * ref:.1f})")
if off:
    ax.text(0.98, 0.60, "off the chart (drawn at the top):\n" + "\n".join(off), transform=ax.transAxes,
            ha="right", va="top", fontsize=7)
ax.set_xscale("log"); ax.set_yscale("log")
ax.set_xlabel("network evaluations per sample (NFE)"); ax.set_ylabel("Fréchet distance (classifier features)")
ax.set_title("Fashion-MNIST: quality against NFE\n(2000 samples, guidance 3 on σ in (0.28, 5.42])", fontsize=10)
ax.legend(fontsize=7); fig.tight_layout(); fig.savefig(png, dpi=110)
PYEOF
