#!/usr/bin/env bash
# Side-by-side training throughput: diffusion-train (mpirun) against the PyTorch DDP peer
# (bench/train_peer.py over gloo) on the same config, global batch, threads per rank and number
# of steps, at W = 1 and 2 ranks and in fp32 and bf16 (ours: --precision bf16; the peer:
# torch.autocast(bfloat16) around the forward, its best setting here), for the Fashion-MNIST UNet
# and the toy MLP. Builds nothing:
# run ./launch/build.sh first. Prints a markdown table (also written to runs/bench/table.md);
# the logs of every run are kept under runs/bench/.
#
# Timing: both programs run WARMUP untimed steps, then TIMED timed steps. diffusion-train logs
# every WARMUP steps, so its first metrics record covers exactly the warm-up; its images/s is
# the total images over the total time of the later records (the harmonic mean of their
# images_per_s). The peer times the same steps with a clock started after a barrier.
#
# Environment overrides: THREADS (per rank, default 1), WS ("1 2"), PRECISIONS ("fp32 bf16"), UNET_WARMUP/UNET_TIMED
# (10/60), MLP_WARMUP/MLP_TIMED (50/500), UNET_BATCH (64), MLP_BATCH (256), BIND (core | none),
# QUIET_WAIT (600 s).
set -euo pipefail
cd "$(dirname "$0")/.."

THREADS=${THREADS:-1}
WS=${WS:-"1 2"}
PRECISIONS=${PRECISIONS:-"fp32 bf16"}
UNET_WARMUP=${UNET_WARMUP:-10} UNET_TIMED=${UNET_TIMED:-60} UNET_BATCH=${UNET_BATCH:-64}
MLP_WARMUP=${MLP_WARMUP:-50} MLP_TIMED=${MLP_TIMED:-500} MLP_BATCH=${MLP_BATCH:-256}
PY=${PY:-$PWD/.venv/bin/python}
BIN=build/bin
OUT=runs/bench
FMNIST=data/fashion_mnist_train.h5
GMM=data/gmm_ring.h5
IDX=/usr/share/datasets/fashion-mnist

for f in "$BIN/diffusion-train" "$BIN/diffusion-data" "$PY"; do
  [[ -x $f ]] || { echo "train_bench: $f is missing; run ./launch/setup.sh and ./launch/build.sh" >&2; exit 1; }
done

CORES=$(nproc)  # before OMP_NUM_THREADS is set: nproc honours it
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# Open MPI as root in a container; one OpenMP thread unless --threads asks for more. Binding:
# BIND=core (the default) pins rank r to core r in both programs (mpirun's own default for
# np <= 2; the peer pins itself, torchrun does not); BIND=none leaves both to the scheduler.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
export OMP_NUM_THREADS=$THREADS
BIND=${BIND:-core}
MPIRUN=(mpirun --bind-to "$BIND")
PEER_BIND=()
[[ $BIND == core ]] && PEER_BIND=(--bind-core)

mkdir -p data "$OUT"
if [[ ! -f $FMNIST ]]; then
  "$BIN/diffusion-data" import-idx --images "$IDX/train-images-idx3-ubyte.gz" \
    --labels "$IDX/train-labels-idx1-ubyte.gz" --out "$FMNIST"
fi
if [[ ! -f $GMM ]]; then
  "$BIN/diffusion-data" make-toy --kind gmm-ring --num 50000 --seed 0 --out "$GMM"
fi

# ours TAG CONFIG DATA W BATCH WARMUP TIMED PRECISION → prints "IMG_PER_S PARAMS"
ours() {
  local name=$1 config=$2 data=$3 w=$4 batch=$5 warmup=$6 timed=$7 precision=$8
  local run=$OUT/ours_${name}_${precision}_w$w log=$OUT/ours_${name}_${precision}_w$w.log
  rm -rf "$run"
  "${MPIRUN[@]}" -np "$w" "$BIN/diffusion-train" --config "$config" --data "$data" --out "$run" \
    --steps $((warmup + timed)) --batch-size "$batch" --threads "$THREADS" --log-every "$warmup" \
    --precision "$precision" --device cpu \
    --checkpoint-every 100000000 > "$log" 2>&1 || { tail -20 "$log" >&2; exit 1; }
  local params
  params=$(sed -n 's/.* with \([0-9]*\) parameters.*/\1/p' "$log" | head -1)
  "$PY" - "$run/metrics.jsonl" "$params" <<'EOF'
import json, sys
records = [json.loads(line) for line in open(sys.argv[1])][1:]  # the first record is the warm-up
rate = len(records) / sum(1.0 / r["images_per_s"] for r in records)  # equal images per record
print(f"{rate:.1f} {sys.argv[2]}")
EOF
}

# peer TAG CONFIG DATA W BATCH WARMUP TIMED PRECISION → prints "IMG_PER_S PARAMS"
peer() {
  local name=$1 config=$2 data=$3 w=$4 batch=$5 warmup=$6 timed=$7 precision=$8
  local log=$OUT/peer_${name}_${precision}_w$w.log
  "$PY" -m torch.distributed.run --standalone --nproc_per_node "$w" bench/train_peer.py \
    --config "$config" --data "$data" --batch-size "$batch" --threads "$THREADS" --precision "$precision" \
    --warmup-steps "$warmup" --timed-steps "$timed" "${PEER_BIND[@]}" > "$log" 2>&1 || { tail -20 "$log" >&2; exit 1; }
  local rate params
  rate=$(sed -n 's/^\[peer\] images\/s \([0-9.]*\) .*/\1/p' "$log")
  params=$(sed -n 's/.* with \([0-9]*\) parameters.*/\1/p' "$log" | head -1)
  echo "$rate $params"
}

# Other processes on the same cores (a build, someone's tests) slow either program down, and
# diffusion-train's W = 2 runs far more than the peer's (see docs/benchmarks.md). A background
# sampler records every process that is not a descendant of this script and takes more than 20%
# of a core; each measurement first waits (up to QUIET_WAIT seconds) for a quiet machine, and the
# table reports how many such samples fell inside it.
QUIET_WAIT=${QUIET_WAIT:-600}
FOREIGN=$OUT/foreign_cpu.log
: > "$FOREIGN"
is_ours() {
  local pid=$1
  while [[ -n $pid && $pid -gt 1 ]]; do
    [[ $pid == "$$" ]] && return 0
    pid=$(ps -o ppid= -p "$pid" 2>/dev/null | tr -d ' ')
  done
  return 1
}
sample_foreign() {
  while :; do
    top -b -n 2 -d 0.5 -w 200 | awk '/^top -/ { frame++ } frame == 2 && $1 ~ /^[0-9]+$/ && $9 + 0 > 20 { print $1, $9, $12 }' |
      while read -r pid cpu comm; do
        is_ours "$pid" || echo "$(date +%T) pid $pid $cpu% $comm"
      done >> "$FOREIGN"
    sleep 1
  done
}
sample_foreign &
SAMPLER=$!
trap 'kill $SAMPLER 2>/dev/null' EXIT
wait_quiet() {  # until 10 s pass with no foreign sample, or QUIET_WAIT runs out
  local waited=0 lines
  while ((waited < QUIET_WAIT)); do
    lines=$(wc -l < "$FOREIGN")
    sleep 10
    waited=$((waited + 10))
    (($(wc -l < "$FOREIGN") == lines)) && return 0
  done
  echo "[bench] the machine did not become quiet in ${QUIET_WAIT}s; measuring anyway" >&2
}

rows=()
measure() {  # TAG NAME CONFIG DATA BATCH WARMUP TIMED
  local tag=$1 name=$2 config=$3 data=$4 batch=$5 warmup=$6 timed=$7
  local before after key
  local -A o p f
  local o_params p_params result
  for precision in $PRECISIONS; do
    for w in $WS; do
      key=${precision}_$w
      wait_quiet
      before=$(wc -l < "$FOREIGN")
      echo "[bench] $name $precision W=$w: diffusion-train ..." >&2
      result=$(ours "$tag" "$config" "$data" "$w" "$batch" "$warmup" "$timed" "$precision")
      read -r "o[$key]" o_params <<< "$result"
      echo "[bench] $name $precision W=$w: PyTorch DDP peer ..." >&2
      result=$(peer "$tag" "$config" "$data" "$w" "$batch" "$warmup" "$timed" "$precision")
      read -r "p[$key]" p_params <<< "$result"
      echo "[bench] $name $precision W=$w: ours ${o[$key]} img/s, peer ${p[$key]} img/s" >&2
      after=$(wc -l < "$FOREIGN")
      f[$key]=$((after - before))
      if ((after > before)); then
        echo "[bench] $name $precision W=$w: other processes were busy during the measurement:" >&2
        sed -n "$((before + 1)),${after}p" "$FOREIGN" | head -5 >&2
      fi
    done
  done
  if [[ $o_params != "$p_params" ]]; then
    echo "train_bench: $name parameter counts differ: diffusion-train $o_params, peer $p_params" >&2
    exit 1
  fi
  for precision in $PRECISIONS; do
    for w in $WS; do
      key=${precision}_$w
      rows+=("$("$PY" -c '
import sys
name, precision, w, params = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
o, p, o1, p1, o32 = map(float, sys.argv[5:10])
foreign = sys.argv[10]
eff = lambda r, r1: "—" if w == 1 or r1 == 0 else f"{r / (w * r1):.2f}"
vs32 = "—" if precision == "fp32" or o32 == 0 else f"{o / o32:.2f}"
print(f"| {name} ({params} params) | {precision} | {w} | {o:.1f} | {p:.1f} | {o / p:.2f} | {vs32} | {eff(o, o1)} | {eff(p, p1)} | {foreign} |")
' "$name" "$precision" "$w" "$o_params" "${o[$key]}" "${p[$key]}" "${o[${precision}_1]:-0}" "${p[${precision}_1]:-0}" \
        "${o[fp32_$w]:-0}" "${f[$key]}")")
    done
  done
}

measure unet "fashion_mnist UNet, batch $UNET_BATCH" configs/fashion_mnist.ini "$FMNIST" \
  "$UNET_BATCH" "$UNET_WARMUP" "$UNET_TIMED"
measure mlp "toy_2d MLP, batch $MLP_BATCH" configs/toy_2d.ini "$GMM" "$MLP_BATCH" "$MLP_WARMUP" "$MLP_TIMED"

commit=$(git rev-parse --short HEAD)
git diff --quiet HEAD -- core trainer datasets CMakeLists.txt 2>/dev/null || commit="$commit + uncommitted changes"
{
  echo "Machine: $CORES cores, $(lscpu | sed -n 's/^Model name: *//p'); torch $("$PY" -c 'import torch; print(torch.__version__)');"
  echo "commit $commit; $THREADS thread(s) per rank; binding: $BIND; warm-up/timed steps: UNet $UNET_WARMUP/$UNET_TIMED, MLP $MLP_WARMUP/$MLP_TIMED;"
  echo "load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg) (anything else running on the cores skews the numbers)."
  echo
  echo "| config | precision | W | diffusion-train img/s | PyTorch DDP img/s | ratio (ours/peer) | ours bf16/fp32 | scaling eff. (ours) | scaling eff. (peer) | foreign CPU samples |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  printf '%s\n' "${rows[@]}"
} | tee "$OUT/table.md"
