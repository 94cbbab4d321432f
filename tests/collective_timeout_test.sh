#!/usr/bin/env bash
# --collective-timeout end to end: a 3-rank diffusion-train job whose rank 1 (then rank 0) is
# stopped with SIGSTOP ends by itself within the timeout and a few seconds, non-zero, with one
# message naming the stopped rank, its host and the collective the others wait in, and leaves no
# process behind; a healthy job with a short timeout (checkpoints included) is not disturbed;
# diffusion-sample and diffusion-distill refuse a bad value naming the option.
# Run by ctest with DIFFUSION_BIN, DIFFUSION_SOURCE and DIFFUSION_TEST_DATA.
set -uo pipefail

source "$(dirname "$0")/cli_common.sh" collective_timeout_test
TIMEOUT=3
HOST=$(hostname -s)
"$BIN/diffusion-data" make-toy --kind gmm-ring --num 4000 --seed 0 --out "$WORK/ring.h5" >/dev/null
TRAIN=("${MPIRUN[@]}" -np 3 "$BIN/diffusion-train" --config "$SRC/configs/toy_2d.ini" --threads 1 --data "$WORK/ring.h5"
       --batch-size 255)

# Every process a run started, so that none survives the test: stopped ones are continued and
# killed on exit, whatever happened (KEEP_WORK=1 keeps the logs).
STARTED=()
cleanup() {
  for p in "${STARTED[@]}"; do kill -CONT "$p" 2>/dev/null; kill -KILL "$p" 2>/dev/null; done
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

# The pid of rank R of the job under mpirun MP: mpirun's children, told apart by the rank Open MPI
# puts into their environment.
rank_pid() {
  local p
  for p in $(pgrep -P "$1"); do
    if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then echo "$p"; return; fi
  done
}

# Processes among the arguments that still live (zombies are dead).
alive() {
  local p state
  for p in "$@"; do
    state=$(ps -o stat= -p "$p" 2>/dev/null)
    [ -n "$state" ] && [ "${state:0:1}" != Z ] && echo "$p"
  done
}

stop_rank() {
  local victim=$1 log="$WORK/stop$1.log"
  "${TRAIN[@]}" --out "$WORK/stop$victim" --steps 1000000 --checkpoint-every 1000000 --log-every 20 \
    --collective-timeout "$TIMEOUT" >"$log" 2>&1 &
  local mp=$!
  STARTED+=("$mp")
  for _ in $(seq 1 600); do
    grep -q "step 40/" "$log" 2>/dev/null && break
    sleep 0.1
  done
  local pids=() r p
  for r in 0 1 2; do
    p=$(rank_pid "$mp" "$r")
    [ -n "$p" ] && pids+=("$p")
  done
  STARTED+=("${pids[@]}")
  local pid
  pid=$(rank_pid "$mp" "$victim")
  if ! grep -q "step 40/" "$log" || [ -z "$pid" ] || [ "${#pids[@]}" -ne 3 ]; then
    fail "rank $victim stopped: the job did not get going (pids: ${pids[*]})"; tail -20 "$log"
    kill -KILL "$mp" "${pids[@]}" 2>/dev/null
    return
  fi
  local start end rc
  start=$(date +%s.%N)
  kill -STOP "$pid"
  # The job has to end by itself; 60 s is only the guard against a hanging test.
  timeout 60 tail --pid="$mp" -f /dev/null
  end=$(date +%s.%N)
  if kill -0 "$mp" 2>/dev/null; then
    fail "rank $victim stopped: the job still runs 60 s later"; tail -20 "$log"
    kill -CONT "$pid"; kill -KILL "$mp" "${pids[@]}" 2>/dev/null
    wait "$mp"
    return
  fi
  wait "$mp"
  rc=$?
  local seconds
  seconds=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
  local pattern="collective timeout: rank [0-9]+ \\($HOST[^)]*\\) has waited [0-9.]+ s in '[^']+' \\(call [0-9]+\\); rank $victim \\($HOST[^)]*\\) did not answer within [0-9.]+ s: it is stopped, lost or hung"
  local messages
  messages=$(grep -c "collective timeout" "$log")
  echo "rank $victim (pid $pid) stopped: exit $rc after $seconds s; $(grep -m1 "collective timeout" "$log")"
  if [ "$rc" -ne 0 ] && grep -Eq "$pattern" "$log" && [ "$messages" -eq 1 ]; then
    pass "rank $victim stopped: one message naming rank $victim, host $HOST and the collective; exit $rc"
  else
    fail "rank $victim stopped (exit $rc, $messages messages)"; tail -30 "$log"
  fi
  if awk -v s="$seconds" -v t="$TIMEOUT" 'BEGIN { exit !(s <= t + 15) }'; then
    pass "rank $victim stopped: the job ended $seconds s after SIGSTOP (timeout $TIMEOUT s)"
  else
    fail "rank $victim stopped: the job took $seconds s to end (timeout $TIMEOUT s)"
  fi
  sleep 0.5
  local left
  left=$(alive "${pids[@]}" "$mp")
  if [ -z "$left" ]; then
    pass "rank $victim stopped: no process left behind"
  else
    fail "rank $victim stopped: processes left: $left"; ps -o pid,stat,cmd -p "$left"
  fi
}

stop_rank 1
stop_rank 0

# --- a healthy job with a short timeout: checkpoints and logging between, nothing said --------
if "${TRAIN[@]}" --out "$WORK/healthy" --steps 300 --checkpoint-every 100 --log-every 50 \
     --collective-timeout 1 >"$WORK/healthy.log" 2>&1 &&
   ! grep -q "\[comm\] collective" "$WORK/healthy.log" && grep -q "collective-timeout = 1" "$WORK/healthy/config.ini"; then
  pass "a healthy job with --collective-timeout 1 finishes and the watchdog says nothing"
else
  fail "healthy job with --collective-timeout 1"; tail -20 "$WORK/healthy.log"
fi

# --- the other programs take the option too ----------------------------------------------------
expect_fail "diffusion-sample --collective-timeout -1 names the option" "option --collective-timeout: '-1'" "" \
  "$BIN/diffusion-sample" --checkpoint "$WORK/healthy" --num-samples 4 --out "$WORK/samples" --collective-timeout -1
expect_fail "diffusion-distill --collective-timeout abc names the option" "option --collective-timeout: 'abc'" "" \
  "$BIN/diffusion-distill" --teacher "$WORK/healthy" --data "$WORK/ring.h5" --out "$WORK/distill" \
  --collective-timeout abc
if "${MPIRUN[@]}" -np 2 "$BIN/diffusion-sample" --checkpoint "$WORK/healthy" --num-samples 64 \
     --steps 5 --out "$WORK/samples" --collective-timeout 1 >"$WORK/sample.log" 2>&1 && [ -f "$WORK/samples/samples.h5" ] &&
   ! grep -q "\[comm\] collective" "$WORK/sample.log"; then
  pass "diffusion-sample --collective-timeout 1 on 2 ranks samples undisturbed"
else
  fail "diffusion-sample --collective-timeout 1"; tail -20 "$WORK/sample.log"
fi

finish
