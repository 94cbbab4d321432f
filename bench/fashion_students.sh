#!/usr/bin/env bash
# Issue #14's few-step rows for Fashion-MNIST (docs/results.md, "Few-step models and classifier
# guidance on Fashion-MNIST"), from the teacher of the fixed-budget recipe (configs/fashion_mnist.ini,
# seed 0, the run bench/fashion_budget.sh trains):
#   - progressive distillation, 16 -> 1 steps, R optimiser steps a round at batch 64, the teacher's
#     classifier-free guidance (scale G on every step) built into the students;
#   - consistency distillation with the same guidance, trained on as many images as the
#     progressive rounds 16 -> 2 took (3R steps at batch 64): the issue's "same number of images";
#   - consistency training from scratch (no teacher) on the teacher's network, CT_STEPS steps;
#   - the teacher itself with DDIM at 4 and 20 steps under the students' guidance (the references);
#   - classifier guidance (a noisy classifier trained with --objective classifier) against
#     classifier-free guidance, DDIM-20 at several scales, to compare at matched class accuracy.
# Every row: 2000 samples, classes spread, seed 1, scored by diffusion-eval (Frechet distance in
# classifier features, class accuracy) against data/fashion_mnist_train.h5.
#   bench/fashion_students.sh
# Environment overrides: TEACHER (runs/fashion_budget/seed0; trained here when missing), OUT (runs/fashion_students), N (2000),
# RANKS (2), G (1.5, the recipe's recommended guidance), R (300), CT_STEPS (600), CLS_STEPS (600),
# EMA (0.995, the teacher's EMA), PARTS (which models to train and score, of
# "progressive cd ct cfg classifier"; all by default; the teacher's DDIM rows are always made),
# GRIDS (fashion_students: the docs/results/ name prefix of the grids and the guidance plot).
# Trains what is missing; every run resumes, finished samples and scores are kept. Builds nothing:
# run ./launch/build.sh first. Writes $OUT/ (runs, samples, eval JSON, times, table.md) and
# docs/results/fashion_students_*.png (a grid per row and the guidance plot).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-2000}
G=${G:-1.5}
R=${R:-300}
CT_STEPS=${CT_STEPS:-600}
CLS_STEPS=${CLS_STEPS:-600}
EMA=${EMA:-0.995}
TEACHER=${TEACHER:-runs/fashion_budget/seed0}
OUT=${OUT:-runs/fashion_students}
PARTS=${PARTS:-progressive cd ct cfg classifier}
want() { [[ " $PARTS " == *" $1 "* ]]; }
GRIDS=${GRIDS:-fashion_students}
. bench/common.sh
DATA=data/fashion_mnist_train.h5
mkdir -p data docs/results "$OUT"
F=/usr/share/datasets/fashion-mnist
[ -f "$DATA" ] || $BIN/diffusion-data import-idx --images $F/train-images-idx3-ubyte.gz \
  --labels $F/train-labels-idx1-ubyte.gz --out "$DATA"
TIMES=$OUT/times.txt
COMMON=(--data "$DATA" --threads 1 --precision bf16)

# The teacher: bench/fashion_budget.sh's run of seed 0, the same command (it resumes).
timed teacher "${MPI[@]}" $BIN/diffusion-train --config configs/fashion_mnist.ini --seed 0 \
  --out "$TEACHER" --threads 1 --checkpoint-every 400 --keep-checkpoints 1000 >>"$TEACHER.log" 2>&1

PD=$OUT/progressive
want progressive && timed progressive "${MPI[@]}" $BIN/diffusion-distill --config configs/distill_fashion_mnist.ini "${COMMON[@]}" \
  --teacher "$TEACHER" --teacher-ema "$EMA" --out "$PD" --start-steps 16 --target-steps 1 \
  --steps-per-round "$R" --guidance-scale "$G" >>"$PD.log" 2>&1
CD=$OUT/cd
want cd && timed cd "${MPI[@]}" $BIN/diffusion-distill --config configs/distill_fashion_mnist.ini "${COMMON[@]}" \
  --method consistency --teacher "$TEACHER" --teacher-ema "$EMA" --out "$CD" \
  --steps-per-round $((3 * R)) --guidance-scale "$G" --lr 1e-4 --lr-decay cosine >>"$CD.log" 2>&1
CT=$OUT/ct
want ct && timed ct "${MPI[@]}" $BIN/diffusion-train --config configs/fashion_mnist.ini "${COMMON[@]}" \
  --objective consistency --prediction v --steps "$CT_STEPS" --warmup 100 --out "$CT" >>"$CT.log" 2>&1
CLS=$OUT/classifier
want classifier && timed classifier "${MPI[@]}" $BIN/diffusion-train --config configs/fashion_mnist.ini "${COMMON[@]}" \
  --objective classifier --class-cond false --p-uncond 0 --steps "$CLS_STEPS" --warmup 50 --lr 1e-3 --out "$CLS" >>"$CLS.log" 2>&1

# family | label | NFE | checkpoint | sampler options. NFE counts network evaluations per sample
# as the sampler steps do; guidance's doubled batch and the classifier's pass are in the times.
TGUIDE=(--ema "$EMA" --guidance-scale "$G")
ROWS=("teacher DDIM, guidance $G|teacher-ddim-4|4|$TEACHER|--sampler ddim --steps 4 ${TGUIDE[*]}"
      "teacher DDIM, guidance $G|teacher-ddim-20|20|$TEACHER|--sampler ddim --steps 20 ${TGUIDE[*]}")
for s in 1 2 4; do
  want progressive && ROWS+=("progressive student|progressive-$s|$s|$PD/steps-$s|")
  want cd && ROWS+=("consistency distillation|cd-$s|$s|$CD/consistency|--steps $s")
  want ct && ROWS+=("consistency training|ct-$s|$s|$CT|--steps $s")
done
if want cfg; then
  for w in 1 1.5 2 3; do
    ROWS+=("classifier-free guidance, DDIM-20|cfg-$w|20|$TEACHER|--sampler ddim --steps 20 --ema $EMA --guidance-scale $w")
  done
fi
if want classifier; then
  for c in 2 6; do
    ROWS+=("classifier guidance, DDIM-20|cg-$c|20|$TEACHER|--sampler ddim --steps 20 --ema $EMA --classifier $CLS --classifier-scale $c")
  done
fi
for row in "${ROWS[@]}"; do
  IFS='|' read -r family tag nfe checkpoint options <<<"$row"
  if [ ! -f "$OUT/$tag.json" ]; then
    rm -rf "${OUT:?}/$tag"
    # shellcheck disable=SC2086
    timed "$tag" "${MPI[@]}" $BIN/diffusion-sample --checkpoint "$checkpoint" --num-samples "$N" \
      --precision bf16 --seed 1 --threads 1 --out "$OUT/$tag" $options >"$OUT/$tag.log" 2>&1
    $BIN/diffusion-eval --samples "$OUT/$tag/samples.h5" --reference "$DATA" \
      --json "$OUT/$tag.json" --threads "$RANKS" >"$OUT/$tag.eval.log" 2>&1
    rm -f "$OUT/$tag/samples.h5"  # the score and grid.png are what the docs need
  fi
  echo "$tag: $(grep -o '"frechet_distance": *[0-9.]*' "$OUT/$tag.json")"
done
for row in "${ROWS[@]}"; do  # a grid per row
  IFS='|' read -r family tag nfe checkpoint options <<<"$row"
  cp "$OUT/$tag/grid.png" "docs/results/${GRIDS}_$tag.png"
done
"$PY" - "$OUT" "docs/results/${GRIDS}_guidance.png" "$GRIDS" "${ROWS[@]}" <<'PYEOF' | tee "$OUT/table.md"
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
out, png, grids, rows = sys.argv[1], sys.argv[2], sys.argv[3], [r.split("|") for r in sys.argv[4:]]
times = {}
for line in open(f"{out}/times.txt"):
    name, sec = line.split()
    times[name] = float(sec)
print("| model / sampler | steps | Fréchet | class accuracy | sampling s | grid |")
print("|---|---|---|---|---|---|")
guidance = {}
for family, tag, nfe, ckpt, opts in rows:
    e = json.load(open(f"{out}/{tag}.json"))
    fd, acc = e["frechet_distance"], e["conditional_accuracy"]
    t = f"{times[tag]:.0f}" if tag in times else "–"
    scale = f", scale {tag.split('-', 1)[1]}" if tag.startswith(("cfg-", "cg-")) else ""
    print(f"| {family}{scale} | {nfe} | {fd:.2f} | {acc:.3f} | {t} | ![](results/{grids}_{tag}.png) |")
    if tag.startswith(("cfg-", "cg-")):
        guidance.setdefault(family, []).append((acc, fd, tag.split("-", 1)[1]))
    if tag == "cfg-1":  # no guidance at all: where the classifier's curve starts too (s = 0)
        guidance.setdefault("classifier guidance, DDIM-20", []).append((acc, fd, "0"))
fig, ax = plt.subplots(figsize=(6.0, 4.2))
for family, pts in guidance.items():
    pts.sort()
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=family)
    for acc, fd, scale in pts:
        ax.annotate(f"s={scale}", (acc, fd), textcoords="offset points", xytext=(4, 4), fontsize=7)
ax.set_xlabel("class accuracy"); ax.set_ylabel("Fréchet distance (classifier features)")
ax.set_title("Fashion-MNIST: classifier against classifier-free guidance\n(DDIM-20, 2000 samples)", fontsize=10)
if guidance:  # only when the guidance rows were made (PARTS)
    ax.legend(fontsize=8); fig.tight_layout(); fig.savefig(png, dpi=110)
PYEOF
