#!/usr/bin/env bash
# The README's first command: installs what is missing, builds the programs, imports
# Fashion-MNIST from Debian's dataset-fashion-mnist, trains the class-conditional UNet of
# configs/fashion_mnist.ini on 2 ranks (its fixed-budget recipe: about 26 minutes on 2 cores with
# native bf16, about an hour on cores without), samples a class-by-class grid with
# classifier-free guidance (one column per class), scores the samples with
# diffusion-eval and prints where everything is. Re-running resumes rather than restarts:
# training continues from its last checkpoint, finished samples are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
say() { echo "[demo $(( $(date +%s) - start ))s] $*"; }

say "installing what is missing (Debian packages, the pinned PyTorch wheel in .venv)"
./launch/setup.sh
say "building the programs"
./launch/build.sh diffusion-data diffusion-train diffusion-sample diffusion-eval

mkdir -p data
FMNIST=/usr/share/datasets/fashion-mnist
if [ ! -f data/fashion_mnist_train.h5 ]; then
  say "importing Fashion-MNIST from $FMNIST"
  build/bin/diffusion-data import-idx --images "$FMNIST/train-images-idx3-ubyte.gz" \
    --labels "$FMNIST/train-labels-idx1-ubyte.gz" --out data/fashion_mnist_train.h5
fi
build/bin/diffusion-data inspect data/fashion_mnist_train.h5

MPIRUN=(mpirun -np 2)
[ "$(id -u)" -eq 0 ] && MPIRUN+=(--allow-run-as-root)
[ "$(nproc)" -lt 2 ] && MPIRUN+=(--oversubscribe)
export OMP_NUM_THREADS=1
say "training configs/fashion_mnist.ini on 2 ranks (a progress line every 50 steps; Ctrl-C and re-run resumes)"
"${MPIRUN[@]}" build/bin/diffusion-train --config configs/fashion_mnist.ini --threads 1
say "sampling 100 images, 10 per class, DDIM 50 steps, guidance scale 1.5"
"${MPIRUN[@]}" build/bin/diffusion-sample --checkpoint runs/fashion_mnist --num-samples 100 \
  --guidance-scale 1.5 --out samples/fashion_mnist --threads 1
say "scoring the samples against the training set (diffusion-eval)"
build/bin/diffusion-eval --samples samples/fashion_mnist/samples.h5 \
  --reference data/fashion_mnist_train.h5 --json samples/fashion_mnist/eval.json --threads 2
say "plotting the training curves (python -m diffusion_cluster.plot)"
.venv/bin/python -m diffusion_cluster.plot runs/fashion_mnist --out runs/fashion_mnist/plots

say "done"
classes=$(build/bin/diffusion-data inspect data/fashion_mnist_train.h5 | sed -n 's/^  class [0-9]* (\(.*\)):.*/\1/p' | paste -sd, -)
echo "  grid, one column per class ($classes):"
echo "    $PWD/samples/fashion_mnist/grid.png"
echo "  loss plot:        $PWD/runs/fashion_mnist/plots/loss.png (lr, grad norm, img/s: training.png beside it)"
echo "  samples:          $PWD/samples/fashion_mnist/samples.h5 (images uint8 [100, 28, 28, 1], labels)"
echo "  sample metrics:   $PWD/samples/fashion_mnist/eval.json"
echo "  training metrics: $PWD/runs/fashion_mnist/metrics.jsonl (config.ini and checkpoints/ beside it)"
