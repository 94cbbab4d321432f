#!/usr/bin/env bash
# The README's first command: installs what is missing, builds, and runs the project's main
# job on the embedded default data. Today that is the data stage (training and sampling
# arrive with their issues): import Fashion-MNIST from Debian's dataset-fashion-mnist, make
# the gmm-ring toy set, and inspect both. Re-running reuses what exists.
set -euo pipefail
cd "$(dirname "$0")/.."
./launch/setup.sh
./launch/build.sh
mkdir -p data
FMNIST=/usr/share/datasets/fashion-mnist
if [ ! -f data/fashion_mnist_train.h5 ]; then
  build/bin/diffusion-data import-idx --images "$FMNIST/train-images-idx3-ubyte.gz" \
    --labels "$FMNIST/train-labels-idx1-ubyte.gz" --out data/fashion_mnist_train.h5
fi
if [ ! -f data/gmm_ring.h5 ]; then
  build/bin/diffusion-data make-toy --kind gmm-ring --num 50000 --seed 0 --out data/gmm_ring.h5
fi
build/bin/diffusion-data inspect data/fashion_mnist_train.h5
build/bin/diffusion-data inspect data/gmm_ring.h5
echo "[demo] datasets ready: $PWD/data/fashion_mnist_train.h5, $PWD/data/gmm_ring.h5"
