#!/usr/bin/env bash
# The GPU check: one command on a GPU machine (one NVIDIA GPU, CUDA 13, a python with the torch
# 2.11 cu130 wheel, 16 cores, no network, no MPI/HDF5/Boost/GoogleTest/CMake packages) that
# builds against that machine's torch, runs the GPU tests (ctest -L gpu), trains 200 steps of
# configs/fashion_mnist.ini on the GPU, samples from it with DDIM, and prints a throughput
# table (diffusion-train vs the same networks in PyTorch, fp32/bf16, and the bf16 matmul rate).
#
#   launch/gpu-check.sh prepare   HERE (apt, network): fetch the .deb files and the data into
#                                 .gpu-check/ (ignored; carry it to the GPU machine)
#   launch/gpu-check.sh           THERE, from the repository root, with $OUT set: unpack the
#                                 debs under a prefix, build into build-gpu/, run every stage;
#                                 log, table and results go to $OUT
#   GPU_CHECK_ALLOW_CPU=1 launch/gpu-check.sh   a dry run on a machine without a GPU: every
#                                 stage on CPU with tiny sizes, to catch mistakes in this script
#
# Settings (environment): OUT (default gpu-check-out/), GPU_CHECK_PREFIX (where the debs are
# unpacked, default /tmp/gpu-check-prefix), GPU_CHECK_PYTHON (the python with torch),
# GPU_CHECK_BUDGET_S (480: stages get what is left of it), GPU_CHECK_BUILD_DIR (build-gpu),
# GPU_CHECK_SKIP_BUILD=1 (use the programs already in GPU_CHECK_BUILD_DIR), GPU_CHECK_JOBS,
# GPU_CHECK_SKIP_PEER=1 (leave out the PyTorch peer's throughput, e.g. on a rerun that has it).
# Each stage prints a timestamped header and its duration; a failed stage is reported and the
# later stages that do not need it still run; the exit status is 1 when any stage failed.
set -uo pipefail
set -a  # every variable reaches the stages' child shells (see stage())
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
CARRY=$ROOT/.gpu-check          # what `prepare` fills and the device tool carries
DEB_DIR=$CARRY/debs
DATA_DIR=$CARRY/data

# --- the packages ----------------------------------------------------------------------------
# What the build and the tests need from Debian 12 beyond a minimal system with gcc/g++ 12.
# `prepare` adds every library these files need (their ELF DT_NEEDED entries, resolved with
# dpkg -S here) that is neither among them nor in a package of Priority: required.
ROOT_PACKAGES=(cmake cmake-data ninja-build
  openmpi-bin openmpi-common libopenmpi3 libopenmpi-dev
  libhdf5-dev libhdf5-103-1
  libboost-program-options-dev libboost-program-options1.74-dev libboost-program-options1.74.0
  libboost1.74-dev libgtest-dev nlohmann-json3-dev libstb-dev zlib1g-dev)
# Present wherever gcc/g++ 12 are (the machine is promised them), so never carried.
TOOLCHAIN_PACKAGES=(libc6 libc6-dev libgcc-s1 libstdc++6 libstdc++-12-dev libgcc-12-dev gcc-12
  g++-12 cpp-12 binutils libbinutils libctf0 libctf-nobfd0 libgomp1 libatomic1 libquadmath0
  libasan8 libtsan2 libubsan1 liblsan0 libitm1 libcc1-0 libisl23 libmpc3 libmpfr6 libgmp10
  libjansson4 libzstd1 zlib1g libcrypt1 linux-libc-dev libc-dev-bin)
# Open MPI components for networks a single node does not use (InfiniBand, OmniPath, UCX,
# libfabric): their DT_NEEDED are not followed; the components fail to load and are skipped
# (load errors are silenced below), and shared memory carries the traffic.
SKIP_COMPONENT_RE='mca_(btl_openib|btl_usnic|btl_ofi|mtl_ofi|mtl_psm|mtl_psm2|pml_ucx|osc_ucx|spml_ucx|atomic_ucx|btl_uct|coll_hcoll|fcoll_|common_ofi|common_ucx|common_verbs|common_psm)'
MAX_CARRY_MIB=60

log() { printf '[gpu-check %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { log "ERROR: $*" >&2; exit 1; }

# ============================================================================================
# prepare (runs here)
# ============================================================================================
elf_needed() {  # FILE → its DT_NEEDED sonames
  LC_ALL=C readelf -d "$1" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'
}

prepare() {
  command -v apt-get >/dev/null || die "prepare needs apt-get (Debian 12)"
  command -v readelf >/dev/null || die "prepare needs readelf (binutils)"
  mkdir -p "$DEB_DIR" "$DATA_DIR"
  local scratch; scratch=$(mktemp -d /tmp/gpu-check-prepare.XXXXXX)
  trap 'rm -rf "$scratch"' RETURN
  local -A want=() base=()
  local p
  for p in "${ROOT_PACKAGES[@]}"; do want[$p]=1; done
  for p in "${TOOLCHAIN_PACKAGES[@]}"; do base[$p]=1; done
  while read -r p; do base[$p]=1; done < <(dpkg-query -W -f='${Package} ${Priority}\n' | awk '$2 == "required" { print $1 }')

  # Fixpoint: download what is wanted, unpack it, add the packages of sonames nobody provides.
  local round=0 added=1
  while ((added)); do
    round=$((round + 1)); added=0
    local missing=()
    for p in "${!want[@]}"; do compgen -G "$DEB_DIR/${p}_*.deb" >/dev/null || missing+=("$p"); done
    if ((${#missing[@]})); then
      log "round $round: downloading ${#missing[@]} package(s): ${missing[*]}"
      (cd "$DEB_DIR" && apt-get download "${missing[@]}" 2>&1 | grep -v '^W: Download is performed unsandboxed') \
        || die "apt-get download failed (is the Debian mirror reachable? apt-get update?)"
    fi
    rm -rf "$scratch/root"; mkdir -p "$scratch/root"
    for p in "${!want[@]}"; do dpkg -x "$(ls "$DEB_DIR/${p}"_*.deb | head -1)" "$scratch/root"; done
    local provided; provided=$(find "$scratch/root" \( -type f -o -type l \) -name '*.so*' -printf '%f\n' | sort -u)
    local needed; needed=$(find "$scratch/root" -type f \( -perm -u+x -o -name '*.so*' \) -print |
      grep -Ev "$SKIP_COMPONENT_RE" | while read -r f; do elf_needed "$f"; done | sort -u)
    local so owner
    for so in $needed; do
      grep -qxF "$so" <<<"$provided" && continue
      owner=$(dpkg -S "*/$so" 2>/dev/null | grep -v '^diversion' | head -1 | cut -d: -f1)
      [[ -n $owner ]] || { log "warning: no installed package here provides $so (needed by the debs)"; continue; }
      [[ -n ${base[$owner]:-} || -n ${want[$owner]:-} ]] && continue
      want[$owner]=1; added=1
      log "  $so -> $owner"
    done
  done
  # Packages left over from an earlier list.
  local f name
  for f in "$DEB_DIR"/*.deb; do
    name=$(basename "$f"); name=${name%%_*}
    [[ -n ${want[$name]:-} ]] || { log "removing $name (no longer needed)"; rm -f "$f"; }
  done
  printf '%s\n' "${!want[@]}" | sort > "$DEB_DIR/PACKAGES"

  # Fashion-MNIST's 10k test split (4.3 MiB of idx.gz; the 60k train split would be 26 MiB):
  # 200 steps of batch 64 see 12800 images, and the check is of the GPU path, not of quality.
  local fm=/usr/share/datasets/fashion-mnist
  if [[ ! -f $fm/t10k-images-idx3-ubyte.gz ]]; then
    log "fetching dataset-fashion-mnist for its t10k files"
    (cd "$scratch" && apt-get download dataset-fashion-mnist >/dev/null 2>&1) || die "cannot download dataset-fashion-mnist"
    dpkg -x "$scratch"/dataset-fashion-mnist_*.deb "$scratch/fm"
    fm=$scratch/fm/usr/share/datasets/fashion-mnist
  fi
  cp "$fm/t10k-images-idx3-ubyte.gz" "$fm/t10k-labels-idx1-ubyte.gz" "$DATA_DIR/"

  local mib; mib=$(du -sm "$CARRY" | cut -f1)
  log "prepared $CARRY: $(ls "$DEB_DIR"/*.deb | wc -l) debs ($(du -sh "$DEB_DIR" | cut -f1)), data ($(du -sh "$DATA_DIR" | cut -f1)); total ${mib} MiB"
  ((mib <= MAX_CARRY_MIB)) || die "$CARRY is ${mib} MiB, above the ${MAX_CARRY_MIB} MiB carry limit"
  log "carry it: the device tool's carry [\".gpu-check\"]; then run: launch/gpu-check.sh"
}

# ============================================================================================
# the check (runs there)
# ============================================================================================
ALLOW_CPU=${GPU_CHECK_ALLOW_CPU:-0}
BUDGET_S=${GPU_CHECK_BUDGET_S:-480}
PREFIX=${GPU_CHECK_PREFIX:-/tmp/gpu-check-prefix}
BUILD_DIR=${GPU_CHECK_BUILD_DIR:-build-gpu}
JOBS=${GPU_CHECK_JOBS:-$(nproc)}
OUT=${OUT:-$ROOT/gpu-check-out}
WORK=$ROOT/$BUILD_DIR/gpu-check   # data, runs, samples: large, so not under $OUT
T0=$(date +%s)
FAILED=()
SUMMARY=()

# stage NAME TIMEOUT_S COMMAND...: header, output into $OUT/logs/NAME.log and the terminal,
# duration; the timeout is cut to what is left of the budget.
stage() {
  local name=$1 limit=$2; shift 2
  local left=$((BUDGET_S - ($(date +%s) - T0)))
  # The device tool allows 10 minutes in all: past the budget, stages are skipped, not squeezed.
  if ((left < 15)); then skip "$name" "no time left of the ${BUDGET_S}s budget"; return 1; fi
  ((limit > left)) && limit=$left
  local start; start=$(date +%s)
  echo
  log "===== stage $name (timeout ${limit}s, $(( start - T0 ))s into the check) ====="
  # A child bash runs the stage's function (exported below), so that timeout can end it and
  # everything it started (timeout signals its whole process group).
  timeout --kill-after=10 "$limit" bash -c '"$@"' "$name" "$@" 2>&1 | tee "$OUT/logs/$name.log"
  local rc=${PIPESTATUS[0]}
  local took=$(( $(date +%s) - start ))
  if ((rc == 0)); then
    log "----- stage $name: ok in ${took}s"
    SUMMARY+=("| $name | ok | $took |")
  else
    ((rc == 124 || rc == 137)) && log "----- stage $name: TIMED OUT after ${took}s" || log "----- stage $name: FAILED (exit $rc) in ${took}s"
    FAILED+=("$name")
    SUMMARY+=("| $name | failed (exit $rc) | $took |")
  fi
  return "$rc"
}
ok() { [[ " ${FAILED[*]} " != *" $1 "* ]]; }  # stage $1 did not fail
skip() { log "===== stage $1: skipped ($2)"; FAILED+=("$1"); SUMMARY+=("| $1 | skipped: $2 | 0 |"); }

find_python() {
  local c
  for c in "${GPU_CHECK_PYTHON:-}" "$ROOT/.venv/bin/python" python3 python; do
    [[ -n $c ]] && command -v "$c" >/dev/null 2>&1 && "$c" -c 'import torch' 2>/dev/null && { command -v "$c"; return 0; }
  done
  return 1
}

stage_environment() {
  local v
  v=$(gcc -dumpversion 2>/dev/null) || { echo "gcc not found: the GPU machine must have gcc/g++ 12"; return 1; }
  [[ ${v%%.*} -ge 12 ]] || { echo "gcc $v: need gcc 12 or later"; return 1; }
  v=$(g++ -dumpversion 2>/dev/null) || { echo "g++ not found: the GPU machine must have gcc/g++ 12"; return 1; }
  [[ ${v%%.*} -ge 12 ]] || { echo "g++ $v: need g++ 12 or later"; return 1; }
  echo "gcc/g++ $v; $(nproc) cores; $(grep MemTotal /proc/meminfo)"
  echo "python: $PY"
  "$PY" - "$ALLOW_CPU" "$OUT/throughput.jsonl" <<'EOF' || return 1
import json, sys, torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuda available: {torch.cuda.is_available()}")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"  cuda:{i} {p.name}, {p.total_memory / 2**30:.0f} GiB, sm_{p.major}{p.minor}")
# The table's header names the device and torch from here, also when the peer is left out.
device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
with open(sys.argv[2], "a") as f:
    f.write(json.dumps({"kind": "environment", "device": device, "torch": torch.__version__}) + "\n")
if not torch.cuda.is_available() and sys.argv[1] != "1":
    sys.exit("no CUDA device visible to torch (set GPU_CHECK_ALLOW_CPU=1 for a CPU dry run)")
EOF
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  if [[ -z $NVCC ]]; then
    echo "nvcc not found (PATH, /usr/local/cuda, CUDA_HOME): torch's CMake config for a CUDA wheel needs the CUDA 13 toolkit"
    return 1
  fi
  echo "nvcc: $NVCC ($("$NVCC" --version | tail -1))"
}

# Unpacks the debs under $PREFIX and points the environment there. Open MPI is relocated with
# OPAL_PREFIX (its compiled-in /usr becomes $PREFIX/usr); absolute symlinks in the debs are
# re-pointed into the prefix; Debian's alternatives links (mpirun, mpicc, ...) are made by hand.
stage_unpack() {
  [[ -f $DEB_DIR/PACKAGES ]] || { echo "$DEB_DIR/PACKAGES missing: run 'launch/gpu-check.sh prepare' here and carry .gpu-check"; return 1; }
  rm -rf "$PREFIX"; mkdir -p "$PREFIX"
  local f n=0
  for f in "$DEB_DIR"/*.deb; do dpkg-deb -x "$f" "$PREFIX" || { echo "dpkg-deb -x $f failed"; return 1; }; n=$((n + 1)); done
  local link target
  while read -r link; do
    target=$(readlink "$link")
    # Into the prefix when the target came with the debs; else it is a base-system file (libz.so
    # -> /lib/.../libz.so.1) and stays pointing at the system's copy.
    [[ $target == /* && -e $PREFIX$target ]] && ln -sfn "$PREFIX$target" "$link"
  done < <(find "$PREFIX" -type l)
  # CMake 3.25.1's FindCUDAToolkit sets a property on CUDA::nvToolsExt, which CUDA 13 no longer
  # has (torch's config includes it): the same one-word guard the build machine's copy carries.
  local fct=$PREFIX/usr/share/cmake-3.25/Modules/FindCUDAToolkit.cmake
  [[ -f $fct ]] && sed -i 's/^    if(CMAKE_MINIMUM_REQUIRED_VERSION VERSION_GREATER_EQUAL 3.25)$/    if(TARGET CUDA::nvToolsExt AND CMAKE_MINIMUM_REQUIRED_VERSION VERSION_GREATER_EQUAL 3.25)/' "$fct"
  local b
  for b in mpirun mpiexec mpicc mpicxx mpic++; do
    [[ -e $PREFIX/usr/bin/$b.openmpi ]] && ln -sfn "$b.openmpi" "$PREFIX/usr/bin/$b"
  done
  # The libmpi.so / mpi.h alternatives (Debian's mpi-x86_64-linux-gnu).
  local arch=x86_64-linux-gnu ompi=$PREFIX/usr/lib/x86_64-linux-gnu/openmpi
  for f in "$ompi"/lib/libmpi.so "$ompi"/lib/libmpi_cxx.so; do [[ -e $f ]] && ln -sfn "$f" "$PREFIX/usr/lib/$arch/$(basename "$f")"; done
  [[ -d $ompi/include ]] && mkdir -p "$PREFIX/usr/include/$arch" && ln -sfn "$ompi/include" "$PREFIX/usr/include/$arch/mpi"
  echo "unpacked $n debs into $PREFIX ($(du -sh "$PREFIX" | cut -f1))"
  # The carried tools need the carried libraries (cmake: libjsoncpp, libuv, ...), which the GPU
  # machine does not have: resolve against the prefix as every later stage does. (Seen on the
  # first run there: "libjsoncpp.so.25 => not found"; the build machine has them, so the CPU dry
  # run could not show it.)
  use_prefix
  # Every shared library our tools need must resolve now (a missing one would fail later, obscurely).
  local bad=0 exe
  for exe in "$PREFIX"/usr/bin/{cmake,ninja,orterun,orted} "$PREFIX"/usr/lib/$arch/{libmpi.so.40,libhdf5_serial.so.103,libboost_program_options.so.1.74.0}; do
    [[ -e $exe ]] || { echo "missing after unpacking: $exe"; bad=1; continue; }
    if ldd "$exe" | grep -q 'not found'; then echo "$exe: unresolved libraries:"; ldd "$exe" | grep 'not found'; bad=1; fi
  done
  "$PREFIX/usr/bin/cmake" --version | head -1 && "$PREFIX/usr/bin/ninja" --version | sed 's/^/ninja /'
  return $bad
}

use_prefix() {
  export PATH="$PREFIX/usr/bin:$PATH"
  export LD_LIBRARY_PATH="$PREFIX/usr/lib/x86_64-linux-gnu:$PREFIX/usr/lib/x86_64-linux-gnu/openmpi/lib:$PREFIX/usr/lib/x86_64-linux-gnu/hdf5/serial${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export LIBRARY_PATH="$LD_LIBRARY_PATH"
  export CMAKE_PREFIX_PATH="$PREFIX/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  export OPAL_PREFIX="$PREFIX/usr"
  # External PMIx (Debian's libpmix2) finds its plugins from its own install prefix.
  export PMIX_INSTALL_PREFIX="$PREFIX/usr/lib/x86_64-linux-gnu/pmix2"
  export PMIX_MCA_mca_base_component_path="$PREFIX/usr/lib/x86_64-linux-gnu/pmix2/lib/pmix"
  export OMPI_MCA_mca_base_component_show_load_errors=0
  export OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
  # Debian keeps the serial HDF5 in a folder of its own (include/ and lib/ links inside).
  export HDF5_ROOT="$PREFIX/usr/lib/x86_64-linux-gnu/hdf5/serial"
}

stage_mpi_hello() {  # the relocated Open MPI: compile with its mpicc, run 2 ranks with its mpirun
  local dir; dir=$(mktemp -d)
  cat > "$dir/hello.c" <<'EOF'
#include <mpi.h>
#include <stdio.h>
int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank, size, sum = 0, one = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Allreduce(&one, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  printf("hello from rank %d of %d (allreduce %d)\n", rank, size, sum);
  MPI_Finalize();
  return sum == size ? 0 : 1;
}
EOF
  echo "mpicc: $(command -v mpicc) -> $(mpicc -showme:link 2>&1 | head -c 300)"
  mpicc "$dir/hello.c" -o "$dir/hello" || return 1
  ldd "$dir/hello" | grep -E 'libmpi|not found'
  mpirun -np 2 "$dir/hello" || return 1
  "$dir/hello" || return 1  # a singleton (no mpirun), as the programs run below
  rm -rf "$dir"
}

stage_configure() {
  local args=(-S "$ROOT" -B "$ROOT/$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release
    -DDIFFUSION_PYTHON="$PY" -DHDF5_C_COMPILER_EXECUTABLE=/nonexistent)
  [[ -n ${NVCC:-} ]] && args+=(-DCMAKE_CUDA_COMPILER="$NVCC")
  command -v ccache >/dev/null && args+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  cmake "${args[@]}" || return 1
  grep -E 'DIFFUSION|NCCL_LIBRARY|MPI_C_LIB|HDF5_C_LIB|MPIEXEC_EXECUTABLE' "$ROOT/$BUILD_DIR/CMakeCache.txt" | grep -v '^//'
  if ((!ALLOW_CPU)) && ! grep -q 'diffusion-cluster: CUDA ON, NCCL ON' "$OUT/logs/configure.log"; then
    echo "the build is not a CUDA + NCCL build (see 'diffusion-cluster: CUDA ..' above)"; return 1
  fi
}

gpu_test_targets() {  # the executables of the tests labelled gpu, from ctest's own listing
  # Before the build, ctest lists no command for a test whose executable does not exist yet (seen
  # on the GPU machine: only the mpiexec-launched ones came through), so such a test's target is
  # its name (tests/CMakeLists.txt names plain tests after their target, MPI ones TARGET_npN).
  (cd "$ROOT/$BUILD_DIR" && ctest -L gpu --show-only=json-v1) | "$PY" -c '
import json, os, re, sys
bin_dir = sys.argv[1]
names = set()
for test in json.load(sys.stdin).get("tests", []):
    found = [os.path.basename(a) for a in test.get("command", []) if os.path.dirname(a) == bin_dir]
    names.update(found if test.get("command") else [re.sub(r"_np[0-9]+$", "", test["name"])])
print(" ".join(sorted(names)))' "$ROOT/$BUILD_DIR/bin"
}

stage_build() {
  local tests; tests=$(gpu_test_targets) || return 1
  echo "targets: diffusion-data diffusion-train diffusion-sample $tests"
  local t targets=()
  for t in diffusion-data diffusion-train diffusion-sample $tests; do targets+=(--target "$t"); done
  cmake --build "$ROOT/$BUILD_DIR" -j "$JOBS" "${targets[@]}"
}

stage_gpu_tests() {
  cd "$ROOT/$BUILD_DIR" || return 1
  local n; n=$(ctest -N -L gpu | sed -n 's/^Total Tests: //p')
  ((n > 0)) || { echo "no tests labelled gpu in $BUILD_DIR"; return 1; }
  ctest -L gpu --output-on-failure --timeout 180 --output-junit "$OUT/gpu-tests.xml" || return 1
  # A skip is not a pass, and ctest counts a binary whose cases all skipped as passed: list the
  # skipped GoogleTest cases from ctest's full log (e.g. the 2-rank NCCL case on one GPU).
  cp Testing/Temporary/LastTest.log "$OUT/logs/gpu_tests_full.log" 2>/dev/null
  local skipped
  skipped=$(awk '/^[0-9]+\/[0-9]+ Testing: /{ t = $3 } prev ~ /: Skipped$/ { print t ": " $0 } { prev = $0 }' \
    Testing/Temporary/LastTest.log 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g' | sort | uniq -c)
  [[ -n $skipped ]] && { echo "SKIPPED GPU cases (count, test: reason):"; echo "$skipped"; }
  return 0
}

# diffusion-train/-sample options for the device; a tree without them (the CPU dry run before
# the device options landed) gets none, which is the CPU default.
DEVICE=cuda
device_flags() {  # PROGRAM PRECISION
  if "$BIN/$1" --help 2>/dev/null | grep -q -- '--device'; then
    echo "--device $DEVICE --precision $2"
  elif ((ALLOW_CPU)); then
    echo ""
  else
    echo "MISSING"
  fi
}

stage_data() {
  mkdir -p "$WORK/data"
  rm -f "$WORK/data/fashion_mnist_t10k.h5" "$WORK/data/cifar_synthetic.h5"
  "$BIN/diffusion-data" import-idx --images "$DATA_DIR/t10k-images-idx3-ubyte.gz" \
    --labels "$DATA_DIR/t10k-labels-idx1-ubyte.gz" --out "$WORK/data/fashion_mnist_t10k.h5" || return 1
  # CIFAR-10-shaped random images for the throughput of the cifar10_ddpm.ini network: the
  # binary batch format (1 label byte + 3072 CHW bytes per record), 2048 records.
  mkdir -p "$WORK/data/cifar_synthetic"
  "$PY" - "$WORK/data/cifar_synthetic/test_batch.bin" <<'EOF' || return 1
import random, sys
rng = random.Random(0)
with open(sys.argv[1], "wb") as f:
    for i in range(2048):
        f.write(bytes([i % 10]) + rng.randbytes(3072))
EOF
  "$BIN/diffusion-data" import-cifar10 --dir "$WORK/data/cifar_synthetic" --split test \
    --out "$WORK/data/cifar_synthetic.h5" || return 1
  "$BIN/diffusion-data" inspect "$WORK/data/fashion_mnist_t10k.h5"
}

stage_train() {
  local flags; flags=$(device_flags diffusion-train fp32)
  [[ $flags == MISSING ]] && { echo "diffusion-train has no --device option in this tree"; return 1; }
  rm -rf "$WORK/runs/fashion_mnist"
  # shellcheck disable=SC2086
  "$BIN/diffusion-train" --config configs/fashion_mnist.ini --data "$WORK/data/fashion_mnist_t10k.h5" \
    --out "$WORK/runs/fashion_mnist" --steps "$TRAIN_STEPS" --log-every "$TRAIN_LOG_EVERY" $flags || return 1
  mkdir -p "$OUT/fashion_mnist"
  cp "$WORK/runs/fashion_mnist/metrics.jsonl" "$WORK/runs/fashion_mnist/config.ini" "$OUT/fashion_mnist/"
  "$PY" - "$WORK/runs/fashion_mnist/metrics.jsonl" <<'EOF'
import json, math, sys
records = [json.loads(l) for l in open(sys.argv[1])]
losses = [r["loss"] for r in records]
print("loss per record:", " ".join(f"{l:.4f}" for l in losses))
if not all(math.isfinite(l) for l in losses):
    sys.exit("a non-finite loss")
EOF
}

stage_sample() {
  local flags; flags=$(device_flags diffusion-sample bf16)
  [[ $flags == MISSING ]] && { echo "diffusion-sample has no --device option in this tree"; return 1; }
  rm -rf "$WORK/samples/fashion_mnist"
  # shellcheck disable=SC2086
  "$BIN/diffusion-sample" --checkpoint "$WORK/runs/fashion_mnist" --num-samples "$SAMPLE_NUM" \
    --steps "$SAMPLE_STEPS" --guidance-scale 3 --out "$WORK/samples/fashion_mnist" $flags || return 1
  mkdir -p "$OUT/fashion_mnist"
  cp "$WORK/samples/fashion_mnist/grid.png" "$OUT/fashion_mnist/" 2>/dev/null || true
  cp "$WORK/samples/fashion_mnist/manifest.json" "$OUT/fashion_mnist/samples_manifest.json" 2>/dev/null || true
}

# ours NAME CONFIG DATA PRECISION BATCH WARMUP TIMED: appends a JSON line to $OUT/throughput.jsonl.
# diffusion-train logs every WARMUP steps: its first metrics record is the warm-up and is
# dropped; images/s is the total images over the total time of the rest (bench/train_bench.sh).
ours() {
  local name=$1 config=$2 data=$3 precision=$4 batch=$5 warmup=$6 timed=$7
  local flags; flags=$(device_flags diffusion-train "$precision")
  [[ $flags == MISSING ]] && { echo "diffusion-train has no --device option in this tree"; return 1; }
  local run=$WORK/runs/bench_${name}_$precision
  rm -rf "$run"
  # shellcheck disable=SC2086
  "$BIN/diffusion-train" --config "$config" --data "$data" --out "$run" --batch-size "$batch" \
    --steps $((warmup + timed)) --log-every "$warmup" --checkpoint-every 100000000 $flags \
    > "$OUT/logs/ours_${name}_$precision.log" 2>&1 || { tail -20 "$OUT/logs/ours_${name}_$precision.log"; return 1; }
  "$PY" - "$run/metrics.jsonl" "$name" "$precision" "$batch" "$OUT/logs/ours_${name}_$precision.log" <<'EOF' | tee -a "$OUT/throughput.jsonl"
import json, re, sys
path, name, precision, batch, log = sys.argv[1:6]
records = [json.loads(l) for l in open(path)][1:]  # the first record is the warm-up
rate = len(records) / sum(1.0 / r["images_per_s"] for r in records)  # equal images per record
params = re.search(r" with (\d+) parameters", open(log).read())
print(json.dumps({"kind": "train", "program": "diffusion-train", "config": name, "precision": precision,
                  "mode": "c++", "images_per_s": round(rate, 2), "batch": int(batch),
                  "params": int(params.group(1)) if params else None}))
EOF
}

stage_throughput_ours() {
  local rc=0 p
  for p in fp32 bf16; do
    ours fashion_mnist configs/fashion_mnist.ini "$WORK/data/fashion_mnist_t10k.h5" "$p" "$FM_BATCH" "$OURS_WARMUP" "$OURS_TIMED" || rc=1
    ours cifar10_ddpm configs/cifar10_ddpm.ini "$WORK/data/cifar_synthetic.h5" "$p" "$CIFAR_BATCH" "$OURS_WARMUP" "$OURS_TIMED" || rc=1
  done
  return $rc
}

stage_throughput_peer() {
  local rc=0 quick=() dev=cuda compile_precisions=fp32,bf16
  if ((ALLOW_CPU)) && ! "$PY" -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
    dev=cpu quick=(--quick) compile_precisions=fp32  # CPU inductor takes minutes per network
  fi
  local fm=(--config configs/fashion_mnist.ini --channels 1)
  local cifar=(--config configs/cifar10_ddpm.ini --channels 3 --warmup-steps 5 --timed-steps 20)
  # Every eager number and the matmul rate before any torch.compile (minutes of compiling): a
  # stage cut short by its timeout still has them.
  run_peer() { "$PY" bench/gpu_peer.py --device $dev "${quick[@]}" --out "$OUT/throughput.jsonl" "$@" || rc=1; }
  run_peer "${fm[@]}" --modes eager --matmul
  run_peer "${cifar[@]}" --modes eager
  run_peer "${fm[@]}" --modes compile --precisions $compile_precisions
  ((ALLOW_CPU)) && [[ $dev == cpu ]] || run_peer "${cifar[@]}" --modes compile
  return $rc
}

write_table() {  # $OUT/throughput.jsonl → $OUT/table.md (printed)
  "$PY" - "$OUT/throughput.jsonl" "$OUT/table.md" "$ALLOW_CPU" <<'EOF'
import json, os, sys
src, dst, cpu = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
rows = [json.loads(l) for l in open(src)] if os.path.exists(src) else []
device = next((r["device"] for r in rows if "device" in r), "?")
torch_v = next((r["torch"] for r in rows if "torch" in r), "?")
def rate(config, precision, mode):
    hits = [r for r in rows if r.get("kind") == "train" and r.get("config") == config
            and r.get("precision") == precision and r.get("mode") == mode]
    if not hits:
        return "not run"
    r = hits[-1]
    return f"{r['images_per_s']:.1f}" if "images_per_s" in r else "failed: " + r.get("error", "?")[:60]
def compile_s(config, precision):
    hits = [r for r in rows if r.get("config") == config and r.get("precision") == precision
            and r.get("mode") == "compile" and r.get("compile_s") is not None]
    return f"{hits[-1]['compile_s']:.0f}" if hits else "—"
lines = []
if cpu:
    lines.append("**CPU dry run (GPU_CHECK_ALLOW_CPU=1), tiny sizes: these numbers mean nothing.**\n")
lines.append(f"Training throughput, images/s, one {device} (torch {torch_v}); PyTorch: the same networks "
             "(python/diffusion_cluster/nets.py), AdamW, batch from the config, bf16 = autocast.\n")
lines.append("| network | precision | diffusion-train | PyTorch eager | PyTorch torch.compile | compile time (s) |")
lines.append("| --- | --- | --- | --- | --- | --- |")
for config, label in [("fashion_mnist", "fashion_mnist.ini UNet"), ("cifar10_ddpm", "cifar10_ddpm.ini UNet")]:
    params = next((r["params"] for r in rows if r.get("config") == config and r.get("params")), None)
    batch = next((r["batch"] for r in rows if r.get("config") == config and r.get("batch")), None)
    name = f"{label} ({params / 1e6:.1f}M params, batch {batch})" if params and batch else label
    for p in ("fp32", "bf16"):
        lines.append(f"| {name} | {p} | {rate(config, p, 'c++')} | {rate(config, p, 'eager')} | "
                     f"{rate(config, p, 'compile')} | {compile_s(config, p)} |")
mm = [r for r in rows if r.get("kind") == "matmul"]
lines.append("")
lines.append(f"bf16 matmul ({mm[-1]['n']}³, torch.matmul, {'CUDA events' if device != 'cpu' else 'wall clock'}): {mm[-1]['tflops']:.1f} TFLOP/s"
             if mm else "bf16 matmul: not run")
text = "\n".join(lines) + "\n"
open(dst, "w").write(text)
print(text)
EOF
}

check() {
  mkdir -p "$OUT/logs"
  exec > >(tee -a "$OUT/gpu-check.log") 2>&1
  log "GPU check of $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') on $(hostname); budget ${BUDGET_S}s; OUT=$OUT"
  PY=$(find_python) || PY=""
  NVCC=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc "${CUDA_HOME:-/nonexistent}/bin/nvcc" 2>/dev/null | head -1)
  if ((ALLOW_CPU)); then
    log "GPU_CHECK_ALLOW_CPU=1: a dry run, on CPU where there is no GPU, with tiny sizes"
    TRAIN_STEPS=4 TRAIN_LOG_EVERY=2 SAMPLE_NUM=4 SAMPLE_STEPS=2
    FM_BATCH=4 CIFAR_BATCH=2 OURS_WARMUP=1 OURS_TIMED=2
    "${PY:-false}" -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null || DEVICE=cpu
  else
    TRAIN_STEPS=200 TRAIN_LOG_EVERY=50 SAMPLE_NUM=100 SAMPLE_STEPS=50
    FM_BATCH=64 CIFAR_BATCH=128 OURS_WARMUP=20 OURS_TIMED=100
  fi
  : > "$OUT/throughput.jsonl"
  export -f $(declare -F | awk '{ print $3 }')

  if [[ -z $PY ]]; then
    echo "no python with torch found (GPU_CHECK_PYTHON, .venv/bin/python, python3, python)"
    skip environment "no python that imports torch"
  else
    stage environment 60 stage_environment
  fi
  stage unpack 90 stage_unpack && use_prefix  # in this shell: the later stages inherit it
  ok unpack && stage mpi_hello 60 stage_mpi_hello

  BIN=$ROOT/$BUILD_DIR/bin
  if [[ ${GPU_CHECK_SKIP_BUILD:-0} == 1 ]]; then
    log "GPU_CHECK_SKIP_BUILD=1: using the programs in $BUILD_DIR/"
  elif ok unpack && [[ -n $PY ]] && { ((ALLOW_CPU)) || [[ -n $NVCC ]]; }; then
    if stage configure 120 stage_configure; then stage build 330 stage_build; else skip build "not configured"; fi
  else
    skip configure "needs the unpacked debs, a python with torch and nvcc"; skip build "not configured"
  fi
  if [[ -x $BIN/diffusion-train ]] && { [[ ${GPU_CHECK_SKIP_BUILD:-0} == 1 ]] || ok build; }; then
    stage gpu_tests 240 stage_gpu_tests
    stage data 60 stage_data
    if ok data; then
      if stage train_fashion_mnist 120 stage_train; then stage sample_ddim 90 stage_sample; else skip sample_ddim "no trained model"; fi
      stage throughput_ours 150 stage_throughput_ours
    else
      skip train_fashion_mnist "no data"; skip sample_ddim "no data"; skip throughput_ours "no data"
    fi
  else
    for s in gpu_tests data train_fashion_mnist sample_ddim throughput_ours; do skip "$s" "no build"; done
  fi
  if [[ ${GPU_CHECK_SKIP_PEER:-0} == 1 ]]; then
    skip throughput_peer "GPU_CHECK_SKIP_PEER=1"
  elif [[ -n $PY ]]; then
    stage throughput_peer 240 stage_throughput_peer
  else
    skip throughput_peer "no python with torch"
  fi

  echo
  log "===== results ($(( $(date +%s) - T0 ))s in all) ====="
  [[ -n $PY ]] && write_table
  {
    echo "| stage | result | seconds |"
    echo "| --- | --- | --- |"
    printf '%s\n' "${SUMMARY[@]}"
  } | tee "$OUT/stages.md"
  if ((${#FAILED[@]})); then
    log "FAILED or skipped: ${FAILED[*]} (logs: $OUT/logs/)"
    return 1
  fi
  log "all stages passed; table: $OUT/table.md, log: $OUT/gpu-check.log"
}

case "${1:-}" in
  prepare) prepare ;;
  "") check ;;
  -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) echo "launch/gpu-check.sh: unknown argument '$1' (prepare, or nothing)" >&2; exit 2 ;;
esac
