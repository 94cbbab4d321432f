# Shared set-up of the end-to-end bash tests, sourced as `source "$(dirname "$0")/cli_common.sh"
# NAME`: the paths ctest passes in (DIFFUSION_BIN, DIFFUSION_SOURCE, DIFFUSION_TEST_DATA,
# DIFFUSION_PYTHON), a scratch folder $WORK removed on exit, mpirun with the flags root and
# oversubscription need ("${MPIRUN[@]}" -np N ...), pass/fail counters, expect_fail for bad
# input; `finish` prints the "N passed, M failed" line and returns non-zero on any failure.
BIN="${DIFFUSION_BIN:?DIFFUSION_BIN must point at build/bin}"
SRC="${DIFFUSION_SOURCE:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
PY="${DIFFUSION_PYTHON:-python3}"
WORK="${DIFFUSION_TEST_DATA:-/tmp}/${1:?cli_common.sh needs the test name}-$$"
MPIRUN=(mpirun --oversubscribe)
[ "$(id -u)" -eq 0 ] && MPIRUN+=(--allow-run-as-root)

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "PASS: $1"; }
fail() { failed=$((failed + 1)); echo "FAIL: $1"; }
# expect_fail NAME PATTERN OUTDIR COMMAND...: the command must fail with PATTERN in its output
# and leave OUTDIR (if given) unwritten.
expect_fail() {
  local name=$1 pattern=$2 out=$3
  shift 3
  if "$@" >"$WORK/bad.log" 2>&1; then fail "$name: exit 0"; return; fi
  if ! grep -q -- "$pattern" "$WORK/bad.log"; then fail "$name: no '$pattern' in: $(cat "$WORK/bad.log")"; return; fi
  if [ -n "$out" ] && [ -e "$out" ]; then fail "$name: $out was written"; return; fi
  pass "$name"
}
finish() {
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}

rm -rf "$WORK" && mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT
