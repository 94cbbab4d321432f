#!/usr/bin/env bash
# End-to-end test of build/bin/diffusion-train under mpirun -np 2 on the toy_2d config: the
# loss falls, the resolved config and a checkpoint with its manifest appear, SIGUSR1 (Slurm's
# warning before a time limit, forwarded by mpirun) makes the job checkpoint and exit cleanly,
# the same command then resumes, and bad input fails fast with a message naming the key/file.
# Run by ctest with DIFFUSION_BIN, DIFFUSION_SOURCE, DIFFUSION_TEST_DATA and DIFFUSION_PYTHON.
set -uo pipefail

source "$(dirname "$0")/cli_common.sh" train_cli_test
MPIRUN+=(-np 2)
"$BIN/diffusion-data" make-toy --kind gmm-ring --num 20000 --seed 0 --out "$WORK/ring.h5" >/dev/null

BASE=("${MPIRUN[@]}" "$BIN/diffusion-train" --config "$SRC/configs/toy_2d.ini" --threads 1 --log-every 50)
TRAIN=("${BASE[@]}" --data "$WORK/ring.h5")

# --- a short run: loss falls, config saved, checkpoint with manifest --------------------------
# ε-prediction pinned: the per-quarter check below is about ε (the config predicts v).
if "${TRAIN[@]}" --out "$WORK/run" --steps 600 --checkpoint-every 300 --prediction eps >"$WORK/run.log" 2>&1; then
  pass "mpirun -np 2 diffusion-train exits 0"
else
  fail "mpirun -np 2 diffusion-train (log follows)"; cat "$WORK/run.log"
fi
if "$PY" - "$WORK/run/metrics.jsonl" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
first, last = rows[0]["loss"], rows[-1]["loss"]
assert rows[-1]["step"] == 600, rows[-1]
assert last < 0.8 * first, (first, last)
q = rows[-1]["loss_per_t_quarter"]
# Every quarter of the t range is populated, and predicting ε is hardest where noise is
# smallest (t near 0) and easiest where x_t is nearly pure noise (t near T-1).
assert len(q) == 4 and min(q) > 0 and q[0] > q[3], q
assert rows[-1]["images_per_s"] > 0
PYEOF
then pass "loss falls (metrics.jsonl)"; else fail "loss falls"; fi
if [ -f "$WORK/run/config.ini" ] && grep -q "batch-size = 512" "$WORK/run/config.ini" &&
   [ -f "$WORK/run/checkpoints/step-00000600/manifest.json" ] &&
   [ "$(cat "$WORK/run/checkpoints/latest")" = "step-00000600" ]; then
  pass "resolved config, checkpoint manifest and latest pointer"
else
  fail "run folder layout"; ls -R "$WORK/run"
fi
if grep -q "resolved config" "$WORK/run.log" && grep -q "img/s" "$WORK/run.log"; then
  pass "rank 0 prints the resolved config and progress"
else
  fail "progress output"
fi

# --- a resume from an older checkpoint than the last log step ----------------------------------
# As after a crash past step 300: the run's log holds steps 350..600, its checkpoints only 300.
# The resumed run logs 350..600 again; metrics.jsonl must hold each step once, with the
# uninterrupted run's losses (the resume continues bit for bit).
cp -r "$WORK/run" "$WORK/cut"
rm -rf "$WORK/cut/checkpoints/step-00000600"
echo step-00000300 >"$WORK/cut/checkpoints/latest"
if "${TRAIN[@]}" --out "$WORK/cut" --steps 600 --checkpoint-every 300 --prediction eps >"$WORK/cut.log" 2>&1 &&
   grep -q "dropped 6 record(s) past step 300" "$WORK/cut.log" &&
   "$PY" - "$WORK/run/metrics.jsonl" "$WORK/cut/metrics.jsonl" <<'PYEOF'
import json, sys
whole, cut = ([json.loads(l) for l in open(p)] for p in sys.argv[1:])
steps = [r["step"] for r in cut]
assert steps == list(range(50, 601, 50)), steps
for a, b in zip(whole, cut):
    assert a["loss"] == b["loss"] and a["grad_norm"] == b["grad_norm"], (a, b)
PYEOF
then pass "a resume drops the log records past its checkpoint and logs them again, equal"
else fail "metrics.jsonl after a resume from an older checkpoint"; grep -E "resumed|dropped|rror" "$WORK/cut.log" | head; fi

# --- SIGUSR1: checkpoint and clean exit, then resume ------------------------------------------
"${TRAIN[@]}" --out "$WORK/sig" --steps 100000 --checkpoint-every 100000 >"$WORK/sig.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  grep -q "step 100/" "$WORK/sig.log" 2>/dev/null && break
  sleep 0.1
done
kill -USR1 "$pid"
wait "$pid"
rc=$?
step=$(cat "$WORK/sig/checkpoints/latest" 2>/dev/null)
if [ "$rc" -eq 0 ] && grep -q "stop requested" "$WORK/sig.log" && [ -n "$step" ]; then
  pass "SIGUSR1 → checkpoint ($step) and exit 0"
else
  fail "SIGUSR1 handling (rc $rc, latest '$step')"; tail -20 "$WORK/sig.log"
fi
if "${TRAIN[@]}" --out "$WORK/sig" --checkpoint-every 100000 --steps "$((10#${step#step-} + 50))" \
     >"$WORK/resume.log" 2>&1 && grep -q "resumed from" "$WORK/resume.log"; then
  pass "re-running the same command resumes"
else
  fail "resume"; tail -20 "$WORK/resume.log"
fi

# --- SIGTERM to a single-process run (no mpirun): checkpoint and clean exit --------------------
"$BIN/diffusion-train" --config "$SRC/configs/toy_2d.ini" --threads 1 --log-every 50 --data "$WORK/ring.h5" \
  --out "$WORK/term" --steps 100000 --checkpoint-every 100000 >"$WORK/term.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  grep -q "step 50/" "$WORK/term.log" 2>/dev/null && break
  sleep 0.1
done
kill -TERM "$pid"
wait "$pid"
rc=$?
if [ "$rc" -eq 0 ] && grep -q "stop requested" "$WORK/term.log" && [ -f "$WORK/term/checkpoints/latest" ]; then
  pass "SIGTERM → checkpoint and exit 0"
else
  fail "SIGTERM handling (rc $rc)"; tail -20 "$WORK/term.log"
fi

# --- bad input fails fast, naming what is wrong ------------------------------------------------
start=$(date +%s)
"${BASE[@]}" --out "$WORK/bad" --data "$WORK/missing.h5" >"$WORK/bad.log" 2>&1
rc=$?
if [ "$rc" -ne 0 ] && grep -q "missing.h5" "$WORK/bad.log" && [ $(( $(date +%s) - start )) -lt 30 ]; then
  pass "missing data: non-zero exit naming the file"
else
  fail "missing data (rc $rc)"; cat "$WORK/bad.log"
fi
"${TRAIN[@]}" --out "$WORK/bad" --batch-size 255 >"$WORK/bad2.log" 2>&1
rc=$?
if [ "$rc" -ne 0 ] && grep -q -- "--batch-size" "$WORK/bad2.log"; then
  pass "batch not divisible by 2 ranks: error names --batch-size"
else
  fail "indivisible batch (rc $rc)"; cat "$WORK/bad2.log"
fi

# --- one rank fails alone: the job goes down within seconds instead of hanging ----------------
# Two rows, row 1 is NaN, read per batch (no memory cache): at step 0 exactly one of the two
# ranks reads the bad row and throws while the other enters the gradient all-reduce.
"$PY" - "$WORK/nan.h5" <<'PYEOF'
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "w") as f:
    f.create_dataset("x", data=np.array([[0.5, 0.5], [np.nan, 0.0]], dtype=np.float32),
                     maxshape=(None, 2), chunks=(2, 2))
PYEOF
start=$(date +%s)
timeout 120 "${BASE[@]}" --out "$WORK/nan-run" --data "$WORK/nan.h5" --batch-size 2 --memory-limit-mb 0 \
  --steps 10 >"$WORK/nan.log" 2>&1
rc=$?
took=$(( $(date +%s) - start ))
if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$took" -lt 60 ] && grep -q "nan.h5" "$WORK/nan.log" &&
   grep -qE "\[rank [01]/2\] error" "$WORK/nan.log"; then
  pass "a NaN row read by one rank aborts the whole job in ${took}s, naming rank and file"
else
  fail "one-rank failure (rc $rc after ${took}s)"; cat "$WORK/nan.log"
fi

# --- an error every rank finds alike: one message from rank 0, exit 1, no MPI_Abort banner ---
for bad in "--no-such-option 1" "--steps" "--data $WORK/missing.h5"; do
  # shellcheck disable=SC2086
  "${BASE[@]}" --out "$WORK/alike-run" --data "$WORK/ring.h5" $bad >"$WORK/alike.log" 2>&1
  rc=$?
  if [ "$rc" -eq 1 ] && [ "$(grep -c "error:" "$WORK/alike.log")" -eq 1 ] && grep -q "^error: " "$WORK/alike.log" && ! grep -q "MPI_ABORT" "$WORK/alike.log" &&
     ! grep -q "^\[rank" "$WORK/alike.log" && [ ! -e "$WORK/alike-run" ]; then
    pass "'$bad' on 2 ranks: one error line, exit 1, nothing written"
  else
    fail "'$bad' on 2 ranks (rc $rc)"; cat "$WORK/alike.log"
  fi
done

# --- devices and precision -------------------------------------------------------------------
expect_fail "--device gpu names the option" "--device" "$WORK/dev-run" \
  "${BASE[@]}" --out "$WORK/dev-run" --data "$WORK/ring.h5" --device gpu
expect_fail "--precision fp16 names the option" "--precision" "$WORK/dev-run" \
  "${BASE[@]}" --out "$WORK/dev-run" --data "$WORK/ring.h5" --precision fp16
# --- the collective timeout (tests/collective_timeout_test.sh stops a rank) --------------------
for bad in -1 abc; do
  expect_fail "--collective-timeout $bad names the option" "option --collective-timeout: '$bad'" "$WORK/ct-run" \
    "${BASE[@]}" --out "$WORK/ct-run" --data "$WORK/ring.h5" --collective-timeout "$bad"
done
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
  echo "SKIP: --device cuda without a GPU (this machine has one)"
else
  "${BASE[@]}" --out "$WORK/cuda-run" --data "$WORK/ring.h5" --device cuda >"$WORK/cuda.log" 2>&1
  rc=$?
  if [ "$rc" -eq 1 ] && [ "$(grep -c "error:" "$WORK/cuda.log")" -eq 1 ] && grep -q "$(hostname)" "$WORK/cuda.log" &&
     grep -q "rank" "$WORK/cuda.log" && grep -qi "cuda" "$WORK/cuda.log" && [ ! -e "$WORK/cuda-run" ]; then
    pass "--device cuda without a GPU: one error naming host and rank, exit 1, nothing written"
  else
    fail "--device cuda without a GPU (rc $rc)"; cat "$WORK/cuda.log"
  fi
fi
# bf16 on the CPU: the run says which precision it computes in (bf16, or the logged fp32
# fallback on a CPU without native bf16) and records the setting in its config.
if "${TRAIN[@]}" --out "$WORK/bf16-run" --steps 20 --precision bf16 --device cpu >"$WORK/bf16.log" 2>&1 &&
   grep -q "precision = bf16" "$WORK/bf16-run/config.ini" &&
   { grep -q "bf16 on cpu" "$WORK/bf16.log" || grep -q "running in fp32" "$WORK/bf16.log"; }; then
  pass "--precision bf16 --device cpu trains and says what it computes in"
else
  fail "--precision bf16 --device cpu"; cat "$WORK/bf16.log"
fi

# --- bare boolean flag: --random-flip alone means true (refused here: the data are points) ---
expect_fail "bare --random-flip reaches the data check" "random-flip" "" \
  "${BASE[@]}" --out "$WORK/flip-run" --data "$WORK/ring.h5" --random-flip

finish
