#!/usr/bin/env bash
# End-to-end test of build/bin/diffusion-sample on a tiny toy_2d MLP: W = 1 (batch 16) and
# W = 3 (batch 7) give bit-identical samples; DDPM, DDIM and DPM-Solver++(2M) on the Karras grid
# (and its SDE variant) run; samples land near the
# ring; guidance with --class gives that class, and a guidance interval holding every sigma is
# plain guidance; samples.h5 (a virtual dataset) still reads
# after the folder is moved; a run killed with -9 (DDPM, dpmpp-2m-sde) resumes to the clean run's output; another
# command on the same folder is refused; bad input fails with a message and writes nothing.
# Run by ctest with DIFFUSION_BIN, DIFFUSION_SOURCE, DIFFUSION_TEST_DATA and DIFFUSION_PYTHON.
set -uo pipefail

source "$(dirname "$0")/cli_common.sh" sample_cli_test
cd "$WORK" || exit 1
"$BIN/diffusion-data" make-toy --kind gmm-ring --num 5000 --seed 0 --out ring.h5 >/dev/null

TRAIN=("$BIN/diffusion-train" --config "$SRC/configs/toy_2d.ini" --data ring.h5 --steps 2000 --threads 1
       --mlp-hidden 64 --ema-rates 0.99 --log-every 1000 --checkpoint-every 2000)
"${TRAIN[@]}" --out run >train.log 2>&1 || { cat train.log; exit 1; }
"${TRAIN[@]}" --out cond --class-cond true >train_cond.log 2>&1 || { cat train_cond.log; exit 1; }

SAMPLE=("$BIN/diffusion-sample" --checkpoint run --threads 1)
same_x() {  # same_x A.h5 B.h5: the `x` arrays are bit-identical
  "$PY" -c "import h5py, numpy as np, sys; a = h5py.File(sys.argv[1])['x'][:]; b = h5py.File(sys.argv[2])['x'][:]
assert a.shape == b.shape and np.array_equal(a, b), (a.shape, b.shape)" "$1" "$2"
}

# --- determinism over W and batch size; DDIM and DDPM --------------------------------------
for s in ddim ddpm dpmpp-2m dpmpp-2m-sde; do
  extra=()
  [ "$s" = ddpm ] && extra=(--steps 100)
  [[ "$s" = dpmpp-* ]] && extra=(--karras true --steps 20)
  if "${SAMPLE[@]}" --sampler "$s" "${extra[@]}" --num-samples 50 --batch-size 16 --out "w1_$s" >"w1_$s.log" 2>&1 &&
     "${MPIRUN[@]}" -np 3 "${SAMPLE[@]}" --sampler "$s" "${extra[@]}" --num-samples 50 --batch-size 7 --out "w3_$s" \
       >"w3_$s.log" 2>&1; then
    pass "$s at W=1 and W=3 exits 0"
  else
    fail "$s runs"; cat "w1_$s.log" "w3_$s.log"
  fi
  if same_x "w1_$s/samples.h5" "w3_$s/samples.h5"; then pass "$s: W=1 batch 16 == W=3 batch 7, bit for bit"
  else fail "$s: outputs differ between W=1 and W=3"; fi
done
if [ -f w3_ddim/shards/rank-00002-of-00003.h5 ] && [ -f w3_ddim/manifest.json ] && [ ! -f w3_ddim/grid.png ] &&
   grep -q '"status": "complete"' w3_ddim/manifest.json && grep -q "samples/s" w3_ddim.log && grep -q "ETA" w3_ddim.log; then
  pass "shards, manifest (complete), progress with samples/s and ETA"
else
  fail "output layout"; ls -R w3_ddim; cat w3_ddim.log
fi

if grep -q "dpmpp-2m with 20 steps on the Karras grid (20 network evaluations per sample)" w1_dpmpp-2m.log &&
   grep -q '"karras": true' w1_dpmpp-2m/manifest.json; then
  pass "dpmpp-2m --karras: the log line names the grid and the network evaluations; the manifest records karras"
else
  fail "dpmpp-2m log line / manifest"; cat w1_dpmpp-2m.log; cat w1_dpmpp-2m/manifest.json
fi
expect_fail "the same folder with --karras false is refused" "karras" "" \
  "${SAMPLE[@]}" --sampler dpmpp-2m --steps 20 --num-samples 50 --out w1_dpmpp-2m

# --- samples near the ring (radius 2), indices, format ---------------------------------------
for s in ddim ddpm dpmpp-2m dpmpp-2m-sde; do
  if "$PY" - "w1_$s/samples.h5" <<'PYEOF'
import h5py, numpy as np, sys
f = h5py.File(sys.argv[1])
x = f["x"][:]
assert x.shape == (50, 2) and x.dtype == np.float32 and np.isfinite(x).all()
assert (f["indices"][:] == np.arange(50)).all()
r = np.linalg.norm(x, axis=1)
# A 2000-step MLP is not perfect; most samples must still sit near the ring, not at the origin
# or spread like the N(0, I) start.
assert abs(np.median(r) - 2) < 0.4 and np.mean(np.abs(r - 2) < 0.6) >= 0.7, (np.median(r), np.mean(np.abs(r - 2) < 0.6))
PYEOF
  then pass "$s samples lie near the ring"; else fail "$s samples near the ring"; fi
done
if "$BIN/diffusion-data" inspect w1_ddim/samples.h5 >inspect.log 2>&1; then pass "diffusion-data inspect reads samples.h5"
else fail "inspect samples.h5"; cat inspect.log; fi

# --- the virtual dataset survives a move --------------------------------------------------
mv w3_ddim moved_w3
if (cd / && same_x "$WORK/w1_ddim/samples.h5" "$WORK/moved_w3/samples.h5"); then
  pass "samples.h5 reads after mv DIR DIR2 (relative shard paths)"
else fail "samples.h5 after a move"; fi

# --- guidance with a class --------------------------------------------------------------------
if "${MPIRUN[@]}" -np 2 "$BIN/diffusion-sample" --checkpoint cond --threads 1 --num-samples 20 --guidance-scale 2 \
     --class 3 --out guided >guided.log 2>&1 &&
   "$PY" -c "import h5py, numpy as np; f = h5py.File('guided/samples.h5')
assert (f['labels'][:] == 3).all() and f.attrs['num_classes'] == 8 and f['x'].shape == (20, 2)
names = [n.decode() if isinstance(n, bytes) else n for n in f.attrs['class_names']]
assert names == ['mode %d' % k for k in range(8)], names"; then
  pass "guidance 2 with --class 3: labels all 3, num_classes and the training data's class_names"
else fail "guided sampling"; cat guided.log; fi
# An interval holding every sigma is plain guidance, at any W; it is recorded, and the folder
# resumes only with it.
if "$BIN/diffusion-sample" --checkpoint cond --threads 1 --num-samples 20 --guidance-scale 2 --class 3 \
     --guidance-interval 0,inf --out interval_all >interval_all.log 2>&1 && same_x guided/samples.h5 interval_all/samples.h5 &&
   grep -q "doubled batches where 0 < sigma <= inf" interval_all.log &&
   grep -q '"guidance_interval": \[' interval_all/manifest.json; then
  pass "--guidance-interval 0,inf (W=1) == plain guidance (W=2), bit for bit; logged and in the manifest"
else fail "--guidance-interval 0,inf"; cat interval_all.log; fi
expect_fail "the same folder with another guidance interval is refused" "guidance_interval" "" \
  "$BIN/diffusion-sample" --checkpoint cond --threads 1 --num-samples 20 --guidance-scale 2 --class 3 \
  --guidance-interval 0.5,inf --out interval_all
if "$BIN/diffusion-sample" --checkpoint cond --threads 1 --num-samples 20 --guidance-scale 2 --class 3 \
     --guidance-interval 0.5,3 --out interval_mid >interval_mid.log 2>&1 &&
   ! same_x guided/samples.h5 interval_mid/samples.h5 2>/dev/null; then
  pass "--guidance-interval 0.5,3 changes the samples"
else fail "--guidance-interval 0.5,3"; cat interval_mid.log; fi
if "$BIN/diffusion-sample" --checkpoint cond --threads 1 --num-samples 20 --out spread >spread.log 2>&1 &&
   "$PY" -c "import h5py, numpy as np; f = h5py.File('spread/samples.h5'); assert (f['labels'][:] == np.arange(20) % 8).all()"; then
  pass "classes spread evenly without --class"
else fail "spread labels"; cat spread.log; fi

# --- kill -9 mid-way, then the same command finishes the run (DDPM, and the SDE sampler whose
# per-step noise must continue from the keyed draws) ------------------------------------------
for s in ddpm dpmpp-2m-sde; do
BIG=("${MPIRUN[@]}" -np 2 "${SAMPLE[@]}" --sampler "$s" --steps 1000 --num-samples 3000 --batch-size 20)
"${BIG[@]}" --out "clean_$s" >"clean_$s.log" 2>&1 || { fail "clean big run ($s)"; cat "clean_$s.log"; }
"${BIG[@]}" --out "killed_$s" >"killed_$s.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do
  n=$(cat "killed_$s"/shards/*.progress 2>/dev/null | awk '{s += $1} END {print s + 0}')
  [ "$n" -ge 600 ] && break
  sleep 0.05
done
kill -9 "$pid" 2>/dev/null
# mpirun's ranks die with it (orted notices); make sure none is left writing.
wait "$pid" 2>/dev/null
sleep 1
done_before=$(cat "killed_$s"/shards/*.progress 2>/dev/null | awk '{s += $1} END {print s + 0}')
if [ "$done_before" -gt 0 ] && [ "$done_before" -lt 3000 ] && [ ! -f "killed_$s/samples.h5" ]; then
  pass "$s: kill -9 left a partial run ($done_before of 3000 samples)"
else
  fail "$s: partial run (progress $done_before)"
fi
if "${BIG[@]}" --out "killed_$s" >"resume_$s.log" 2>&1 && grep -q "resuming after" "resume_$s.log" &&
   same_x "clean_$s/samples.h5" "killed_$s/samples.h5"; then
  pass "$s: re-running the same command resumes and equals a clean run"
else fail "$s: resume after kill -9"; tail -5 "resume_$s.log"; fi
if "${BIG[@]}" --out "killed_$s" >"again_$s.log" 2>&1 && grep -q "already complete" "again_$s.log"; then
  pass "$s: a complete folder is left alone"
else fail "$s: re-run of a complete folder"; cat "again_$s.log"; fi
done

# --- an image model: tiny UNet, uint8 NHWC samples, grid.png, same bytes at W = 1 and 2 -------
"$PY" - imgs.h5 <<'PYEOF'
import sys, h5py, numpy as np
rng = np.random.default_rng(0)
with h5py.File(sys.argv[1], "w") as f:
    f.create_dataset("images", data=rng.integers(0, 256, (64, 8, 8, 1), dtype=np.uint8),
                     maxshape=(None, 8, 8, 1), chunks=(64, 8, 8, 1))
    f.create_dataset("labels", data=rng.integers(0, 3, 64).astype(np.int64), maxshape=(None,), chunks=(64,))
    f.attrs["num_classes"] = np.int64(3)
PYEOF
"$BIN/diffusion-train" --data imgs.h5 --out unet_run --model unet --base-channels 8 --channel-mult 1,2 \
  --num-res-blocks 1 --attention-resolutions 4 --image-size 8 --num-groups 4 --num-heads 2 \
  --class-cond true --steps 10 --batch-size 8 --ema-rates 0.9 --threads 1 --log-every 5 \
  --checkpoint-every 10 >unet_train.log 2>&1 || { cat unet_train.log; fail "tiny UNet training"; }
USAMPLE=("$BIN/diffusion-sample" --checkpoint unet_run --threads 1 --num-samples 20 --steps 10
         --guidance-scale 1.5)
if "${USAMPLE[@]}" --out u1 --batch-size 16 >u1.log 2>&1 &&
   "${MPIRUN[@]}" -np 2 "${USAMPLE[@]}" --out u2 --batch-size 7 >u2.log 2>&1 &&
   "$PY" - u1/samples.h5 u2/samples.h5 u1/grid.png <<'PYEOF'
import sys, struct, h5py, numpy as np
a, b = h5py.File(sys.argv[1])["images"][:], h5py.File(sys.argv[2])["images"][:]
assert a.dtype == np.uint8 and a.shape == (20, 8, 8, 1), (a.dtype, a.shape)
assert np.array_equal(a, b), "W=1/batch 16 and W=2/batch 7 differ"
assert h5py.File(sys.argv[1])["labels"][:].tolist() == [i % 3 for i in range(20)]
png = open(sys.argv[3], "rb").read()
assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR", "grid.png is not a PNG"
w, h = struct.unpack(">II", png[16:24])
assert w >= 8 and h >= 8, (w, h)
PYEOF
then
  pass "tiny UNet: uint8 [20, 8, 8, 1] samples bit-identical at W=1/batch 16 and W=2/batch 7, grid.png"
else
  fail "tiny UNet sampling"; tail -5 u1.log u2.log
fi

# --- refusals and bad input: non-zero exit, a message naming the key or file, nothing written --
expect_fail "another command on the same folder is refused" "different command" "" \
  "${SAMPLE[@]}" --num-samples 50 --batch-size 16 --seed 1 --out w1_ddim
mkdir -p nomanifest/checkpoints/step-00000010
expect_fail "checkpoint without a manifest" "nomanifest" bad_out "$BIN/diffusion-sample" --checkpoint nomanifest \
  --num-samples 5 --out bad_out
expect_fail "guidance on an unconditional model" "guidance-scale" bad_out "${SAMPLE[@]}" --num-samples 5 \
  --guidance-scale 2 --out bad_out
expect_fail "--guidance-interval with LOW >= HIGH" "option --guidance-interval 3,1: expected LOW,HIGH" bad_out \
  "$BIN/diffusion-sample" --checkpoint cond --num-samples 5 --guidance-scale 2 --guidance-interval 3,1 --out bad_out
expect_fail "--guidance-interval with one value" "option --guidance-interval 3: expected LOW,HIGH" bad_out \
  "$BIN/diffusion-sample" --checkpoint cond --num-samples 5 --guidance-scale 2 --guidance-interval 3 --out bad_out
expect_fail "--guidance-interval without guidance" "option --guidance-interval 0.3,5: needs --guidance-scale" bad_out \
  "$BIN/diffusion-sample" --checkpoint cond --num-samples 5 --guidance-interval 0.3,5 --out bad_out
expect_fail "--class on an unconditional model" "class" bad_out "${SAMPLE[@]}" --num-samples 5 --class 1 --out bad_out
expect_fail "S > T" "steps" bad_out "${SAMPLE[@]}" --num-samples 5 --steps 1001 --out bad_out
expect_fail "class out of range" "class 8" bad_out "$BIN/diffusion-sample" --checkpoint cond --num-samples 5 \
  --class 8 --out bad_out
expect_fail "missing --checkpoint" "checkpoint" bad_out "$BIN/diffusion-sample" --num-samples 5 --out bad_out
expect_fail "missing --out" "out" "" "${SAMPLE[@]}" --num-samples 5
expect_fail "N <= 0" "num-samples" bad_out "${SAMPLE[@]}" --num-samples 0 --out bad_out
expect_fail "learned variance on a fixed-variance model" "variance" bad_out "${SAMPLE[@]}" --sampler ddpm \
  --variance learned --num-samples 5 --out bad_out
expect_fail "--churn with ddim" "option --churn" bad_out "${SAMPLE[@]}" --sampler ddim --churn 1 --num-samples 5 \
  --out bad_out
expect_fail "--s-noise with dpmpp-2m" "option --s-noise" bad_out "${SAMPLE[@]}" --sampler dpmpp-2m --s-noise 1.01 \
  --num-samples 5 --out bad_out
expect_fail "--karras with ddim" "option --karras" bad_out "${SAMPLE[@]}" --sampler ddim --karras true --num-samples 5 \
  --out bad_out
expect_fail "--karras with --timestep-spacing" "option --karras.*timestep-spacing trailing" bad_out "${SAMPLE[@]}" \
  --sampler euler --karras true --timestep-spacing trailing --num-samples 5 --out bad_out
expect_fail "--karras with one step" "option --karras" bad_out "${SAMPLE[@]}" --sampler heun --karras true --steps 1 \
  --num-samples 5 --out bad_out
expect_fail "a DPM-Solver++ order we lack" "solver order 2 only" bad_out "${SAMPLE[@]}" --sampler dpmpp-3m \
  --num-samples 5 --out bad_out
expect_fail "unknown sampler" "option --sampler" bad_out "${SAMPLE[@]}" --sampler lms --num-samples 5 --out bad_out

finish
