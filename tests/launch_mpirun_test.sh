#!/usr/bin/env bash
# launch/mpirun.sh: the mpirun line it builds (root flag only as root, --oversubscribe only
# beyond the cores, binding, --threads appended unless given), its refusals, one GPU per local
# rank through launch/local_rank.sh, and a real 2-rank diffusion-train run through it.
# Run by ctest with DIFFUSION_BIN, DIFFUSION_SOURCE and DIFFUSION_TEST_DATA.
set -uo pipefail

BIN="${DIFFUSION_BIN:?DIFFUSION_BIN must point at build/bin}"
SRC="${DIFFUSION_SOURCE:?}"
WORK="${DIFFUSION_TEST_DATA:-/tmp}/launch_mpirun_test-$$"
RUN="$SRC/launch/mpirun.sh"

passed=0
failed=0
check() {  # DESCRIPTION COMMAND...: passes when COMMAND succeeds
  local what="$1"; shift
  if "$@"; then passed=$((passed + 1)); echo "PASS: $what"; else failed=$((failed + 1)); echo "FAIL: $what"; fi
}
has() { [[ " $1 " == *" $2 "* ]]; }   # LINE WORDS: LINE contains WORDS as whole words
lacks() { ! has "$1" "$2"; }

rm -rf "$WORK" && mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT

cores=$(lscpu -p=SOCKET,CORE | grep -v '^#' | sort -u | wc -l)
root_flag=lacks
[ "$(id -u)" -eq 0 ] && root_flag=has

line=$("$RUN" -n 1 -t 1 --dry-run prog --config x.ini)
check "1 rank x 1 thread: bound to one core, threads passed on" has "$line" "mpirun -np 1 -x OMP_NUM_THREADS=1"
check "  --map-by slot:PE=1 --bind-to core" has "$line" "--map-by slot:PE=1 --bind-to core"
check "  program (through local_rank.sh) gets --threads 1 last" has "$line" "$SRC/launch/local_rank.sh prog --config x.ini --threads 1"
check "  --allow-run-as-root only as root" "$root_flag" "$line" "--allow-run-as-root"
check "  no --oversubscribe within the cores" lacks "$line" "--oversubscribe"

line=$("$RUN" -n "$((cores + 1))" --dry-run prog)
check "$((cores + 1)) ranks on $cores cores: --oversubscribe, no binding, 1 thread" \
  has "$line" "--oversubscribe --bind-to none $SRC/launch/local_rank.sh prog --threads 1"

line=$("$RUN" -n 1 -b none --dry-run prog --threads 3)
check "-b none; the program's own --threads is kept" has "$line" "--bind-to none $SRC/launch/local_rank.sh prog --threads 3"
check "  and not appended twice" [ "$(grep -o -- '--threads' <<<"$line" | wc -l)" -eq 1 ]

check "-n 0 refused" bash -c "! '$RUN' -n 0 prog 2>/dev/null"
check "-b socket refused" bash -c "! '$RUN' -n 1 -b socket prog 2>/dev/null"
check "no program refused" bash -c "! '$RUN' -n 1 2>/dev/null"
check "--help" bash -c "'$RUN' --help | grep -q 'usage: launch/mpirun.sh'"

# local_rank.sh: rank r of a node gets entry r of CUDA_VISIBLE_DEVICES.
out=$(CUDA_VISIBLE_DEVICES=3,5 "$RUN" -n 2 -b none bash -c 'echo "rank $OMPI_COMM_WORLD_RANK sees $CUDA_VISIBLE_DEVICES"' 2>/dev/null | sort)
check "local rank -> GPU: rank 0 sees 3, rank 1 sees 5" [ "$out" = $'rank 0 sees 3\nrank 1 sees 5' ]

"$BIN/diffusion-data" make-toy --kind gmm-ring --num 2000 --seed 0 --out "$WORK/ring.h5" >/dev/null
check "2-rank diffusion-train through the wrapper writes its checkpoint" bash -c \
  "'$RUN' -n 2 -t 1 '$BIN/diffusion-train' --config '$SRC/configs/toy_2d.ini' --data '$WORK/ring.h5' \
     --out '$WORK/run' --steps 20 --log-every 10 >'$WORK/train.log' 2>&1 &&
   grep -q 'on 2 rank(s)' '$WORK/train.log' && [ \"\$(cat '$WORK/run/checkpoints/latest')\" = step-00000020 ]" ||
  tail -20 "$WORK/train.log"

echo "launch_mpirun_test: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
