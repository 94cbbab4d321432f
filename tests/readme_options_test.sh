#!/usr/bin/env bash
# README.md's option listings against the built programs' --help (launch/readme_options.sh
# --check): fails with a diff and the command that regenerates them when they differ. Also
# checks that the check can fail (a stale block in a copy is found, and regenerating the copy
# restores README.md exactly) and that --help does not depend on the terminal's width.
# Run by ctest with DIFFUSION_BIN and DIFFUSION_SOURCE.
set -uo pipefail
BIN="${DIFFUSION_BIN:?DIFFUSION_BIN must point at build/bin}"
SRC="${DIFFUSION_SOURCE:?DIFFUSION_SOURCE must point at the repository}"
SCRIPT="$SRC/launch/readme_options.sh"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "PASS: $1"; }
fail() { failed=$((failed + 1)); echo "FAIL: $1"; }

current=0
if bash "$SCRIPT" --check >"$WORK/check.log" 2>&1; then
  current=1
  pass "$(tail -n 1 "$WORK/check.log")"
else
  cat "$WORK/check.log"
  fail "README.md is out of date: run launch/readme_options.sh (from the repository, after building) and commit README.md"
fi

# A copy with one stale line in the diffusion-train block must fail the check; regenerating
# the copy must give back README.md byte for byte when README.md is current.
sed '/^<!-- BEGIN diffusion-train --help -->$/,/^<!-- END/s/^  --steps arg .*$/  --steps arg (=7)   a stale line/' \
  "$SRC/README.md" >"$WORK/README.md"
if cmp -s "$SRC/README.md" "$WORK/README.md"; then
  fail "no '--steps arg' line in README.md's diffusion-train block to make stale"
elif DIFFUSION_README="$WORK/README.md" bash "$SCRIPT" --check >"$WORK/stale.log" 2>&1; then
  fail "--check accepted a stale diffusion-train block"
elif ! grep -q "launch/readme_options.sh" "$WORK/stale.log"; then
  fail "--check failed without naming the command that regenerates the listings"
else
  pass "--check finds a stale line and names the command to regenerate"
fi
DIFFUSION_README="$WORK/README.md" bash "$SCRIPT" >/dev/null 2>&1
if ((current)); then
  if cmp -s "$SRC/README.md" "$WORK/README.md"; then
    pass "regenerating the stale copy gives back README.md byte for byte"
  else
    fail "regenerating the stale copy does not give back README.md"; diff "$SRC/README.md" "$WORK/README.md" | head
  fi
fi

# Boost wraps --help at a fixed 80 columns: the terminal's width must not matter.
for p in diffusion-data diffusion-train diffusion-sample diffusion-distill diffusion-eval; do
  if [ "$(COLUMNS=30 "$BIN/$p" --help 2>&1)" == "$(COLUMNS=250 "$BIN/$p" --help 2>&1)" ] &&
     ! "$BIN/$p" --help 2>&1 | grep -q "$SRC"; then
    pass "$p --help: independent of COLUMNS, no absolute repository path"
  else
    fail "$p --help depends on COLUMNS or prints the repository's path"
  fi
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
