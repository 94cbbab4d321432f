#!/usr/bin/env bash
# What the collective watchdog (--collective-timeout, docs/launch.md "Stuck ranks") costs in
# training throughput: diffusion-train at W = 2 with the watchdog off (0) and on (the default
# 300 s), alternated ROUNDS times so that drift on the machine hits both alike, for the
# Fashion-MNIST UNet (bf16, its shipped precision) and the toy MLP (fp32; small steps, so the
# most collectives per second). Images/s as in bench/train_bench.sh: after a warm-up record, the
# harmonic mean of the metrics records. Prints a markdown table; logs under runs/bench/watchdog/.
# Environment: ROUNDS (3), UNET_WARMUP/UNET_TIMED (10/60), MLP_WARMUP/MLP_TIMED (50/500).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
UNET_WARMUP=${UNET_WARMUP:-10} UNET_TIMED=${UNET_TIMED:-60}
MLP_WARMUP=${MLP_WARMUP:-50} MLP_TIMED=${MLP_TIMED:-500}
PY=${PY:-$PWD/.venv/bin/python}
BIN=build/bin
OUT=runs/bench/watchdog
FMNIST=data/fashion_mnist_train.h5
GMM=data/gmm_ring.h5
IDX=/usr/share/datasets/fashion-mnist
for f in "$BIN/diffusion-train" "$BIN/diffusion-data" "$PY"; do
  [[ -x $f ]] || { echo "watchdog_overhead: $f is missing; run ./launch/setup.sh and ./launch/build.sh" >&2; exit 1; }
done
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none OMP_NUM_THREADS=1
mkdir -p data "$OUT"
[[ -f $FMNIST ]] || "$BIN/diffusion-data" import-idx --images "$IDX/train-images-idx3-ubyte.gz" \
  --labels "$IDX/train-labels-idx1-ubyte.gz" --out "$FMNIST"
[[ -f $GMM ]] || "$BIN/diffusion-data" make-toy --kind gmm-ring --num 50000 --seed 0 --out "$GMM"

# rate NAME CONFIG DATA BATCH WARMUP TIMED PRECISION TIMEOUT → images/s
rate() {
  local name=$1 config=$2 data=$3 batch=$4 warmup=$5 timed=$6 precision=$7 timeout=$8
  local run=$OUT/${name}_t$timeout log=$OUT/${name}_t$timeout.log
  rm -rf "$run"
  mpirun --bind-to core -np 2 "$BIN/diffusion-train" --config "$config" --data "$data" --out "$run" \
    --steps $((warmup + timed)) --batch-size "$batch" --threads 1 --log-every "$warmup" \
    --precision "$precision" --device cpu --collective-timeout "$timeout" \
    --checkpoint-every 100000000 >"$log" 2>&1 || { tail -20 "$log" >&2; exit 1; }
  "$PY" - "$run/metrics.jsonl" <<'EOF'
import json, sys
records = [json.loads(line) for line in open(sys.argv[1])][1:]  # the first record is the warm-up
print(f"{len(records) / sum(1.0 / r['images_per_s'] for r in records):.1f}")
EOF
}

echo "| network | precision | watchdog off (img/s) | on, 300 s (img/s) | on / off |"
echo "| --- | --- | --- | --- | --- |"
for net in unet mlp; do
  if [[ $net == unet ]]; then
    args=(configs/fashion_mnist.ini "$FMNIST" 64 "$UNET_WARMUP" "$UNET_TIMED" bf16)
  else
    args=(configs/toy_2d.ini "$GMM" 256 "$MLP_WARMUP" "$MLP_TIMED" fp32)
  fi
  off=() on=()
  for ((r = 0; r < ROUNDS; r++)); do
    off+=("$(rate "$net" "${args[@]}" 0)")
    on+=("$(rate "$net" "${args[@]}" 300)")
  done
  "$PY" - "$net" "${args[5]}" "${off[*]}" "${on[*]}" <<'EOF'
import statistics, sys
net, precision = sys.argv[1], sys.argv[2]
off = [float(v) for v in sys.argv[3].split()]
on = [float(v) for v in sys.argv[4].split()]
fmt = lambda v: " / ".join(f"{x:.0f}" for x in v)
print(f"| {net} | {precision} | {fmt(off)} | {fmt(on)} | {statistics.median(on) / statistics.median(off):.3f} |")
EOF
done
