#!/usr/bin/env bash
# Two nodes on one machine: tests/slurm/cluster.sh builds node1 and node2 from Linux namespaces
# (tests/slurm/nodes.sh: own network namespace and host name each, veth links on a bridge in a
# third namespace) and runs one slurmctld (on node1) and a slurmd per node. The test body runs on
# node1, the login node. It shows, with real Slurm and Open MPI over TCP between the nodes:
#  - the nodes share no shared-memory transport (Open MPI with only self,vader cannot connect
#    them), and mpirun with a hostfile (its remote shell enters the other node: node_rsh.sh)
#    trains the same model as one node's 4 ranks;
#  - train.sbatch -N 2 (srun, 2 ranks per node): per-node layout, local ranks and GPU mapping
#    per node, logged per rank with its host; the model equals the one-node 4-rank run;
#    checkpoints from 2 nodes resume on one node at W = 2 and the other way round;
#  - preemption across nodes (srun and mpirun): USR1 reaches every rank on both nodes, a
#    checkpoint, a requeue, and a finish bit-identical to the uninterrupted 2-node run;
#  - a stopped rank (SIGSTOP) on either node ends the job within --collective-timeout, named;
#  - sample.sbatch, sample_array.sbatch and a jobs file over both nodes give the samples.h5 of
#    one process;
#  - a node lost mid-run (everything on node2 killed, slurmd included): the job ends within
#    30 s, the last complete checkpoint is intact and a run on node1 alone resumes from it;
#  - the teardown leaves no namespace and no daemon behind.
# Skips (exit 77) only when Slurm is not installed, namespaces cannot be made or the daemons do
# not start. Run by ctest with DIFFUSION_BIN, DIFFUSION_SOURCE, DIFFUSION_TEST_DATA, DIFFUSION_PYTHON.
set -uo pipefail

BIN="${DIFFUSION_BIN:?DIFFUSION_BIN must point at build/bin}"
SRC="${DIFFUSION_SOURCE:?}"
PY="${DIFFUSION_PYTHON:-python3}"
export DIFFUSION_BIN DIFFUSION_SOURCE DIFFUSION_PYTHON

# ---------------------------------------------------------------------------------------------
# Outside the nodes: build the cluster, run the body on node1, tear down and check the teardown.
if [ "${1:-}" != --on-node1 ]; then
  WORK="${DIFFUSION_TEST_DATA:-/tmp}/multinode_test-$$"
  # Under /tmp: munged, running as the munge user, must reach its socket.
  CLUSTER=$(mktemp -d /tmp/diffusion-slurm2-XXXXXX)
  teardown() {
    "$SRC/tests/slurm/cluster.sh" stop "$CLUSTER"
    [ -n "${SLURM_TEST_KEEP:-}" ] || rm -rf "$WORK"
  }
  trap teardown EXIT
  rm -rf "$WORK" && mkdir -p "$WORK"
  out=$(DIFFUSION_CLUSTER_OWNER=$$ "$SRC/tests/slurm/cluster.sh" start "$CLUSTER" 2 2>&1)
  rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "$out"
    echo "SKIP: no two-node Slurm here (cluster.sh start DIR 2 exited $rc): needs root, network namespaces and slurmctld slurmd slurm-client munge"
    exit 77
  fi
  prefix=$(cat "$CLUSTER/prefix")
  daemons=$(cat "$CLUSTER"/*.pid)
  export SLURM_CONF="$CLUSTER/slurm.conf" DIFFUSION_NODES_PREFIX="$prefix" MULTINODE_WORK="$WORK"
  "$SRC/tests/slurm/cluster.sh" on "$CLUSTER" node1 bash "$0" --on-node1
  rc=$?
  trap - EXIT
  teardown
  left=""
  ip netns list | grep -q "^$prefix-" && left+=" namespaces: $(ip netns list | grep "^$prefix-" | tr '\n' ' ')"
  for pid in $daemons; do kill -0 "$pid" 2>/dev/null && left+=" process $pid ($(cat /proc/"$pid"/comm 2>/dev/null))"; done
  [ -e "$CLUSTER" ] && left+=" folder $CLUSTER"
  if [ -n "$left" ]; then
    echo "FAIL: the teardown left behind:$left"
    exit 1
  fi
  echo "PASS: teardown: no namespace, daemon or folder of the cluster left"
  exit "$rc"
fi

# ---------------------------------------------------------------------------------------------
# On node1.
WORK="${MULTINODE_WORK:?}"
source "$SRC/tests/slurm/test_lib.sh"
cd "$WORK" || exit 1
unset LAUNCHER RESUBMIT THREADS
echo "[multinode_test] on $(hostname), cluster: $(sinfo -h -N -o '%N %c CPUs %t' | tr '\n' ';')"

export OMP_NUM_THREADS=1
# Slurm advertises 8 CPUs per node on 2 real cores: ranks that spin while they wait would
# starve each other.
export OMPI_MCA_mpi_yield_when_idle=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
export OMPI_MCA_rmaps_base_oversubscribe=1
MPIRUN=(mpirun)
[ "$(id -u)" -eq 0 ] && MPIRUN+=(--allow-run-as-root)
# mpirun across the nodes with a hostfile: its "ssh" enters the other node's namespaces.
printf 'node1 slots=2\nnode2 slots=2\n' >hostfile
HOSTFILE_MPIRUN=("${MPIRUN[@]}" --hostfile hostfile -np 4 --mca plm_rsh_agent "$SRC/tests/slurm/node_rsh.sh"
                 --mca plm_rsh_no_tree_spawn 1 -x OMP_NUM_THREADS)
SBATCH=(sbatch --wait --parsable --nodes=2 --ntasks-per-node=2 --time=10)

"$BIN/diffusion-data" make-toy --kind gmm-ring --num 4000 --seed 0 --out ring.h5 >/dev/null || { echo "FAIL: toy data"; exit 1; }
# A narrow toy MLP: the whole test shares 2 cores.
STEPS=120
HALF=60
MODEL_ARGS=(--config "$SRC/configs/toy_2d.ini" --data ring.h5 --mlp-hidden 64 --batch-size 64 --log-every 10)
TRAIN_ARGS=("${MODEL_ARGS[@]}" --steps "$STEPS" --checkpoint-every "$HALF")
TRAIN=("$BIN/diffusion-train" "${MODEL_ARGS[@]}" --threads 1)  # --steps and --checkpoint-every per run
# W-invariance at float32 round-off (the same 4 ranks reduce in the same order wherever they
# run); after a change of W the runs part by what the summation order changes.
ROUNDOFF=1e-5
RESHARD=2e-3

ckpt() { printf 'step-%08d' "$1"; }  # a checkpoint's folder name
# hosts_of LOG: the sorted host of every rank's [device] line, e.g. "node1 node1 node2 node2".
# Every match, not one per line: mpirun may forward two ranks' lines without a newline between.
hosts_of() { grep -o '\[device\] rank [0-9]* of [0-9]* on host [a-z0-9]*' "$1" | sed 's/.* on host //' | sort | tr '\n' ' ' | sed 's/ $//'; }

# --- the Slurm jobs first, side by side (much of each is Slurm's polling and requeue delay) ---
CUDA_VISIBLE_DEVICES=3,5 start_job train2 "${SBATCH[@]}" -o train_2n.out \
  "$SRC/launch/slurm/train.sbatch" "${TRAIN_ARGS[@]}" --out run_2n
for launcher in srun mpirun; do
  start_job "pre_$launcher" env LAUNCHER="$launcher" RESUBMIT=1 "${SBATCH[@]}" -o "preempt_$launcher.out" \
    "$SRC/launch/slurm/train.sbatch" "${TRAIN_ARGS[@]}" --out "run_pre_$launcher"
  # Preemption: USR1 to the batch shell once training runs.
  signal_when "preempt_$launcher.out" "step 30/" "pre_$launcher" &
done

# --- no shared memory between the nodes; mpirun --hostfile over TCP ---------------------------
"${MPIRUN[@]}" -np 4 "${TRAIN[@]}" --steps "$STEPS" --checkpoint-every "$HALF" --out run_1n >train_1n.log 2>&1 ||
  { fail "4 ranks on node1 (mpirun)"; show_log train_1n.log; }
if ! timeout 60 "${HOSTFILE_MPIRUN[@]}" --mca btl self,vader "${TRAIN[@]}" --steps 1 --out run_vader >vader.log 2>&1 &&
   grep -q "unable to reach each other" vader.log; then
  pass "node1 and node2 share no shared-memory transport: with btl self,vader only, MPI cannot connect them"
else
  fail "a 2-node run with btl self,vader did not fail as it must"; show_log vader.log
fi
if timeout 120 "${HOSTFILE_MPIRUN[@]}" "${TRAIN[@]}" --steps "$STEPS" --checkpoint-every "$HALF" --out run_hostfile >hostfile.log 2>&1 &&
   [ "$(hosts_of hostfile.log)" = "node1 node1 node2 node2" ] &&
   grep -q "local rank 1 of 2" hostfile.log; then
  pass "mpirun --hostfile over TCP: ranks on node1, node1, node2, node2 (local ranks 0, 1 per node), exit 0"
else
  fail "mpirun --hostfile across the nodes"; show_log hostfile.log
fi
if same_checkpoints run_1n run_hostfile "$ROUNDOFF"; then
  pass "mpirun --hostfile on 2 nodes trains the model of 4 ranks on one node"
else
  fail "mpirun --hostfile model differs from the one-node model"
fi
# The start of the other direction of the resharding test: HALF steps on one node at W = 2.
"${MPIRUN[@]}" -np 2 "${TRAIN[@]}" --steps "$HALF" --checkpoint-every "$HALF" --out run_1to2 >train_1to2_a.log 2>&1 ||
  { fail "2 ranks on node1, $HALF steps"; show_log train_1to2_a.log; }
start_job one_to_two "${SBATCH[@]}" -o train_1to2.out "$SRC/launch/slurm/train.sbatch" "${TRAIN_ARGS[@]}" --out run_1to2


# --- train.sbatch -N 2 ---------------------------------------------------------------------
wait_job train2
rc=$?
if [ "$rc" -eq 0 ] && [ "$(cat run_2n/checkpoints/latest 2>/dev/null)" = "$(ckpt "$STEPS")" ] &&
   [ "$(hosts_of train_2n.out)" = "node1 node1 node2 node2" ] &&
   grep -q "node node1: ranks 0-1 (2), 1 thread(s) each" train_2n.out &&
   grep -q "node node2: ranks 2-3 (2), 1 thread(s) each" train_2n.out; then
  pass "train.sbatch -N 2 under srun: exit 0, ranks 0-1 on node1 and 2-3 on node2, layout printed"
else
  fail "train.sbatch -N 2 (rc $rc)"; show_log train_2n.out
fi
gpu_lines=$(grep -o '\[launch\] node[12] local rank [01]: GPU [0-9]* of 2' train_2n.out | sort | tr '\n' ';')
if [ "$gpu_lines" = "[launch] node1 local rank 0: GPU 3 of 2;[launch] node1 local rank 1: GPU 5 of 2;[launch] node2 local rank 0: GPU 3 of 2;[launch] node2 local rank 1: GPU 5 of 2;" ]; then
  pass "GPU mapping per node: CUDA_VISIBLE_DEVICES=3,5 gives local rank 0 GPU 3 and local rank 1 GPU 5 on each node"
else
  fail "per-node GPU mapping: $gpu_lines"
fi
if same_checkpoints run_1n run_2n "$ROUNDOFF"; then
  pass "the 2-node srun model equals the 1-node 4-rank model"
else
  fail "the 2-node model differs from the 1-node model"
fi

# Checkpoint of 2 nodes (W = 4) resumed on one node at W = 2.
mkdir -p run_2to1/checkpoints && cp run_2n/config.ini run_2to1/ && cp -r run_2n/checkpoints/$(ckpt "$HALF") run_2to1/checkpoints/ &&
  echo "$(ckpt "$HALF")" >run_2to1/checkpoints/latest
if "${MPIRUN[@]}" -np 2 "${TRAIN[@]}" --steps "$STEPS" --checkpoint-every "$HALF" --out run_2to1 >train_2to1.log 2>&1 &&
   grep -q "resumed from run_2to1/checkpoints/$(ckpt "$HALF")" train_2to1.log && same_checkpoints run_1n run_2to1 "$RESHARD"; then
  pass "a checkpoint written on 2 nodes (W = 4) resumes on one node at W = 2 and ends near the W = 4 model"
else
  fail "2 nodes -> 1 node resume"; show_log train_2to1.log
fi
wait_job one_to_two
rc=$?
if [ "$rc" -eq 0 ] && grep -q "resumed from run_1to2/checkpoints/$(ckpt "$HALF")" train_1to2.out &&
   [ "$(hosts_of train_1to2.out)" = "node1 node1 node2 node2" ] && same_checkpoints run_1n run_1to2 "$RESHARD"; then
  pass "a checkpoint written on one node (W = 2) resumes on 2 nodes at W = 4 and ends near the W = 4 model"
else
  fail "1 node -> 2 nodes resume (rc $rc)"; show_log train_1to2.out
fi

for launcher in srun mpirun; do
  log="preempt_$launcher.out"
  wait_job "pre_$launcher"
  rc=$?
  job=$(cat "pre_$launcher.id")
  stop_step=$(sed -n 's/.*checkpoint written at step \([0-9]*\), exiting.*/\1/p' "$log" | head -1)
  got=$(grep -o 'stop on host node[12]: got SIGUSR1' "$log" | sort | uniq -c | awk '{print $1 "x" $5}' | tr '\n' ' ')
  if [ "$rc" -eq 0 ] && [ -n "$stop_step" ] && ((stop_step < STEPS)) && [ "$got" = "2xnode1: 2xnode2: " ] &&
     grep -q "requeueing job $job" "$log" && grep -q "resumed from run_pre_$launcher/checkpoints/step-0*$stop_step " "$log" &&
     [ "$(cat "run_pre_$launcher/checkpoints/latest")" = "$(ckpt "$STEPS")" ]; then
    pass "$launcher on 2 nodes: USR1 reached all 4 ranks ($got), checkpoint at step $stop_step, requeue, resume, finish"
  else
    fail "$launcher preemption across nodes (rc $rc, stop step '$stop_step', got '$got')"; show_log "$log"
  fi
  if same_checkpoints run_2n "run_pre_$launcher"; then
    pass "$launcher on 2 nodes: the requeued run ends bit-identical to the uninterrupted one"
  else
    fail "$launcher on 2 nodes: the requeued run differs from the uninterrupted one"
  fi
done

# --- a stopped rank ------------------------------------------------------------------------
TIMEOUT_ARGS=(--collective-timeout 5)
"$BIN/diffusion-train" --help | grep -q -- "--collective-timeout" || TIMEOUT_ARGS=()
# rank_pid NODE RUN: the pid and rank ("PID RANK") of a diffusion-train process on NODE that
# trains into RUN.
rank_pid() {
  local p
  for p in $(ip netns pids "$DIFFUSION_NODES_PREFIX-$1" 2>/dev/null); do
    [ "$(cat /proc/"$p"/comm 2>/dev/null)" = diffusion-train ] || continue
    tr '\0' ' ' <"/proc/$p/cmdline" | grep -q -- "--out $2 " || continue
    echo "$p $(tr '\0' '\n' <"/proc/$p/environ" | sed -n 's/^\(SLURM_PROCID\|OMPI_COMM_WORLD_RANK\)=//p' | head -1)"
    return 0
  done
  return 1
}
# seconds_of LOG PATTERN: the time of day (in seconds) of the first [slurm] line with PATTERN.
seconds_of() { sed -n "s/^\[slurm\] \([0-9:]*\) .*$2.*/\1/p" "$1" | head -1 | awk -F: '{print $1 * 3600 + $2 * 60 + $3}'; }
if ((${#TIMEOUT_ARGS[@]})); then
  # One job per node whose rank gets stopped, side by side.
  for node in node2 node1; do
    start_job "stuck_$node" "${SBATCH[@]}" --no-requeue -o "stuck_$node.out" "$SRC/launch/slurm/train.sbatch" \
      "${MODEL_ARGS[@]}" --steps 100000 "${TIMEOUT_ARGS[@]}" --out "run_stuck_$node"
  done
  declare -A stopped_at stopped_rank
  for node in node2 node1; do
    wait_for "stuck_$node.out" "step 20/" || continue
    read -r pid rank < <(rank_pid "$node" "run_stuck_$node")
    [ -n "${pid:-}" ] && kill -STOP "$pid" && stopped_at[$node]=$(date -u +%s) && stopped_rank[$node]=$rank
  done
  for node in node2 node1; do
    wait_job "stuck_$node"
    rc=$?
    # From the SIGSTOP to the launcher's exit (the batch script logs the time).
    took=$(( $(seconds_of "stuck_$node.out" "launcher exited") - ${stopped_at[$node]:-0} % 86400 ))
    rank=${stopped_rank[$node]:-none}
    msg=$(grep -m1 "collective timeout" "stuck_$node.out")
    if [ "$rc" -ne 0 ] && [ -n "${stopped_at[$node]:-}" ] && ((took >= 0 && took <= 30)) &&
       grep -q "rank $rank ($node) did not answer" <<<"$msg" && grep -q "waited [0-9.]* s in '[a-z -]*'" <<<"$msg"; then
      pass "rank $rank on $node stopped (SIGSTOP): the job ended $took s later: $msg"
    else
      fail "stopped rank on $node (rc $rc, rank $rank, $took s): '$msg'"; show_log "stuck_$node.out"
    fi
  done
else
  fail "diffusion-train has no --collective-timeout"
fi

# --- sampling over both nodes: one MPI job, a job array, a jobs file --------------------------
SAMPLE_ARGS=(--checkpoint run_1n --steps 20 --batch-size 16)
ONE=(--num-samples 1200 --seed 7)
start_job sample "${SBATCH[@]}" -o sample.out "$SRC/launch/slurm/sample.sbatch" "${SAMPLE_ARGS[@]}" "${ONE[@]}" --out samples_2n
# 8 CPUs per task: one array task fills a node, so the tasks land on both nodes.
start_job array env THREADS=1 sbatch --wait --parsable --array=0-3 --ntasks-per-node=1 --cpus-per-task=8 --time=10 \
  -o 'array-%a.out' "$SRC/launch/slurm/sample_array.sbatch" "${SAMPLE_ARGS[@]}" "${ONE[@]}" --out samples_array
cat >jobs.ini <<JOBS
[job.spread]
ranks = 3
checkpoint = run_1n
num-samples = 1200
steps = 20
batch-size = 16
seed = 7
out = jobs_spread

[job.other]
ranks = 1
checkpoint = run_1n
num-samples = 300
steps = 20
batch-size = 16
seed = 8
out = jobs_other
JOBS
start_job jobs env LAUNCHER=mpirun "${SBATCH[@]}" -o jobs.out "$SRC/launch/slurm/jobs.sbatch" jobs.ini
"$BIN/diffusion-sample" "${SAMPLE_ARGS[@]}" "${ONE[@]}" --threads 1 --out samples_one >sample_one.log 2>&1 ||
  { fail "one-process sampling"; show_log sample_one.log; }
"$BIN/diffusion-sample" "${SAMPLE_ARGS[@]}" --num-samples 300 --seed 8 --threads 1 --out samples_one_b >sample_one_b.log 2>&1 ||
  { fail "one-process sampling (seed 8)"; show_log sample_one_b.log; }
same_samples() {
  "$PY" -c "
import sys, h5py, numpy as np
a = h5py.File(sys.argv[1]); b = h5py.File(sys.argv[2])
assert set(a.keys()) == set(b.keys()), (list(a), list(b))
for k in a.keys():
    assert np.array_equal(a[k][:], b[k][:]), k
print(sys.argv[2], '== one process:', {k: a[k].shape for k in a.keys()})" "$1" "$2"
}
wait_job sample
rc=$?
if [ "$rc" -eq 0 ] && [ "$(hosts_of sample.out)" = "node1 node1 node2 node2" ] && same_samples samples_one/samples.h5 samples_2n/samples.h5; then
  pass "sample.sbatch on 2 nodes (4 ranks) writes the samples.h5 of one process"
else
  fail "sample.sbatch on 2 nodes (rc $rc)"; show_log sample.out
fi
wait_job array
rc=$?
array_nodes=$(grep -ho '1 node(s) node[12]' array-*.out | sort -u | awk '{print $3}' | tr '\n' ' ')
if [ "$rc" -eq 0 ] && [ "$array_nodes" = "node1 node2 " ] && same_samples samples_one/samples.h5 samples_array/samples.h5; then
  pass "sample_array.sbatch --array=0-3 on $array_nodes: the merged samples.h5 equals one process's"
else
  fail "sample_array.sbatch over 2 nodes (rc $rc, nodes '$array_nodes')"; for f in array-*.out; do show_log "$f" 15; done
fi
wait_job jobs
rc=$?
if [ "$rc" -eq 0 ] && [ "$(hosts_of jobs.out | tr ' ' '\n' | sort -u | tr '\n' ' ')" = "node1 node2 " ] &&
   same_samples samples_one/samples.h5 jobs_spread/samples.h5 && same_samples samples_one_b/samples.h5 jobs_other/samples.h5; then
  pass "a jobs file over 2 nodes (a 3-rank job across them, a 1-rank job on node2): the samples of one process"
else
  fail "jobs.sbatch over 2 nodes (rc $rc)"; show_log jobs.out
fi

# --- a node lost mid-run (last: node2 stays down) ---------------------------------------------
start_job lost "${SBATCH[@]}" --no-requeue -o lost.out "$SRC/launch/slurm/train.sbatch" "${MODEL_ARGS[@]}" \
  --steps 100000 --checkpoint-every 20 "${TIMEOUT_ARGS[@]}" --out run_lost
if wait_for lost.out "step 70/"; then
  lost_at=$(date +%s)
  "$SRC/tests/slurm/nodes.sh" kill "$DIFFUSION_NODES_PREFIX" node2
  wait_job lost
  rc=$?
  took=$(( $(date +%s) - lost_at ))
  # Either the ranks on node1 notice (collective timeout) or Slurm does (node failure).
  named=$(grep -m1 "collective timeout.*node2\|Node failure on node2" lost.out)
  last=$(cat run_lost/checkpoints/latest 2>/dev/null)
  if ((took <= 30)) && [ -n "$named" ] && [ -n "$last" ]; then
    pass "node2 lost at step ~70: the job ended in $took s (sbatch status $rc), naming it: $named"
  else
    fail "lost node (rc $rc, $took s, named '$named')"; show_log lost.out
  fi
  # No checkpoint half-written: every step-* folder has its manifest and every shard its CRC
  # (a write cut short stays a .tmp-step-* folder); latest is one of them.
  if [ -n "$last" ] && "$PY" - run_lost/checkpoints "$last" <<'PYEOF' &&
import json, os, sys, zlib, h5py
root, last = sys.argv[1], sys.argv[2]
steps = sorted(d for d in os.listdir(root) if d.startswith("step-"))
assert last in steps, (last, steps)
for d in steps:
    m = json.load(open(f"{root}/{d}/manifest.json"))
    for s in m["shards"]:
        with h5py.File(f"{root}/{d}/{s['file']}", "r") as f:
            assert f"{zlib.crc32(f['bytes'][:].tobytes()):08x}" == s["crc32"], (d, s["file"])
print(f"complete checkpoints {steps}, latest {last}; other entries: {sorted(set(os.listdir(root)) - set(steps) - {'latest'})}")
PYEOF
     "${MPIRUN[@]}" -np 2 "${TRAIN[@]}" --steps $(( 10#${last#step-} + 20 )) --checkpoint-every 20 --out run_lost >lost_rerun.log 2>&1 &&
     grep -q "resumed from run_lost/checkpoints/$last" lost_rerun.log; then
    pass "no checkpoint half-written; the last complete one ($last) resumes on node1 alone (W = 2)"
  else
    fail "rerun after the lost node (latest '$last')"; show_log lost_rerun.log
  fi
else
  fail "the lost-node run did not start"; show_log lost.out
fi

echo "multinode_test: $passed passed, $failed failed in $(( $(date +%s) - T0 )) s"
[ "$failed" -eq 0 ]
