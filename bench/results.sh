#!/usr/bin/env bash
# Reproduces the tables of docs/results.md: a teacher sampled with DDPM-1000 and DDIM at 100, 50,
# 20, 8 and 4 steps against progressively distilled students at 8, 4, 2 and 1 steps, each scored
# by diffusion-eval, with the wall time of each row and a sample grid (PNG) per row.
#   bench/results.sh toy       gmm-ring toy set: configs/toy_2d.ini, configs/distill_toy.ini
#   bench/results.sh fashion   Fashion-MNIST: configs/fashion_mnist.ini, configs/distill_fashion_mnist.ini
# Trains the teacher and runs the distillation when their run folders are missing or unfinished
# (both resume), on 2 ranks with one thread each. Builds nothing: run ./launch/build.sh first.
# Writes runs/results_<set>/ (samples, eval JSON, table.md, timings) and docs/results/<set>_*.png.
# Environment overrides: N (samples per row; 5000 toy, 250 fashion), RANKS (2).
set -euo pipefail
cd "$(dirname "$0")/.."
SET=${1:?usage: bench/results.sh toy|fashion}
RANKS=${RANKS:-2}
PY=$PWD/.venv/bin/python
BIN=build/bin
MPI=(mpirun -np "$RANKS")
[ "$(id -u)" -eq 0 ] && MPI+=(--allow-run-as-root)
[ "$(nproc)" -lt "$RANKS" ] && MPI+=(--oversubscribe)
export OMP_NUM_THREADS=1
mkdir -p data docs/results

case $SET in
  toy)
    DATA=data/gmm_ring.h5 TEACHER=runs/toy_2d TRAIN=configs/toy_2d.ini DISTILL=configs/distill_toy.ini
    STUDENTS=runs/toy_2d_distill N=${N:-5000} GUIDE=()
    [ -f "$DATA" ] || $BIN/diffusion-data make-toy --kind gmm-ring --num 50000 --seed 0 --out "$DATA"
    # Exact samples of the mixture (another seed): the floor of every metric at this N.
    REAL=runs/results_toy/real.h5 ;;
  fashion)
    DATA=data/fashion_mnist_train.h5 TEACHER=runs/fashion_mnist TRAIN=configs/fashion_mnist.ini
    DISTILL=configs/distill_fashion_mnist.ini STUDENTS=runs/fashion_mnist_distill N=${N:-250}
    GUIDE=(--guidance-scale 2)
    F=/usr/share/datasets/fashion-mnist
    [ -f "$DATA" ] || $BIN/diffusion-data import-idx --images $F/train-images-idx3-ubyte.gz \
      --labels $F/train-labels-idx1-ubyte.gz --out "$DATA"
    # N held-out test images: the floor of every metric at this N.
    REAL=runs/results_fashion/real.h5 ;;
  *) echo "usage: bench/results.sh toy|fashion" >&2; exit 2 ;;
esac
OUT=runs/results_$SET
mkdir -p "$OUT"
TIMES=$OUT/times.txt
touch "$TIMES"  # append-only: a re-run that finds a result complete adds a short entry
timed() {  # name command...: appends "name seconds" to $TIMES
  local name=$1; shift
  local t0; t0=$(date +%s.%N)
  "$@"
  echo "$name $(echo "$(date +%s.%N) - $t0" | bc)" >>"$TIMES"
}

timed teacher_training "${MPI[@]}" $BIN/diffusion-train --config "$TRAIN" --threads 1 >"$OUT/teacher.log" 2>&1
timed distillation "${MPI[@]}" $BIN/diffusion-distill --config "$DISTILL" --threads 1 >"$OUT/distill.log" 2>&1

if [ "$SET" = toy ]; then
  [ -f "$REAL" ] || $BIN/diffusion-data make-toy --kind gmm-ring --num "$N" --seed 1 --out "$REAL" >/dev/null
else
  [ -f "$OUT/test_all.h5" ] || $BIN/diffusion-data import-idx --images $F/t10k-images-idx3-ubyte.gz \
    --labels $F/t10k-labels-idx1-ubyte.gz --out "$OUT/test_all.h5" >/dev/null
  "$PY" - "$OUT/test_all.h5" "$REAL" "$N" <<'PYEOF'
import sys, h5py
src, dst, n = h5py.File(sys.argv[1]), h5py.File(sys.argv[2], "w"), int(sys.argv[3])
for k in ("images", "labels"): dst[k] = src[k][:n]
for k, v in src.attrs.items(): dst.attrs[k] = v
PYEOF
fi

# name | sampler options | checkpoint
ROWS=("teacher DDPM-1000|--sampler ddpm --steps 1000 ${GUIDE[*]}|$TEACHER")
for s in 100 50 20 8 4; do ROWS+=("teacher DDIM-$s|--sampler ddim --steps $s ${GUIDE[*]}|$TEACHER"); done
for s in 8 4 2 1; do ROWS+=("student $s steps||$STUDENTS/steps-$s"); done

evaluate() {  # samples.h5 json
  $BIN/diffusion-eval --samples "$1" --reference "$DATA" --json "$2" --threads 2 >"${2%.json}.eval.log" 2>&1
}
evaluate "$REAL" "$OUT/real.json"
for row in "${ROWS[@]}"; do
  IFS='|' read -r name options checkpoint <<<"$row"
  tag=$(echo "$name" | tr ' A-Z' '_a-z')
  # shellcheck disable=SC2086
  [ -f "$OUT/$tag/samples.h5" ] || timed "$tag" "${MPI[@]}" $BIN/diffusion-sample --checkpoint "$checkpoint" \
    --num-samples "$N" --out "$OUT/$tag" --seed 1 --threads 1 $options >"$OUT/$tag.log" 2>&1
  evaluate "$OUT/$tag/samples.h5" "$OUT/$tag.json"
  if [ "$SET" = fashion ]; then cp "$OUT/$tag/grid.png" "docs/results/${SET}_$tag.png"; fi
done
"$PY" bench/results_table.py "$SET" "$OUT" "${ROWS[@]}" | tee "$OUT/table.md"
