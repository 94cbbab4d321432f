#!/usr/bin/env bash
# End-to-end test of build/bin/diffusion-distill on the gmm-ring toy set: a toy_2d teacher is
# distilled 64 → 4 steps on 2 ranks; the 4-step student (sampled on its own grid, no flags)
# must beat the teacher's own DDIM-4 in NLL under the true mixture (diffusion-eval); a run
# stopped by SIGUSR1 in the middle and resumed gives bit-identical students; W = 1 and W = 2
# give the same first-round student (to float32 reduction round-off); bad input fails before
# anything is written. Then the fan-out: `diffusion-sample --jobs` on 3 ranks runs a
# distillation job on 2 ranks and a sampling job on 1 rank that waits for it; a re-run finds
# both complete; a bad jobs file fails before any work.
# Run by ctest with DIFFUSION_BIN, DIFFUSION_SOURCE, DIFFUSION_TEST_DATA and DIFFUSION_PYTHON.
set -uo pipefail
source "$(dirname "$0")/cli_common.sh" distill_cli_test
MPI=("${MPIRUN[@]}")
"$BIN/diffusion-data" make-toy --kind gmm-ring --num 20000 --seed 0 --out "$WORK/ring.h5" >/dev/null

# --- the teacher: toy_2d shortened, with its recipe before issue #13 (eps prediction, constant lr
# 1e-3, batch 256) pinned: the test wants a teacher whose DDIM-4 is poor, for the student to beat --
if ! "${MPI[@]}" -np 2 "$BIN/diffusion-train" --config "$SRC/configs/toy_2d.ini" --data "$WORK/ring.h5" \
    --prediction eps --lr 1e-3 --lr-decay constant --batch-size 256 \
    --out "$WORK/teacher" --steps 1500 --threads 1 --log-every 500 >"$WORK/teacher.log" 2>&1; then
  fail "teacher training (log follows)"; cat "$WORK/teacher.log"
  finish; exit 1
fi

# Boost refuses an option given twice, so each command spells out teacher, data and steps.
COMMON=(--steps-per-round 200 --batch-size 256 --lr 3e-4 --checkpoint-every 100 --log-every 100 --threads 1)
DISTILL=("$BIN/diffusion-distill" "${COMMON[@]}" --teacher "$WORK/teacher" --data "$WORK/ring.h5"
         --start-steps 64 --target-steps 4)

# --- 64 → 4 on 2 ranks ------------------------------------------------------------------------
start=$(date +%s)
if "${MPI[@]}" -np 2 "${DISTILL[@]}" --out "$WORK/a" >"$WORK/a.log" 2>&1; then
  pass "mpirun -np 2 diffusion-distill 64 -> 4 exits 0 ($(( $(date +%s) - start )) s)"
else
  fail "mpirun -np 2 diffusion-distill (log follows)"; cat "$WORK/a.log"
fi
for n in 32 16 8 4; do
  if grep -q "^sampling-steps = $n$" "$WORK/a/steps-$n/config.ini" 2>/dev/null && \
     [ -e "$WORK/a/steps-$n/checkpoints/latest" ]; then
    pass "student run folder steps-$n records its step count and has a checkpoint"
  else
    fail "student run folder steps-$n"
  fi
done

# --- the 4-step student on its own grid vs the teacher's DDIM-4 --------------------------------
sample() {  # checkpoint out [options]
  local ckpt=$1 out=$2; shift 2
  "${MPI[@]}" -np 2 "$BIN/diffusion-sample" --checkpoint "$ckpt" --num-samples 2000 --out "$out" \
    --threads 1 "$@" >"$out.log" 2>&1 || { echo "sampling $ckpt failed:"; cat "$out.log"; }
}
nll() { "$BIN/diffusion-eval" --samples "$1/samples.h5" --reference "$WORK/ring.h5" --json "$1.json" >/dev/null 2>&1 \
          && "$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['gmm']['nll'])" "$1.json"; }
sample "$WORK/a/steps-4" "$WORK/s_student4"
grep -q "ddim with 4 steps" "$WORK/s_student4.log" && pass "the student samples with DDIM in its 4 steps by default" \
  || fail "the student's default sampling (log: $(grep '\[sample\]' "$WORK/s_student4.log" | head -1))"
best_teacher=""
for spacing in leading trailing; do
  sample "$WORK/teacher" "$WORK/s_teacher4_$spacing" --steps 4 --timestep-spacing "$spacing"
  v=$(nll "$WORK/s_teacher4_$spacing")
  echo "teacher DDIM-4 ($spacing): NLL $v"
  if [ -z "$best_teacher" ] || "$PY" -c "import sys; sys.exit(0 if $v < $best_teacher else 1)"; then best_teacher=$v; fi
done
student=$(nll "$WORK/s_student4")
echo "student 4 steps: NLL $student"
if [ -n "$student" ] && [ -n "$best_teacher" ] && \
   "$PY" -c "import sys; sys.exit(0 if $student < $best_teacher - 0.5 else 1)"; then
  pass "4-step student NLL $student beats the teacher's best DDIM-4 NLL $best_teacher"
else
  fail "4-step student NLL '$student' vs teacher DDIM-4 '$best_teacher'"
fi

# --- stopped mid-run by SIGUSR1 (forwarded by mpirun) and resumed: bit-identical students ------
timeout --preserve-status -s USR1 8 "${MPI[@]}" -np 2 "${DISTILL[@]}" --out "$WORK/b" >"$WORK/b1.log" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q "stop requested" "$WORK/b1.log"; then
  pass "SIGUSR1 stops the distillation with a checkpoint and exit 0 ($(grep -o 'stopped during the round to [0-9]* steps' "$WORK/b1.log" | head -1))"
else
  fail "SIGUSR1 stop (rc $rc; log follows)"; tail -5 "$WORK/b1.log"
fi
if "${MPI[@]}" -np 2 "${DISTILL[@]}" --out "$WORK/b" >"$WORK/b2.log" 2>&1 && grep -q "resumed from" "$WORK/b2.log"; then
  pass "the same command resumes the stopped round"
else
  fail "resume (log follows)"; tail -5 "$WORK/b2.log"
fi
sample "$WORK/b/steps-4" "$WORK/s_b4"
if "$PY" - "$WORK/s_student4/samples.h5" "$WORK/s_b4/samples.h5" <<'PYEOF'
import sys, h5py, numpy as np
a, b = (h5py.File(p)["x"][:] for p in sys.argv[1:])
assert a.shape == b.shape and np.array_equal(a, b), np.abs(a - b).max()
PYEOF
then pass "stopped-and-resumed distillation gives bit-identical 4-step samples"
else fail "stopped-and-resumed distillation differs from the uninterrupted one"; fi

# --- W = 1 vs W = 2: the first round's student ------------------------------------------------
"${MPI[@]}" -np 1 "$BIN/diffusion-distill" "${COMMON[@]}" --teacher "$WORK/teacher" --data "$WORK/ring.h5" \
  --start-steps 64 --target-steps 32 --out "$WORK/w1" >"$WORK/w1.log" 2>&1 || { fail "W=1 run"; tail -5 "$WORK/w1.log"; }
sample "$WORK/w1/steps-32" "$WORK/s_w1"
sample "$WORK/a/steps-32" "$WORK/s_w2"
if "$PY" - "$WORK/s_w1/samples.h5" "$WORK/s_w2/samples.h5" <<'PYEOF'
import sys, h5py, numpy as np
a, b = (h5py.File(p)["x"][:] for p in sys.argv[1:])
d = np.abs(a - b).max()
print("max |W=1 - W=2| over 2000 samples:", d)
assert d < 2e-3, d
PYEOF
then pass "W = 1 and W = 2 distil the same 32-step student (samples within 2e-3)"
else fail "W = 1 and W = 2 students differ"; fi

# --- bad input: a clear error, nothing written -------------------------------------------------
"$PY" -c "import h5py, numpy as np; f = h5py.File('$WORK/d3.h5', 'w'); f['x'] = np.zeros((64, 3), np.float32)"
expect_error() {  # name needle teacher data start target [more args...]
  local out="$WORK/bad-$passed-$failed"
  expect_fail "$1" "$2" "$out" "$BIN/diffusion-distill" "${COMMON[@]}" --teacher "$3" --data "$4" \
    --start-steps "$5" --target-steps "$6" "${@:7}" --out "$out"
}
T="$WORK/teacher" D="$WORK/ring.h5"
expect_error "target above start" "below --start-steps" "$T" "$D" 64 128
expect_error "non-power-of-two ratio" "power of two" "$T" "$D" 48 4
expect_error "start above T" "exceeds the teacher" "$T" "$D" 2048 1024
expect_error "data that does not fit the teacher" "d3.h5" "$T" "$WORK/d3.h5" 64 4
expect_error "guidance on an unconditional teacher" "unconditional" "$T" "$D" 64 4 --guidance-scale 3
expect_error "eps student" "student-prediction" "$T" "$D" 64 4 --student-prediction eps
expect_error "teacher without a checkpoint" "no complete checkpoint" "$WORK" "$D" 64 4
expect_error "unknown key" "unrecognised" "$T" "$D" 64 4 --no-such-key 1

# --- jobs fan-out on 3 ranks: distill (2 ranks), then sample the student (1 rank) --------------
cat >"$WORK/jobs.ini" <<INI
[job.distill]
kind = distill
ranks = 2
teacher = $WORK/teacher
data = $WORK/ring.h5
out = $WORK/jobs/distill
start-steps = 16
target-steps = 4
steps-per-round = 100
batch-size = 256
lr = 3e-4
log-every = 50
threads = 1

[job.student]
after = distill
checkpoint = $WORK/jobs/distill/steps-4
num-samples = 500
out = $WORK/jobs/student
threads = 1
INI
if "${MPI[@]}" -np 3 "$BIN/diffusion-sample" --jobs "$WORK/jobs.ini" >"$WORK/jobs.log" 2>&1 && \
   grep -E "^  distill +0-1 .* done$" "$WORK/jobs.log" >/dev/null && grep -E "^  student +2-2 .* done$" "$WORK/jobs.log" >/dev/null; then
  pass "jobs file on 3 ranks: distill on ranks 0-1, then the student sampled on rank 2 (summary table)"
else
  fail "jobs fan-out (log follows)"; tail -20 "$WORK/jobs.log"
fi
if grep -n "student: waiting for distill" "$WORK/jobs.log" >/dev/null && \
   [ "$(grep -n 'distill: done' "$WORK/jobs.log" | cut -d: -f1)" -lt "$(grep -n 'student: starting' "$WORK/jobs.log" | cut -d: -f1)" ]; then
  pass "the sampling job starts only after the distillation job is done"
else
  fail "job order"; grep "\[jobs\]" "$WORK/jobs.log"
fi
"${MPI[@]}" -np 2 "$BIN/diffusion-sample" --checkpoint "$WORK/jobs/distill/steps-4" --num-samples 500 \
  --out "$WORK/direct" --threads 1 >"$WORK/direct.log" 2>&1
if "$PY" - "$WORK/jobs/student/samples.h5" "$WORK/direct/samples.h5" <<'PYEOF'
import sys, h5py, numpy as np
a, b = (h5py.File(p)["x"][:] for p in sys.argv[1:])
assert a.shape == (500, 2) and np.array_equal(a, b)
PYEOF
then pass "the job's samples equal a direct diffusion-sample of the student at W=2"
else fail "the job's samples differ from a direct run"; fi
if "${MPI[@]}" -np 3 "$BIN/diffusion-sample" --jobs "$WORK/jobs.ini" >"$WORK/jobs2.log" 2>&1 && \
   [ "$(grep -c 'complete (re-run: nothing to do)$' "$WORK/jobs2.log")" -eq 2 ]; then
  pass "re-running the jobs file finds both jobs complete"
else
  fail "jobs re-run (log follows)"; tail -8 "$WORK/jobs2.log"
fi
bad_jobs() {  # name needle sed-expression
  sed -e "$3" -e "s|$WORK/jobs/|$WORK/badjobs/|" "$WORK/jobs.ini" >"$WORK/bad.ini"
  expect_fail "$1" "$2" "$WORK/badjobs" "${MPI[@]}" -np 3 "$BIN/diffusion-sample" --jobs "$WORK/bad.ini"
}
bad_jobs "jobs waiting in a cycle" "cycle" 's/^kind = distill$/kind = distill\nafter = student/'
bad_jobs "too many ranks" "ask for 4 ranks" 's/^ranks = 2$/ranks = 3/'
bad_jobs "unknown key in a job" "num-sample'" 's/^num-samples = 500$/num-sample = 500/'
bad_jobs "unknown job in after" "no job of that name" 's/^after = distill$/after = distil/'

finish
