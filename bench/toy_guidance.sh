#!/usr/bin/env bash
# Issue #14's classifier against classifier-free guidance on the gmm-ring toy set (docs/results.md,
# "Classifier against classifier-free guidance on the gmm-ring set"): configs/toy_2d.ini trained
# class-conditional (label = mode, label dropout 0.1) and a noisy classifier of the same MLP
# (--objective classifier); DDIM-50 with classifier-free guidance at several scales and with
# classifier guidance at several scales, 5000 samples per row, classes spread, seed 1; scored by
# diffusion-eval (NLL under the true mixture, off-mode fraction, class accuracy of its classifier).
# The plot is NLL against the guidance strength, since the class accuracy saturates on this set.
#   bench/toy_guidance.sh
# Environment overrides: N (5000), RANKS (2), OUT (runs/toy_guidance).
# Trains what is missing (both runs resume). Builds nothing: run ./launch/build.sh first. Writes
# $OUT/ (runs, eval JSON, table.md) and docs/results/toy_guidance.png.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-5000}
OUT=${OUT:-runs/toy_guidance}
. bench/common.sh
DATA=data/gmm_ring.h5
mkdir -p data docs/results "$OUT"
[ -f "$DATA" ] || $BIN/diffusion-data make-toy --kind gmm-ring --num 50000 --seed 0 --out "$DATA"
MODEL=$OUT/conditional
CLS=$OUT/classifier
"${MPI[@]}" $BIN/diffusion-train --config configs/toy_2d.ini --class-cond true --p-uncond 0.1 \
  --out "$MODEL" --threads 1 >>"$MODEL.log" 2>&1
"${MPI[@]}" $BIN/diffusion-train --config configs/toy_2d.ini --objective classifier --lr 1e-3 --warmup 100 \
  --steps 2000 --out "$CLS" --threads 1 >>"$CLS.log" 2>&1

# family | label | sampler options
ROWS=()
for w in 1 1.5 2 3; do
  ROWS+=("classifier-free guidance|cfg-$w|--guidance-scale $w")
done
for c in 1 2 4; do
  ROWS+=("classifier guidance|cg-$c|--classifier $CLS --classifier-scale $c")
done
for row in "${ROWS[@]}"; do
  IFS='|' read -r family tag options <<<"$row"
  if [ ! -f "$OUT/$tag.json" ]; then
    rm -rf "${OUT:?}/$tag"
    # shellcheck disable=SC2086
    "${MPI[@]}" $BIN/diffusion-sample --checkpoint "$MODEL" --num-samples "$N" --sampler ddim --steps 50 \
      --seed 1 --threads 1 --out "$OUT/$tag" $options >"$OUT/$tag.log" 2>&1
    $BIN/diffusion-eval --samples "$OUT/$tag/samples.h5" --reference "$DATA" \
      --json "$OUT/$tag.json" --threads "$RANKS" >"$OUT/$tag.eval.log" 2>&1
  fi
done
"$PY" - "$OUT" docs/results/toy_guidance.png "${ROWS[@]}" <<'PYEOF' | tee "$OUT/table.md"
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
out, png, rows = sys.argv[1], sys.argv[2], [r.split("|") for r in sys.argv[3:]]
print("| guidance | scale | NLL (nats) | off-mode | class accuracy |")
print("|---|---|---|---|---|")
series = {}
for family, tag, opts in rows:
    e = json.load(open(f"{out}/{tag}.json"))
    g, acc, scale = e["gmm"], e["conditional_accuracy"], tag.split("-", 1)[1]
    print(f"| {family} | {scale} | {g['nll']:.3f} | {g['off_mode_fraction']:.3f} | {acc:.3f} |")
    # Against the guidance strength: the class accuracy saturates on this set (8 far-apart modes).
    strength = float(scale) - 1 if family.startswith("classifier-free") else float(scale)
    series.setdefault(family, []).append((strength, g["nll"], scale))
    if tag == "cfg-1":  # no guidance at all: where the classifier's curve starts too (s = 0)
        series.setdefault("classifier guidance", []).append((0.0, g["nll"], "0"))
fig, ax = plt.subplots(figsize=(6.0, 4.2))
for family, pts in series.items():
    pts.sort()
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=family)
    for x, nll, scale in pts:
        ax.annotate(f"s={scale}", (x, nll), textcoords="offset points", xytext=(4, 4), fontsize=7)
ax.axhline(1.13, color="gray", lw=0.8, ls=":", label="real data (1.13)")
ax.set_xlabel("guidance strength (classifier-free: scale - 1; classifier: scale)")
ax.set_ylabel("mean NLL under the true mixture (nats)")
ax.set_title("gmm-ring: classifier against classifier-free guidance\n(DDIM-50, 5000 samples)", fontsize=10)
ax.legend(fontsize=8); fig.tight_layout(); fig.savefig(png, dpi=110)
PYEOF
