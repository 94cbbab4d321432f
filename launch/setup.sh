#!/usr/bin/env bash
# Installs what building and testing need, and only what is missing: Debian's packages
# (compiler, CMake, Open MPI, HDF5, Boost, GoogleTest, stb, Fashion-MNIST, Slurm) and the pinned
# PyTorch wheel (its LibTorch, CUDA 13 build, with NCCL) in the project-local .venv.
# Safe to re-run; prints what it does.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.11.0   # CUDA 13 build on PyPI; the GPU machines run the same version
PY_PACKAGES=("torch==${TORCH_VERSION}" "numpy==2.4.6" "h5py==3.16.0")
DEB_PACKAGES=(build-essential cmake ninja-build ccache pkg-config git
  libopenmpi-dev openmpi-bin libhdf5-dev hdf5-tools libboost-program-options-dev
  libgtest-dev libstb-dev zlib1g-dev nlohmann-json3-dev dataset-fashion-mnist python3-venv
  slurmctld slurmd slurm-client munge)  # Slurm: the tests start a single-node cluster

missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "[setup] installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

PYTHON_BIN="${PYTHON:-python3}"
if ! .venv/bin/python -c "import torch, h5py, numpy; assert torch.__version__.split('+')[0] == '${TORCH_VERSION}'" 2>/dev/null; then
  echo "[setup] creating .venv with ${PY_PACKAGES[*]} (about 3 GB with its CUDA libraries)"
  [ -x .venv/bin/python ] || "$PYTHON_BIN" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "${PY_PACKAGES[@]}"
fi
# diffusers: the peer that tests/diffusers_compare_test.py and bench/sample_peer.py check our sampler
# against (0.42.1 works with torch 2.11 and numpy 2). Installed on its own, so an existing
# .venv gets it without reinstalling torch.
DIFFUSERS_VERSION=0.42.1
if ! .venv/bin/python -c "import diffusers; assert diffusers.__version__ == '${DIFFUSERS_VERSION}'" 2>/dev/null; then
  echo "[setup] installing diffusers==${DIFFUSERS_VERSION} into .venv"
  .venv/bin/python -m pip install -q "diffusers==${DIFFUSERS_VERSION}"
fi
# The Python package (python/diffusion_cluster, docs/interop.md) and its two pinned extras:
# matplotlib for the plots, safetensors for the weights-only export. The package itself goes in
# as a .pth path entry, so edits to python/ apply without reinstalling.
MATPLOTLIB_VERSION=3.10.8
SAFETENSORS_VERSION=0.8.0
if ! .venv/bin/python -c "import matplotlib, safetensors; assert matplotlib.__version__ == '${MATPLOTLIB_VERSION}' and safetensors.__version__ == '${SAFETENSORS_VERSION}'" 2>/dev/null; then
  echo "[setup] installing matplotlib==${MATPLOTLIB_VERSION} safetensors==${SAFETENSORS_VERSION} into .venv"
  .venv/bin/python -m pip install -q "matplotlib==${MATPLOTLIB_VERSION}" "safetensors==${SAFETENSORS_VERSION}"
fi
SITE_PACKAGES=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ "$(cat "$SITE_PACKAGES/diffusion_cluster.pth" 2>/dev/null)" != "$PWD/python" ]; then
  echo "[setup] installing the diffusion_cluster package (python/) into .venv"
  echo "$PWD/python" >"$SITE_PACKAGES/diffusion_cluster.pth"
fi
echo "[setup] ready: $(.venv/bin/python -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)')"
