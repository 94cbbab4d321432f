#!/usr/bin/env bash
# End-to-end test of consistency models on the gmm-ring toy set, both methods from the command
# line. Consistency distillation (diffusion-distill --method consistency) of a toy_2d teacher on
# 2 ranks: the student folder samples with no flags in 1 step and with --steps 2, and in one
# step it beats the teacher's own 1- and 2-step DDIM in NLL under the true mixture
# (diffusion-eval); W = 1 and W = 2 distil the same student (to float32 round-off); a run cut
# after step 20 and resumed equals the uninterrupted one bit for bit. Consistency training
# (diffusion-train --objective consistency): the same W and resume properties, the curriculum's
# grid in the log, and a model better than noise. Bad input (DDPM or guidance on a consistency
# model, consistency sampling of a denoiser, an eps consistency model, a consistency teacher)
# fails before anything is written.
# Run by ctest with DIFFUSION_BIN, DIFFUSION_SOURCE, DIFFUSION_TEST_DATA and DIFFUSION_PYTHON.
set -uo pipefail
source "$(dirname "$0")/cli_common.sh" consistency_cli_test
MPI=("${MPIRUN[@]}")
"$BIN/diffusion-data" make-toy --kind gmm-ring --num 20000 --seed 0 --out "$WORK/ring.h5" >/dev/null
D="$WORK/ring.h5"

# --- the teacher: toy_2d, shortened -----------------------------------------------------------
if ! "${MPI[@]}" -np 2 "$BIN/diffusion-train" --config "$SRC/configs/toy_2d.ini" --data "$D" \
    --out "$WORK/teacher" --steps 1000 --threads 1 --log-every 500 >"$WORK/teacher.log" 2>&1; then
  fail "teacher training (log follows)"; cat "$WORK/teacher.log"
  finish; exit 1
fi

sample() {  # checkpoint out [options]
  local ckpt=$1 out=$2; shift 2
  "${MPI[@]}" -np 2 "$BIN/diffusion-sample" --checkpoint "$ckpt" --num-samples 1000 --out "$out" \
    --threads 1 "$@" >"$out.log" 2>&1 || { echo "sampling $ckpt failed:"; cat "$out.log"; }
}
nll() { "$BIN/diffusion-eval" --samples "$1/samples.h5" --reference "$D" --json "$1.json" >/dev/null 2>&1 \
          && "$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['gmm']['nll'])" "$1.json"; }
less_than() { [ -n "$1" ] && [ -n "$2" ] && "$PY" -c "import sys; sys.exit(0 if $1 < $2 else 1)"; }
same_samples() {  # a b tolerance (0: bit-identical)
  "$PY" - "$1/samples.h5" "$2/samples.h5" "$3" <<'PYEOF'
import sys, h5py, numpy as np
a, b = (h5py.File(p)["x"][:] for p in sys.argv[1:3])
d = np.abs(a - b).max()
print("max |a - b|:", d)
assert a.shape == b.shape and (np.array_equal(a, b) if float(sys.argv[3]) == 0 else d < float(sys.argv[3])), d
PYEOF
}

# --- consistency distillation on 2 ranks -------------------------------------------------------
COMMON=(--batch-size 256 --lr 1e-3 --checkpoint-every 10 --log-every 100 --threads 1)
CD=("$BIN/diffusion-distill" --method consistency "${COMMON[@]}" --teacher "$WORK/teacher" --data "$D")
start=$(date +%s)
if "${MPI[@]}" -np 2 "${CD[@]}" --steps-per-round 300 --out "$WORK/cd" >"$WORK/cd.log" 2>&1; then
  pass "mpirun -np 2 diffusion-distill --method consistency exits 0 ($(( $(date +%s) - start )) s)"
else
  fail "consistency distillation (log follows)"; cat "$WORK/cd.log"
fi
cfg="$WORK/cd/consistency/config.ini"
if grep -q "^objective = consistency$" "$cfg" 2>/dev/null && grep -q "^method = consistency$" "$cfg" && \
   grep -q "^ema-rates = 0.95$" "$cfg" && [ -e "$WORK/cd/consistency/checkpoints/latest" ]; then
  pass "the student folder records objective and method consistency and keeps the target EMA 0.95"
else
  fail "student folder $cfg"; cat "$cfg"
fi
sample "$WORK/cd/consistency" "$WORK/s_cd1"
grep -q "consistency with 1 steps" "$WORK/s_cd1.log" && pass "the student samples in one consistency step by default" \
  || fail "the student's default sampling (log: $(grep '\[sample\]' "$WORK/s_cd1.log" | head -2))"
sample "$WORK/cd/consistency" "$WORK/s_cd2" --steps 2
cd1=$(nll "$WORK/s_cd1"); cd2=$(nll "$WORK/s_cd2")
sample "$WORK/teacher" "$WORK/s_t1" --steps 1 --timestep-spacing trailing
sample "$WORK/teacher" "$WORK/s_t2" --steps 2 --timestep-spacing trailing
sample "$WORK/teacher" "$WORK/s_t50" --steps 50
t1=$(nll "$WORK/s_t1"); t2=$(nll "$WORK/s_t2"); t50=$(nll "$WORK/s_t50")
echo "NLL: CD student 1 step $cd1, 2 steps $cd2; teacher DDIM-1 $t1, DDIM-2 $t2, DDIM-50 $t50"
less_than "$cd1" "$t1" && less_than "$cd1" "$t2" \
  && pass "the 1-step CD student (NLL $cd1) beats the teacher's DDIM-1 ($t1) and DDIM-2 ($t2)" \
  || fail "1-step CD student NLL '$cd1' vs teacher DDIM-1 '$t1', DDIM-2 '$t2'"
less_than "$cd2" "$t2" && pass "the 2-step CD student (NLL $cd2) beats the teacher's DDIM-2 ($t2)" \
  || fail "2-step CD student NLL '$cd2' vs teacher DDIM-2 '$t2'"

# --- W = 1 vs W = 2, and cut-and-resume ----------------------------------------------------------
"${MPI[@]}" -np 1 "${CD[@]}" --steps-per-round 30 --out "$WORK/cd_w1" >"$WORK/cd_w1.log" 2>&1 || fail "CD at W=1"
"${MPI[@]}" -np 2 "${CD[@]}" --steps-per-round 30 --out "$WORK/cd_w2" >"$WORK/cd_w2.log" 2>&1 || fail "CD at W=2"
sample "$WORK/cd_w1/consistency" "$WORK/s_cd_w1"
sample "$WORK/cd_w2/consistency" "$WORK/s_cd_w2"
same_samples "$WORK/s_cd_w1" "$WORK/s_cd_w2" 2e-3 && pass "W = 1 and W = 2 distil the same consistency student" \
  || fail "W = 1 and W = 2 consistency students differ"
# Cut after step 20 (the step-30 checkpoint removed), resumed by the same command.
"${MPI[@]}" -np 2 "${CD[@]}" --steps-per-round 30 --out "$WORK/cd_r" >"$WORK/cd_r1.log" 2>&1
rm -rf "$WORK/cd_r/consistency/checkpoints/step-00000030" && echo step-00000020 >"$WORK/cd_r/consistency/checkpoints/latest"
"${MPI[@]}" -np 2 "${CD[@]}" --steps-per-round 30 --out "$WORK/cd_r" >"$WORK/cd_r2.log" 2>&1
sample "$WORK/cd_r/consistency" "$WORK/s_cd_r"
grep -q "resumed from .*step-00000020" "$WORK/cd_r2.log" && same_samples "$WORK/s_cd_w2" "$WORK/s_cd_r" 0 \
  && pass "consistency distillation resumed from step 20 is bit-identical to the uninterrupted run" \
  || { fail "CD resume"; grep "\[ckpt\]" "$WORK/cd_r2.log"; }

# --- consistency training ---------------------------------------------------------------------
CT=("$BIN/diffusion-train" --config "$SRC/configs/toy_2d.ini" --data "$D" --objective consistency --prediction v
    --batch-size 256 --lr 1e-3 --lr-decay constant --threads 1 --checkpoint-every 20 --log-every 100 --ema-rates 0.999)
"${MPI[@]}" -np 2 "${CT[@]}" --steps 800 --out "$WORK/ct" >"$WORK/ct.log" 2>&1 || { fail "CT run"; tail -5 "$WORK/ct.log"; }
sample "$WORK/ct" "$WORK/s_ct1"
"$PY" - "$D" "$WORK/noise.h5" <<'PYEOF'
import sys, h5py, numpy as np
n = h5py.File(sys.argv[1])["x"].shape[1]
with h5py.File(sys.argv[2], "w") as f: f["x"] = np.random.default_rng(0).standard_normal((1000, n)).astype(np.float32)
PYEOF
mkdir -p "$WORK/noise" && mv "$WORK/noise.h5" "$WORK/noise/samples.h5"
ct1=$(nll "$WORK/s_ct1"); noise=$(nll "$WORK/noise")
echo "NLL: CT model 1 step $ct1; N(0, I) noise $noise"
less_than "$ct1" "$noise" && pass "the consistency-trained model (1 step, NLL $ct1) beats noise ($noise)" \
  || fail "CT NLL '$ct1' vs noise '$noise'"
"${MPI[@]}" -np 1 "${CT[@]}" --steps 40 --out "$WORK/ct_w1" >"$WORK/ct_w1.log" 2>&1 || fail "CT at W=1"
"${MPI[@]}" -np 2 "${CT[@]}" --steps 40 --out "$WORK/ct_w2" >"$WORK/ct_w2.log" 2>&1 || fail "CT at W=2"
sample "$WORK/ct_w1" "$WORK/s_ct_w1"
sample "$WORK/ct_w2" "$WORK/s_ct_w2"
same_samples "$WORK/s_ct_w1" "$WORK/s_ct_w2" 2e-3 && pass "W = 1 and W = 2 consistency-train the same model" \
  || fail "W = 1 and W = 2 CT models differ"
cp -r "$WORK/ct_w2" "$WORK/ct_r"
rm -rf "$WORK/ct_r/checkpoints/step-00000040" && echo step-00000020 >"$WORK/ct_r/checkpoints/latest"
"${MPI[@]}" -np 2 "${CT[@]}" --steps 40 --out "$WORK/ct_r" >"$WORK/ct_r.log" 2>&1
sample "$WORK/ct_r" "$WORK/s_ct_r"
grep -q "resumed from .*step-00000020" "$WORK/ct_r.log" && same_samples "$WORK/s_ct_w2" "$WORK/s_ct_r" 0 \
  && pass "consistency training resumed from step 20 (mid-curriculum) is bit-identical" \
  || { fail "CT resume"; grep "\[ckpt\]" "$WORK/ct_r.log"; }

# --- chosen time points (--time-points) -----------------------------------------------------------
# Trailing spacing's own points give the same samples as --steps 2; other points other samples.
sample "$WORK/ct" "$WORK/s_ct2" --steps 2
sample "$WORK/ct" "$WORK/s_ct2_tp" --time-points 999,499
sample "$WORK/ct" "$WORK/s_ct2_low" --time-points 999,249
same_samples "$WORK/s_ct2" "$WORK/s_ct2_tp" 0 && grep -q "consistency with 2 steps" "$WORK/s_ct2_tp.log" \
  && pass "--time-points 999,499 samples as --steps 2 (trailing) does, bit for bit" || fail "--time-points 999,499"
! same_samples "$WORK/s_ct2" "$WORK/s_ct2_low" 0 >/dev/null 2>&1 && grep -q '"time_points"' "$WORK/s_ct2_low/manifest.json" \
  && pass "--time-points 999,249 samples at its own points and records them" || fail "--time-points 999,249"
grid=$(sed -n 's/^grid = //p' "$WORK/cd/consistency/config.ini")
mid=$(echo "$grid" | tr ',' '\n' | sed -n 8p)
sample "$WORK/cd/consistency" "$WORK/s_cd_tp" --time-points "999,$mid"
[ -f "$WORK/s_cd_tp/samples.h5" ] && pass "the CD student samples at --time-points 999,$mid on its grid" \
  || fail "--time-points on the student's grid ($grid)"

# --- bad input: a clear error, nothing written ---------------------------------------------------
S=("${MPI[@]}" -np 1 "$BIN/diffusion-sample" --num-samples 10 --threads 1)
expect_fail "DDPM on a consistency model" "samples with --sampler consistency" "$WORK/bad1" \
  "${S[@]}" --checkpoint "$WORK/cd/consistency" --sampler ddpm --out "$WORK/bad1"
expect_fail "guidance on a consistency model" "guidance-scale 3" "$WORK/bad2" \
  "${S[@]}" --checkpoint "$WORK/cd/consistency" --guidance-scale 3 --out "$WORK/bad2"
expect_fail "consistency sampling of a denoiser" "is not a consistency model" "$WORK/bad3" \
  "${S[@]}" --checkpoint "$WORK/teacher" --sampler consistency --out "$WORK/bad3"
expect_fail "leading spacing for consistency sampling" "trailing" "$WORK/bad4" \
  "${S[@]}" --checkpoint "$WORK/ct" --steps 2 --timestep-spacing leading --out "$WORK/bad4"
expect_fail "an eps consistency model" "prediction" "$WORK/bad5" \
  "${MPI[@]}" -np 1 "$BIN/diffusion-train" --config "$SRC/configs/toy_2d.ini" --data "$D" --objective consistency \
  --prediction eps --steps 5 --out "$WORK/bad5"
expect_fail "a consistency model as teacher" "is a consistency model" "$WORK/bad6" \
  "${MPI[@]}" -np 1 "$BIN/diffusion-distill" --method consistency --teacher "$WORK/ct" --data "$D" --out "$WORK/bad6"
expect_fail "time points off a student's grid" "not on the consistency student's training grid" "$WORK/bad8" \
  "${S[@]}" --checkpoint "$WORK/cd/consistency" --time-points 999,300 --out "$WORK/bad8"
expect_fail "time points not starting at T-1" "must be t = 999" "$WORK/bad9" \
  "${S[@]}" --checkpoint "$WORK/ct" --time-points 900,400 --out "$WORK/bad9"
expect_fail "time points for a denoiser" "is not a consistency model" "$WORK/bad10" \
  "${S[@]}" --checkpoint "$WORK/teacher" --time-points 999,499 --out "$WORK/bad10"
expect_fail "time points against --steps" "leave --steps out" "$WORK/bad11" \
  "${S[@]}" --checkpoint "$WORK/ct" --time-points 999,499 --steps 3 --out "$WORK/bad11"
expect_fail "unknown teacher solver" "teacher-solver" "$WORK/bad7" \
  "${CD[@]}" --teacher-solver rk4 --out "$WORK/bad7"

finish
