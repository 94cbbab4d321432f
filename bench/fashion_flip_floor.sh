#!/usr/bin/env bash
# What random horizontal flips cost on Fashion-MNIST (issue #13, docs/results.md "The flip floor"):
# real test images, class-balanced (N/10 per class), scored by diffusion-eval against the training
# set as they are, with a random half of them mirrored (what a perfect model trained with
# random-flip = true would sample), and all mirrored. Also prints diffusion-data inspect's mirror
# check of the training set. Needs no training: about a minute.
#   bench/fashion_flip_floor.sh
# Environment overrides: N (2000), OUT (runs/flip_floor). Builds nothing: run ./launch/build.sh
# first. Writes $OUT/{none,half,all}.h5 and .json, and $OUT/table.md.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-2000}
OUT=${OUT:-runs/flip_floor}
. bench/common.sh
F=/usr/share/datasets/fashion-mnist
mkdir -p data "$OUT"
[ -f data/fashion_mnist_train.h5 ] || $BIN/diffusion-data import-idx --images $F/train-images-idx3-ubyte.gz \
  --labels $F/train-labels-idx1-ubyte.gz --out data/fashion_mnist_train.h5
[ -f data/fashion_mnist_test.h5 ] || $BIN/diffusion-data import-idx --images $F/t10k-images-idx3-ubyte.gz \
  --labels $F/t10k-labels-idx1-ubyte.gz --out data/fashion_mnist_test.h5
$BIN/diffusion-data inspect data/fashion_mnist_train.h5 | sed -n '/^labels/,/^trainer/p'

"$PY" - data/fashion_mnist_test.h5 "$OUT" "$N" <<'PYEOF'
import sys
import h5py
import numpy as np
src, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with h5py.File(src, "r") as f:
    images, labels, attrs = f["images"][:], f["labels"][:], dict(f.attrs)
classes = int(attrs["num_classes"])
rows = np.concatenate([np.flatnonzero(labels == c)[: n // classes] for c in range(classes)])
half = np.random.default_rng(0).random(rows.size) < 0.5
for name, mirror in [("none", np.zeros(rows.size, bool)), ("half", half), ("all", np.ones(rows.size, bool))]:
    x = images[rows].copy()  # [N, H, W, C]
    x[mirror] = x[mirror][:, :, ::-1, :]
    with h5py.File(f"{out}/{name}.h5", "w") as g:
        g["images"], g["labels"] = x, labels[rows]
        for k, v in attrs.items():
            g.attrs[k] = v
PYEOF

{
  echo "| test images ($N, class-balanced) | Fréchet | class accuracy |"
  echo "|---|---|---|"
  for name in none half all; do
    $BIN/diffusion-eval --samples "$OUT/$name.h5" --reference data/fashion_mnist_train.h5 \
      --json "$OUT/$name.json" --threads "$RANKS" >"$OUT/$name.log" 2>&1
    "$PY" -c 'import json, sys; e = json.load(open(sys.argv[1])); fd, acc = e["frechet_distance"], e["conditional_accuracy"]; print(f"| {sys.argv[2]} | {fd:.2f} | {acc:.3f} |")' \
      "$OUT/$name.json" "$(case $name in none) echo "as they are";; half) echo "a random half mirrored";; all) echo "all mirrored";; esac)"
  done
} | tee "$OUT/table.md"
