#!/usr/bin/env bash
# Quality per hour (issue #13): trains the Fashion-MNIST fixed-budget recipe (configs/fashion_mnist.ini)
# once per seed on 2 ranks,
# scores every kept checkpoint (the curve) and the final one (the goal's figure) with
# diffusion-eval, and draws Fréchet distance against training wall clock, the loss curves and a
# class grid for docs/results.md.
#   bench/fashion_budget.sh [SEED ...]        default seeds: 0 1
# Environment overrides:
#   CONFIG (configs/fashion_mnist.ini), RANKS (2), N (2000 final samples), CURVE_N (500 samples per
#   curve point), GUIDE (the config's recommended guidance scale, 3), INTERVAL (where guidance
#   applies, --guidance-interval: 0.28,5.42; all = every step), EMA (auto: the slowest
#   rate the run kept), CURVE (1; 0 scores the final checkpoint only), STEPS_DDIM (50),
#   EVERY (400: checkpoint spacing of the curve), OUT (runs/fashion_budget), CLOCK_RATE (unset: the
#   plot's clock is each run's own; a rate in images/s draws every run at that rate instead, for
#   runs trained on machines slower than those the budget is stated for: 199, docs/results.md).
# A run folder that is complete is not trained again (diffusion-train resumes an unfinished one);
# samples and scores that exist are kept. Builds nothing: run ./launch/build.sh first.
# Writes $OUT/seed<S>/ (run), $OUT/seed<S>_eval/ (samples, eval JSON), $OUT/table.md and
# docs/results/fashion_budget_*.png.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${CONFIG:-configs/fashion_mnist.ini}
N=${N:-2000}
CURVE_N=${CURVE_N:-500}
GUIDE=${GUIDE:-3}
INTERVAL=${INTERVAL:-0.28,5.42}
EMA=${EMA:-auto}
CURVE=${CURVE:-1}
STEPS_DDIM=${STEPS_DDIM:-50}
EVERY=${EVERY:-400}
OUT=${OUT:-runs/fashion_budget}
SEEDS=("$@")
[ ${#SEEDS[@]} -gt 0 ] || SEEDS=(0 1)
. bench/common.sh
DATA=data/fashion_mnist_train.h5
F=/usr/share/datasets/fashion-mnist
mkdir -p data docs/results "$OUT"
[ -f "$DATA" ] || $BIN/diffusion-data import-idx --images $F/train-images-idx3-ubyte.gz \
  --labels $F/train-labels-idx1-ubyte.gz --out "$DATA"

score() {  # checkpoint out_dir num_samples: DDIM samples with the recommended guidance, scored
  local ckpt=$1 dir=$2 n=$3
  if [ ! -f "$dir/eval.json" ]; then
    rm -rf "$dir"
    "${MPI[@]}" $BIN/diffusion-sample --checkpoint "$ckpt" --num-samples "$n" --sampler ddim \
      --steps "$STEPS_DDIM" --guidance-scale "$GUIDE" --guidance-interval "$INTERVAL" --ema "$EMA" --precision bf16 --seed 1 --threads 1 \
      --out "$dir" >"$dir.log" 2>&1
    $BIN/diffusion-eval --samples "$dir/samples.h5" --reference "$DATA" --json "$dir/eval.json" \
      --threads "$RANKS" >>"$dir.log" 2>&1
  fi
  echo "  $dir: $(grep -o '"frechet_distance": *[0-9.]*' "$dir/eval.json")"
}

for S in "${SEEDS[@]}"; do
  RUN=$OUT/seed$S
  echo "seed $S: training $CONFIG on $RANKS ranks into $RUN"
  "${MPI[@]}" $BIN/diffusion-train --config "$CONFIG" --seed "$S" --out "$RUN" --threads 1 \
    --checkpoint-every "$EVERY" --keep-checkpoints 1000 >>"$RUN.log" 2>&1
  EVAL=$OUT/seed${S}_eval
  mkdir -p "$EVAL"
  [ "$CURVE" = 1 ] && for ckpt in "$RUN"/checkpoints/step-*; do
    score "$ckpt" "$EVAL/curve_$(basename "$ckpt")" "$CURVE_N"
  done
  score "$RUN" "$EVAL/final" "$N"
done

rate=(); [ -n "${CLOCK_RATE:-}" ] && rate=(--clock-rate "$CLOCK_RATE")
"$PY" bench/fashion_budget_plot.py --out "$OUT" --guide "$GUIDE" --steps-ddim "$STEPS_DDIM" "${rate[@]}" \
  "${SEEDS[@]/#/$OUT/seed}"
