# Shared pieces of the Slurm tests (sourced by slurm_test.sh and multinode_test.sh): pass/fail
# counters with the elapsed time, a log excerpt, checkpoint comparison, and background
# `sbatch --wait` jobs that can be signalled once their log shows a line.
T0=$(date +%s)
passed=0
failed=0
pass() { passed=$((passed + 1)); echo "PASS: $1 ($(( $(date +%s) - T0 )) s)"; }
fail() { failed=$((failed + 1)); echo "FAIL: $1 ($(( $(date +%s) - T0 )) s)"; }

show_log() { echo "--- $1"; grep -v '^[a-z0-9-]* = \|^\[[a-z]*\]$\|^$' "$1" | tail -n "${2:-40}"; }

# same_checkpoints RUN_A RUN_B [TOL]: the two runs' latest checkpoints hold the same step and
# the same tensors (model, EMA, AdamW; docs/formats.md), checked against their CRCs first:
# bit-identical without TOL, else within TOL (relative and absolute) everywhere.
same_checkpoints() {
  "$PY" - "$1" "$2" "${3:-0}" <<'PYEOF'
import json, sys, zlib, h5py, numpy as np
def load(run):
    step_dir = f"{run}/checkpoints/" + open(f"{run}/checkpoints/latest").read().strip()
    m = json.load(open(f"{step_dir}/manifest.json"))
    parts = []
    for s in m["shards"]:
        with h5py.File(f"{step_dir}/{s['file']}", "r") as f:
            b = f["bytes"][:]
        assert f"{zlib.crc32(b.tobytes()):08x}" == s["crc32"], s["file"]
        parts.append(b)
    stream = np.concatenate(parts)
    return m["step"], {t["name"]: stream[t["offset"]:t["offset"] + t["nbytes"]].view(np.dtype(t["dtype"]))
                       for t in m["tensors"]}
tol = float(sys.argv[3])
step_a, a = load(sys.argv[1])
step_b, b = load(sys.argv[2])
assert step_a == step_b, (step_a, step_b)
assert a.keys() == b.keys()
assert any(k.startswith("model/") for k in a) and any(k.startswith("ema") for k in a) and any(k.startswith("adam") for k in a)
if tol == 0:
    diff = [k for k in a if not np.array_equal(a[k], b[k])]
    assert not diff, f"{len(diff)} of {len(a)} tensors differ, e.g. {diff[:3]}"
    print(f"all {len(a)} tensors (model, EMA, AdamW) bit-identical at step {step_a}")
else:
    floats = [k for k in a if a[k].dtype.kind == "f"]
    worst = max(floats, key=lambda k: float(np.max(np.abs(a[k].astype(np.float64) - b[k]))))
    gap = float(np.max(np.abs(a[worst].astype(np.float64) - b[worst])))
    far = [k for k in floats if not np.allclose(a[k], b[k], rtol=tol, atol=tol)]
    same = [k for k in a if a[k].dtype.kind != "f" and not np.array_equal(a[k], b[k])]
    assert not far and not same, f"beyond {tol}: {far[:3]} / differ: {same[:3]}; largest gap {gap:.3g} in {worst}"
    print(f"all {len(a)} tensors within {tol} at step {step_a} (largest gap {gap:.3g}, in {worst})")
PYEOF
}

# Background `sbatch --wait` jobs. start_job NAME COMMAND...: runs COMMAND in the background,
# its output (the job id, with --parsable) in NAME.id; wait_job NAME: the job's exit code.
declare -A sbatch_pid
start_job() {
  local name="$1"; shift
  "$@" >"$name.id" &
  sbatch_pid[$name]=$!
}
wait_job() { wait "${sbatch_pid[$1]}"; }
# wait_for LOG PATTERN [TENTHS]: until LOG shows PATTERN (default at most 120 s); 1 if never.
wait_for() {
  local _
  for _ in $(seq 1 "${3:-1200}"); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
# signal_when LOG PATTERN NAME [SUFFIX]: USR1 to job NAME.id's batch shell once LOG shows PATTERN.
signal_when() {
  wait_for "$1" "$2"
  scancel -b --signal=USR1 "$(cat "$3.id")${4:-}"
}
