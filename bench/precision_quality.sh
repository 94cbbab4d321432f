#!/usr/bin/env bash
# Training precision against sample quality: configs/fashion_mnist.ini trained for STEPS steps in
# fp32 and in bf16, each with two seeds (the spread between seeds is the noise), then N samples
# each (DDIM, SAMPLE_STEPS steps, classes spread, guidance scale 3; every model sampled the same
# way, in SAMPLE_PRECISION) scored by diffusion-eval against the training set. Each training run
# uses one rank with one thread; the two seeds of a precision run side by side, one per core.
# Builds nothing: run ./launch/build.sh first. Prints a markdown table (runs/precision_quality/table.md).
# Environment overrides: STEPS (400), N (500), SAMPLE_STEPS (20), SAMPLE_PRECISION (bf16), SEEDS ("0 1").
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-400} N=${N:-500} SAMPLE_STEPS=${SAMPLE_STEPS:-20} SAMPLE_PRECISION=${SAMPLE_PRECISION:-bf16}
SEEDS=${SEEDS:-"0 1"}
BIN=build/bin
OUT=runs/precision_quality
DATA=data/fashion_mnist_train.h5
F=/usr/share/datasets/fashion-mnist
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none OMP_NUM_THREADS=1
mkdir -p data "$OUT"
[ -f "$DATA" ] || $BIN/diffusion-data import-idx --images $F/train-images-idx3-ubyte.gz \
  --labels $F/train-labels-idx1-ubyte.gz --out "$DATA"

for precision in fp32 bf16; do
  core=0
  for seed in $SEEDS; do
    run=$OUT/${precision}_seed$seed
    # One rank on its own core; a re-run resumes a finished run (nothing to do).
    mpirun -np 1 --bind-to none taskset -c $((core % $(nproc))) $BIN/diffusion-train --config configs/fashion_mnist.ini \
      --out "$run" --steps "$STEPS" --seed "$seed" --precision "$precision" --threads 1 \
      --checkpoint-every "$STEPS" > "$run.train.log" 2>&1 &
    core=$((core + 1))
  done
  wait
done

rows=()
for precision in fp32 bf16; do
  for seed in $SEEDS; do
    run=$OUT/${precision}_seed$seed
    rm -rf "$run.samples"
    mpirun -np 2 $BIN/diffusion-sample --checkpoint "$run" --num-samples "$N" --steps "$SAMPLE_STEPS" \
      --guidance-scale 3 --precision "$SAMPLE_PRECISION" --seed 1 --out "$run.samples" > "$run.sample.log" 2>&1
    $BIN/diffusion-eval --samples "$run.samples/samples.h5" --reference "$DATA" --json "$run.eval.json" \
      > "$run.eval.log" 2>&1
    rows+=("$(.venv/bin/python - "$precision" "$seed" "$run" <<'EOF'
import json, sys
precision, seed, run = sys.argv[1:4]
e = json.load(open(run + ".eval.json"))
m = [json.loads(l) for l in open(run + "/metrics.jsonl")]
rate = len(m) / sum(1.0 / r["images_per_s"] for r in m)
fd = e["frechet_distance"]
acc = e["conditional_accuracy"]
print(f"| {precision} | {seed} | {m[-1]['images_seen']} | {rate:.1f} | {m[-1]['loss']:.4f} | {fd:.2f} | {acc:.3f} |")
EOF
)")
  done
done
{
  echo "configs/fashion_mnist.ini, $STEPS steps of batch 64, one rank with one thread per run; $N samples each, DDIM-$SAMPLE_STEPS, guidance 3, sampled in $SAMPLE_PRECISION; commit $(git rev-parse --short HEAD)."
  echo
  echo "| training precision | seed | images seen | img/s | last loss | diffusion-eval Fréchet | class accuracy |"
  echo "| --- | --- | --- | --- | --- | --- | --- |"
  printf '%s\n' "${rows[@]}"
} | tee "$OUT/table.md"
