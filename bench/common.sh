# The bench scripts' shared preamble, sourced from the repository root after `set -euo pipefail`
# (`. bench/common.sh`): the programs, mpirun's arguments for RANKS ranks of one thread each, and
# `timed`. Reads RANKS (2) and, for `timed`, TIMES (the file it appends to).
RANKS=${RANKS:-2}
PY=$PWD/.venv/bin/python
BIN=build/bin
# Not bound to cores: each rank runs one thread, and the machine may have fewer cores than ranks.
MPI=(mpirun -np "$RANKS" --bind-to none)
[ "$(id -u)" -eq 0 ] && MPI+=(--allow-run-as-root)
[ "$(nproc)" -lt "$RANKS" ] && MPI+=(--oversubscribe)
export OMP_NUM_THREADS=1

timed() {  # NAME COMMAND...: runs COMMAND and appends "NAME SECONDS" to $TIMES
  local name=$1; shift
  local t0; t0=$(date +%s.%N)
  "$@"
  echo "$name $(echo "$(date +%s.%N) - $t0" | bc)" >>"$TIMES"
}
