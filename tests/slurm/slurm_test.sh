#!/usr/bin/env bash
# The project's own Slurm batch scripts (launch/slurm/) on a real single-node Slurm started by
# tests/slurm/cluster.sh: an impossible job is refused at submission (EnforcePartLimits=ALL);
# a 2-rank training job under srun --mpi=pmix writes a checkpoint with a falling loss and gives
# each local rank its own entry of CUDA_VISIBLE_DEVICES; the same training under mpirun and
# under srun is warned with USR1 (as --signal=B:USR1@T does), checkpoints, requeues itself
# and ends with exactly the parameters, EMA and optimiser state of the uninterrupted run;
# distillation and a jobs file (4 ranks under mpirun) run; sampling as one MPI job and as a
# job array writing into one folder (one task warned and requeued mid-way) give the same
# samples.h5.
# Skips (exit 77) only when Slurm is not installed or its daemons cannot start.
# Run by ctest with DIFFUSION_BIN, DIFFUSION_SOURCE, DIFFUSION_TEST_DATA and DIFFUSION_PYTHON.
set -uo pipefail

BIN="${DIFFUSION_BIN:?DIFFUSION_BIN must point at build/bin}"
SRC="${DIFFUSION_SOURCE:?}"
PY="${DIFFUSION_PYTHON:-python3}"
WORK="${DIFFUSION_TEST_DATA:-/tmp}/slurm_test-$$"
# The cluster's state under /tmp: munged, running as the munge user, must reach its socket.
CLUSTER=$(mktemp -d /tmp/diffusion-slurm-XXXXXX)
source "$SRC/tests/slurm/test_lib.sh"

rm -rf "$WORK" && mkdir -p "$WORK"
cleanup() { "$SRC/tests/slurm/cluster.sh" stop "$CLUSTER"; [ -n "${SLURM_TEST_KEEP:-}" ] || rm -rf "$WORK"; }
trap cleanup EXIT

out=$("$SRC/tests/slurm/cluster.sh" start "$CLUSTER" 2>&1)
rc=$?
if [ "$rc" -ne 0 ]; then
  echo "$out"
  echo "SKIP: no single-node Slurm here (cluster.sh start exited $rc); launch/setup.sh installs slurmctld slurmd slurm-client munge"
  exit 77
fi
export SLURM_CONF="$CLUSTER/slurm.conf"
echo "[slurm_test] cluster up: $(sinfo -h -o '%P %D node(s) %c CPUs %t')"
# The batch scripts' jobs start in the submit folder; relative paths below are under WORK.
cd "$WORK" || exit 1
export DIFFUSION_BIN="$BIN"
unset LAUNCHER RESUBMIT THREADS

"$BIN/diffusion-data" make-toy --kind gmm-ring --num 4000 --seed 0 --out ring.h5 >/dev/null || { echo "FAIL: toy data"; exit 1; }
STEPS=400
# toy_2d's recipe before issue #13 pinned (eps, constant lr 1e-3): the loss check below is sized on ε,
# whose loss falls further than v's (v: last/first about 0.92 over these 400 steps).
TRAIN_ARGS=(--config "$SRC/configs/toy_2d.ini" --data ring.h5 --steps "$STEPS" --batch-size 128 --log-every 10
            --prediction eps --lr 1e-3 --lr-decay constant)
# Slurm advertises 8 CPUs on 2 cores: ranks that spin while they wait would starve each other.
export OMPI_MCA_mpi_yield_when_idle=1
SBATCH=(sbatch --wait --parsable --nodes=1 --ntasks-per-node=2 --time=10)

# --- an impossible job is refused at submission, not left pending ----------------------------
if ! msg=$(sbatch --nodes=2 "$SRC/launch/slurm/train.sbatch" "${TRAIN_ARGS[@]}" --out never 2>&1) &&
   grep -q "Node count specification invalid" <<<"$msg" &&
   ! msg2=$(sbatch --ntasks=64 "$SRC/launch/slurm/train.sbatch" "${TRAIN_ARGS[@]}" --out never 2>&1) &&
   grep -q "More processors requested than permitted" <<<"$msg2" && [ -z "$(squeue -h)" ]; then
  pass "2 nodes or 64 ranks on a 1-node, 8-CPU cluster: refused at submission (EnforcePartLimits=ALL)"
else
  fail "impossible jobs not refused: '$msg' '$msg2' queue: $(squeue -h)"
fi

# --- 2-rank training under srun --mpi=pmix (the default launcher) ----------------------------
CUDA_VISIBLE_DEVICES=3,5 "${SBATCH[@]}" -o train_srun.out \
  "$SRC/launch/slurm/train.sbatch" "${TRAIN_ARGS[@]}" --out run_ref >job_a.id
rc=$?
if [ "$rc" -eq 0 ] && [ "$(cat run_ref/checkpoints/latest 2>/dev/null)" = "step-00000400" ] &&
   [ -f run_ref/checkpoints/step-00000400/manifest.json ] && grep -q "launcher srun" train_srun.out &&
   grep -q "on 2 rank(s)" train_srun.out; then
  pass "train.sbatch, srun --mpi=pmix, 2 ranks: exit 0, checkpoint step-00000400"
else
  fail "train.sbatch under srun (rc $rc, job $(cat job_a.id))"; show_log train_srun.out
fi
if "$PY" - run_ref/metrics.jsonl <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert rows[-1]["step"] == 400, rows[-1]
first = sum(r["loss"] for r in rows[:3]) / 3
last = sum(r["loss"] for r in rows[-10:]) / 10
print(f"loss: first 3 records {first:.3f}, last 10 records {last:.3f}")
assert last < 0.6 * first, (first, last)
PYEOF
then pass "training loss falls (metrics.jsonl)"; else fail "training loss falls"; fi
if grep -q "local rank 0: GPU 3 of 2" train_srun.out && grep -q "local rank 1: GPU 5 of 2" train_srun.out; then
  pass "local rank -> GPU: CUDA_VISIBLE_DEVICES=3,5 gives rank 0 GPU 3 and rank 1 GPU 5"
else
  fail "local rank -> GPU mapping"; grep "\[launch\]" train_srun.out
fi

# The jobs below run side by side (the cluster has 8 CPUs; what does not fit waits in the
# queue): much of each is Slurm's requeue delay and sbatch --wait's polling.
sample_help=$("$BIN/diffusion-sample" --help)
has_jobs=0
grep -q -- "--jobs" <<<"$sample_help" && has_jobs=1
has_array=0
grep -q -- "--array-task" <<<"$sample_help" && has_array=1

# --- warned with USR1: checkpoint, requeue, resume to the same parameters; distill; jobs ------
# scancel -b signals the batch shell only, exactly as `#SBATCH --signal=B:USR1@T` does before a
# time limit (which Slurm enforces up to 30 s late: too slow and loose for a test).
for launcher in mpirun srun; do
  start_job "train_$launcher" env LAUNCHER="$launcher" RESUBMIT=1 "${SBATCH[@]}" -o "train_${launcher}_preempt.out" \
    "$SRC/launch/slurm/train.sbatch" "${TRAIN_ARGS[@]}" --out "run_$launcher"
done
DISTILL_ARGS=(--teacher run_ref --data ring.h5 --start-steps 8 --target-steps 2 --steps-per-round 30 --batch-size 128 --log-every 10)
start_job distill "${SBATCH[@]}" -o distill.out "$SRC/launch/slurm/distill.sbatch" "${DISTILL_ARGS[@]}" --out distilled
if ((has_jobs)); then
  cat >jobs.ini <<JOBS
[job.distill]
kind = distill
ranks = 2
teacher = run_ref
data = ring.h5
out = jobs_distilled
start-steps = 8
target-steps = 2
steps-per-round = 30
batch-size = 128

[job.teacher]
ranks = 1
checkpoint = run_ref
num-samples = 200
steps = 20
out = jobs_teacher

[job.student]
after = distill
ranks = 1
checkpoint = jobs_distilled/steps-2
num-samples = 200
out = jobs_student
JOBS
  start_job jobs env LAUNCHER=mpirun "${SBATCH[@]}" --ntasks-per-node=4 -o jobs.out "$SRC/launch/slurm/jobs.sbatch" jobs.ini
fi
for launcher in mpirun srun; do
  signal_when "train_${launcher}_preempt.out" "step 50/" "train_$launcher"
done

for launcher in mpirun srun; do
  log="train_${launcher}_preempt.out"
  wait_job "train_$launcher"
  rc=$?
  job=$(cat "train_$launcher.id")
  stop_step=$(sed -n 's/.*checkpoint written at step \([0-9]*\), exiting.*/\1/p' "$log" | head -1)
  if [ "$rc" -eq 0 ] && [ -n "$stop_step" ] && ((stop_step < STEPS)) &&
     grep -q "requeueing job $job" "$log" && grep -q "resumed from run_$launcher/checkpoints/step-0*$stop_step " "$log" &&
     grep -q "job $job, start 2," "$log" && ! grep -q "job $job, start 3," "$log" &&
     [ "$(cat "run_$launcher/checkpoints/latest")" = "step-00000400" ]; then
    pass "$launcher: USR1 to the batch shell -> checkpoint at step $stop_step, exit 0, requeue, resume, finish"
  else
    fail "$launcher preemption flow (rc $rc, stop step '$stop_step')"; show_log "$log"
  fi
  if same_checkpoints run_ref "run_$launcher"; then
    pass "$launcher: the requeued run ends bit-identical to the uninterrupted run"
  else
    fail "$launcher: requeued run differs from the uninterrupted run"
  fi
done

wait_job distill
rc=$?
if [ "$rc" -eq 0 ] && [ "$(cat distilled/steps-2/checkpoints/latest 2>/dev/null)" = "step-00000030" ] &&
   grep -q "done: students distilled/steps-4, distilled/steps-2" distill.out; then
  pass "distill.sbatch, 2 ranks: students steps-4 and steps-2"
else
  fail "distill.sbatch (rc $rc)"; show_log distill.out
fi
if ((has_jobs)); then
  wait_job jobs
  rc=$?
  if [ "$rc" -eq 0 ] && [ "$(grep -c ' done$' jobs.out)" -eq 3 ] &&
     "$PY" -c "import h5py; assert h5py.File('jobs_student/samples.h5')['x'].shape == (200, 2)"; then
    pass "jobs.sbatch, 4 ranks under mpirun: distill, teacher and student (after distill) jobs done"
  else
    fail "jobs.sbatch (rc $rc)"; show_log jobs.out
  fi
else
  echo "NOTE: diffusion-sample has no --jobs yet; jobs.sbatch not tested"
fi

# --- sampling: one MPI job, and a job array into one folder whose task 1 is warned ------------
SAMPLE_ARGS=(--checkpoint run_ref --num-samples 3600 --steps 100 --batch-size 16 --seed 7)
start_job sample "${SBATCH[@]}" -o sample.out "$SRC/launch/slurm/sample.sbatch" "${SAMPLE_ARGS[@]}" --out samples_one
if ((has_array)); then
  # diffusion-sample has no signal handler: USR1 kills it; its finished batches stay in its
  # shard and the requeued task resumes from them.
  start_job array env RESUBMIT=1 sbatch --wait --parsable --array=0-2 --ntasks-per-node=1 --time=10 \
    -o 'array-%a.out' "$SRC/launch/slurm/sample_array.sbatch" "${SAMPLE_ARGS[@]}" --out samples_array
  # The first progress line (after 2 s) means finished batches are in the task's shard.
  signal_when array-1.out "samples of task 1," array _1
fi
wait_job sample
rc=$?
if [ "$rc" -eq 0 ] && "$PY" -c "import h5py, numpy as np; x = h5py.File('samples_one/samples.h5')['x'][:]; assert x.shape == (3600, 2) and np.isfinite(x).all(), x.shape"; then
  pass "sample.sbatch, 2 ranks: samples.h5 with 3600 finite samples"
else
  fail "sample.sbatch (rc $rc)"; show_log sample.out
fi
if ((has_array)); then
  wait_job array
  rc=$?
  if [ "$rc" -eq 0 ] && grep -q "requeueing job" array-1.out && grep -q "resuming after [1-9]" array-1.out &&
     grep -q "(array task 1), start 2," array-1.out && ! grep -q "start 2," array-0.out array-2.out; then
    pass "sample_array.sbatch --array=0-2: task 1 warned, requeued, resumed ($(grep -o 'resuming after [0-9]* of [0-9]*' array-1.out | head -1))"
  else
    fail "sample_array.sbatch (rc $rc)"; for f in array-*.out; do show_log "$f"; done
  fi
  if "$PY" -c "
import h5py, numpy as np
a = h5py.File('samples_one/samples.h5'); b = h5py.File('samples_array/samples.h5')
assert set(a.keys()) == set(b.keys()), (list(a), list(b))
for k in a.keys():
    assert np.array_equal(a[k][:], b[k][:]), k
print('array samples.h5 == single job:', {k: a[k].shape for k in a.keys()})"; then
    pass "the array's merged samples.h5 equals the single job's"
  else
    fail "the array's samples.h5 differs from the single job's"
  fi
else
  echo "NOTE: diffusion-sample has no --array-task yet; sample_array.sbatch not tested"
fi

echo "slurm_test: $passed passed, $failed failed in $(( $(date +%s) - T0 )) s"
[ "$failed" -eq 0 ]
