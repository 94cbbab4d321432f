#!/usr/bin/env bash
# Post-hoc EMA end to end (trainer/ema.h): a toy run keeps power EMAs of sigma_rel 0.05 and 0.1
# with snapshots; a second run of the same seed also tracks 0.07 directly (the EMAs do not touch
# training, so both runs have the same weights). `--ema sigma-rel-0.07` rebuilt from the first
# run's snapshots must land far closer to the second run's tracked 0.07 than the kept widths do;
# a kept width loads its stored weights exactly; snapshots written after a resume are
# bit-identical to those of the uninterrupted run; bad input is refused with the key named.
set -uo pipefail
source "$(dirname "$0")/cli_common.sh" posthoc_ema_cli_test

"$BIN/diffusion-data" make-toy --kind gmm-ring --num 4096 --seed 1 --out "$WORK/ring.h5" >/dev/null
TRAIN=("${MPIRUN[@]}" -np 2 "$BIN/diffusion-train" --config "$SRC/configs/toy_2d.ini" --data "$WORK/ring.h5"
       --steps 300 --ema-rates 0.99 --threads 1 --log-every 100)
"${TRAIN[@]}" --ema-sigma-rels 0.05,0.1 --ema-snapshot-every 50 --out "$WORK/a" >"$WORK/a.log" 2>&1 ||
  { fail "training with snapshots"; tail -20 "$WORK/a.log"; }
"${TRAIN[@]}" --ema-sigma-rels 0.05,0.07,0.1 --out "$WORK/b" >"$WORK/b.log" 2>&1 ||
  { fail "training with a tracked 0.07"; tail -20 "$WORK/b.log"; }

# --- the snapshots: every 50 steps, power EMAs only -------------------------------------------
if "$PY" - "$WORK/a/ema-snapshots" <<'PYEOF'
import json, os, sys
root = sys.argv[1]
steps = sorted(d for d in os.listdir(root) if d.startswith("step-"))
assert steps == [f"step-{s:08d}" for s in range(50, 301, 50)], steps
for d in steps:
    names = {t["name"].split("/")[0] for t in json.load(open(os.path.join(root, d, "manifest.json")))["tensors"]}
    assert names == {"ema_sigma-rel-0.05", "ema_sigma-rel-0.1"}, (d, names)
PYEOF
then pass "snapshots at steps 50..300 hold the two power EMAs and nothing else"
else fail "snapshot layout"; fi

sample() {  # run ema out
  "$BIN/diffusion-sample" --checkpoint "$WORK/$1" --ema "$2" --num-samples 400 --steps 20 --seed 1 \
    --threads 2 --out "$WORK/$3" >"$WORK/$3.log" 2>&1 || { fail "sampling $1 with --ema $2"; tail -5 "$WORK/$3.log"; }
}
sample a sigma-rel-0.07 a07
sample b sigma-rel-0.07 b07
sample a sigma-rel-0.05 a05
sample b sigma-rel-0.05 b05
sample a sigma-rel-0.1 a10
# The same post-hoc width from the step folder, spelled relative to the run with a trailing slash.
(cd "$WORK/a" && "$BIN/diffusion-sample" --checkpoint checkpoints/step-00000300/ --ema sigma-rel-0.07 --num-samples 400 \
  --steps 20 --seed 1 --threads 2 --out "$WORK/a07s" >"$WORK/a07s.log" 2>&1) || fail "sampling a step folder"
if grep -q "post-hoc EMA from 12 power-EMA profiles (5 snapshots" "$WORK/a07.log" &&
   ! grep -q "post-hoc" "$WORK/a05.log"; then
  pass "the sampler says how the EMA was rebuilt (5 earlier snapshots + the checkpoint's own two)"
else
  fail "post-hoc log line: $(grep ema "$WORK/a07.log" | head -2)"
fi
if "$PY" - "$WORK" <<'PYEOF'
import sys, h5py, numpy as np
w = sys.argv[1]
x = {n: h5py.File(f"{w}/{n}/samples.h5")["x"][:] for n in ("a07", "a07s", "b07", "a05", "b05", "a10")}
assert np.array_equal(x["a05"], x["b05"]), "a kept width must load the same stored weights in both runs"
assert np.array_equal(x["a07"], x["a07s"]), "a step folder (relative, trailing slash) must find the run's snapshots"
miss = np.abs(x["a07"] - x["b07"]).mean()
near = min(np.abs(x["a05"] - x["b07"]).mean(), np.abs(x["a10"] - x["b07"]).mean())
print(f"post-hoc 0.07 vs tracked 0.07: {miss:.5f}; nearest kept width vs tracked 0.07: {near:.5f}")
assert miss < 0.4 * near, (miss, near)
PYEOF
then pass "post-hoc sigma-rel-0.07 is far closer to the tracked 0.07 than 0.05 or 0.1 are"
else fail "post-hoc EMA against the tracked one"; fi

# --- resume: cut at step 150, rerun, the later snapshots come out bit-identical --------------
"${TRAIN[@]}" --ema-sigma-rels 0.05,0.1 --ema-snapshot-every 50 --checkpoint-every 150 --out "$WORK/c" \
  >"$WORK/c.log" 2>&1 || fail "training c"
# The snapshots past 150 stay: the resumed run must remove them and write them again.
rm -rf "$WORK/c/checkpoints/step-00000300"
echo step-00000150 >"$WORK/c/checkpoints/latest"
"${TRAIN[@]}" --ema-sigma-rels 0.05,0.1 --ema-snapshot-every 50 --checkpoint-every 150 --out "$WORK/c" \
  >"$WORK/c2.log" 2>&1 || fail "resuming c"
if grep -q "resumed from .*step-00000150" "$WORK/c2.log" &&
   [ "$(grep -c "removing EMA snapshot" "$WORK/c2.log")" -eq 3 ] && "$PY" - "$WORK" <<'PYEOF'
import json, sys
w = sys.argv[1]
for s in (200, 250, 300):
    crc = lambda run: [sh["crc32"] for sh in json.load(open(f"{w}/{run}/ema-snapshots/step-{s:08d}/manifest.json"))["shards"]]
    assert crc("a") == crc("c"), (s, crc("a"), crc("c"))
PYEOF
then pass "a resume from step 150 removes snapshots 200..300 and rewrites them bit-identical to the uninterrupted run's"
else fail "snapshots after a resume"; grep -E "resumed|rror" "$WORK/c2.log" | head; fi

# --- bad input ------------------------------------------------------------------------------
expect_fail "snapshots without power EMAs" "ema-snapshot-every" "$WORK/bad1" \
  "$BIN/diffusion-train" --config "$SRC/configs/toy_2d.ini" --data "$WORK/ring.h5" --ema-snapshot-every 10 \
  --out "$WORK/bad1"
expect_fail "sigma_rel out of range when training" "ema-sigma-rels" "$WORK/bad2" \
  "$BIN/diffusion-train" --config "$SRC/configs/toy_2d.ini" --data "$WORK/ring.h5" --ema-sigma-rels 0.3 \
  --out "$WORK/bad2"
expect_fail "sigma_rel out of range when sampling" "expected sigma-rel-S" "$WORK/bad3" \
  "$BIN/diffusion-sample" --checkpoint "$WORK/a" --ema sigma-rel-0.5 --num-samples 4 --out "$WORK/bad3"
"$BIN/diffusion-train" --config "$SRC/configs/toy_2d.ini" --data "$WORK/ring.h5" --steps 20 --ema-rates 0.99 \
  --threads 1 --out "$WORK/plain" >"$WORK/plain.log" 2>&1 || { fail "training without power EMAs"; tail -3 "$WORK/plain.log"; }
expect_fail "post-hoc EMA of a run without power EMAs" "holds no power-function EMAs" "$WORK/bad4" \
  "$BIN/diffusion-sample" --checkpoint "$WORK/plain" --ema sigma-rel-0.07 --num-samples 4 --out "$WORK/bad4"
expect_fail "post-hoc EMA without snapshots" "holds no EMA snapshots" "$WORK/bad5" \
  "$BIN/diffusion-sample" --checkpoint "$WORK/b" --ema sigma-rel-0.2 --num-samples 4 --out "$WORK/bad5"
expect_fail "a misspelt --teacher-ema" "teacher-ema" "$WORK/bad6" \
  "$BIN/diffusion-distill" --teacher "$WORK/a" --teacher-ema sigma_rel-0.05 --out "$WORK/bad6"
finish
