#!/usr/bin/env bash
# Side-by-side DDIM-50 sampling throughput: diffusion-sample against a PyTorch loop over diffusers'
# DDIMScheduler (bench/sample_peer.py), on the Fashion-MNIST UNet of configs/fashion_mnist.ini
# (class-conditional, 28x28x1; 1,624,577 parameters in the measured run, 1,114,209 with the
# 1-block config now), same batch, one thread, both pinned to the same core, in one run.
# Three timings of N samples each:
#   ours_ts      diffusion-sample --torchscript unet.pt (the peer's network, traced to TorchScript)
#   ours_native  diffusion-sample --checkpoint (our C++ UNet, same architecture, from a 1-step run)
#   peer         the diffusers loop over the same unet.pt, and that network's forward passes alone
# diffusion-sample's samples/s is its own progress figure (generation loop, model load excluded);
# the peer times its loop the same way. Builds nothing: run ./launch/build.sh first. Prints a
# markdown table (also written to runs/sample_bench/table.md); logs stay in runs/sample_bench/.
#
# Environment overrides: N (64), BATCH (64), STEPS (50), CORE (0), THREADS (1), ROUNDS (1; the
# median of the rounds is reported).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-64} BATCH=${BATCH:-64} STEPS=${STEPS:-50} CORE=${CORE:-0} THREADS=${THREADS:-1} ROUNDS=${ROUNDS:-1}
PY=${PY:-$PWD/.venv/bin/python}
BIN=build/bin
OUT=runs/sample_bench
CONFIG=configs/fashion_mnist.ini

for f in "$BIN/diffusion-sample" "$BIN/diffusion-train" "$PY"; do
  [[ -x $f ]] || { echo "sample_bench: $f is missing; run ./launch/setup.sh and ./launch/build.sh" >&2; exit 1; }
done
CORES=$(nproc)  # before OMP_NUM_THREADS is set: nproc honours it
export OMP_NUM_THREADS=$THREADS OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
PIN=(taskset -c "$CORE")
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
rm -rf "$OUT" && mkdir -p "$OUT"

# The network: the peer's UNet traced to TorchScript, and our own UNet in a checkpoint (one
# training step on 64 random images; the weights do not change the time).
"$PY" bench/sample_peer.py export --config "$CONFIG" --out "$OUT/unet.pt" >"$OUT/export.log"
"$PY" - "$OUT/tiny.h5" <<'EOF'
import sys, h5py, numpy as np
rng = np.random.default_rng(0)
with h5py.File(sys.argv[1], "w") as f:
    f.create_dataset("images", data=rng.integers(0, 256, (64, 28, 28, 1), dtype=np.uint8),
                     maxshape=(None, 28, 28, 1), chunks=(64, 28, 28, 1))
    f.create_dataset("labels", data=(np.arange(64) % 10).astype(np.int64), maxshape=(None,), chunks=(64,))
    f.attrs["num_classes"] = np.int64(10)
EOF
"$BIN/diffusion-train" --config "$CONFIG" --data "$OUT/tiny.h5" --out "$OUT/run" --steps 1 --threads "$THREADS" \
  --checkpoint-every 1 --log-every 1 >"$OUT/train.log" 2>&1 || { tail -20 "$OUT/train.log" >&2; exit 1; }

COMMON=(--num-samples "$N" --batch-size "$BATCH" --steps "$STEPS" --sampler ddim --threads "$THREADS")
ours() {  # ours TAG MODEL-ARGS... → samples/s from the last progress line
  local tag=$1
  shift
  "${PIN[@]}" "$BIN/diffusion-sample" "$@" "${COMMON[@]}" --out "$OUT/$tag" >"$OUT/$tag.log" 2>&1 ||
    { tail -20 "$OUT/$tag.log" >&2; exit 1; }
  sed -n 's/.* \([0-9.]*\) samples\/s.*/\1/p' "$OUT/$tag.log" | tail -1
}
# ROUNDS rounds, the three programs in turn in each; the median rate of each over the rounds
# (robust to a round that a co-running process slowed down or left alone).
median() { "$PY" -c "import sys, statistics; print(statistics.median(float(v) for v in sys.argv[1:]))" "$@"; }
ts_rates=() native_rates=() peer_rates=() forward_rates=()
for round in $(seq 1 "$ROUNDS"); do
  ts_rates+=("$(ours "ours_ts_$round" --torchscript "$OUT/unet.pt" --sample-shape 1,28,28 --num-classes 10)")
  "${PIN[@]}" "$PY" bench/sample_peer.py run --model "$OUT/unet.pt" --num-samples "$N" --batch-size "$BATCH" \
    --steps "$STEPS" --threads "$THREADS" >"$OUT/peer_$round.log" 2>&1 || { cat "$OUT/peer_$round.log" >&2; exit 1; }
  peer_rates+=("$(sed -n 's/^ddim //p' "$OUT/peer_$round.log")")
  forward_rates+=("$(sed -n 's/^forward //p' "$OUT/peer_$round.log")")
  native_rates+=("$(ours "ours_native_$round" --checkpoint "$OUT/run")")
done
ours_ts=$(median "${ts_rates[@]}") ours_native=$(median "${native_rates[@]}")
peer=$(median "${peer_rates[@]}") forward=$(median "${forward_rates[@]}")
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

ratio() { "$PY" -c "print(f'{$1 / $2:.2f}')"; }
{
  echo "Machine: $CORES cores, $(lscpu | sed -n 's/^Model name: *//p' | head -1); torch $("$PY" -c 'import torch; print(torch.__version__)'); diffusers $("$PY" -c 'import diffusers; print(diffusers.__version__)');"
  echo "commit $(git rev-parse --short HEAD); DDIM-$STEPS, N = $N, batch $BATCH, $THREADS thread(s), pinned to core $CORE, median of $ROUNDS round(s);"
  echo "rates per round: ours TorchScript ${ts_rates[*]}; ours native ${native_rates[*]}; peer ${peer_rates[*]}; forward ${forward_rates[*]};"
  echo "load average before: $LOAD_BEFORE, after: $LOAD_AFTER (anything else running on the core skews the numbers)."
  echo
  echo "| sampler | network | samples/s | vs peer | vs forward alone |"
  echo "| --- | --- | --- | --- | --- |"
  echo "| diffusion-sample | TorchScript (traced peer UNet) | $ours_ts | $(ratio "$ours_ts" "$peer") | $(ratio "$ours_ts" "$forward") |"
  echo "| diffusion-sample | native C++ UNet (checkpoint) | $ours_native | $(ratio "$ours_native" "$peer") | $(ratio "$ours_native" "$forward") |"
  echo "| diffusers DDIMScheduler loop | TorchScript (same file) | $peer | 1.00 | $(ratio "$peer" "$forward") |"
  echo "| forward passes alone | TorchScript (same file) | $forward | | 1.00 |"
} | tee "$OUT/table.md"
