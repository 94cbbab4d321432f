#!/usr/bin/env bash
# End-to-end test of diffusion-sample on TorchScript models (tests/sample_models.py builds
# them, no training): the exact-eps Gaussian model reproduces the data's moments and gives
# the same bits at W = 1 and 3; a conditional image model gives uint8 samples at W = 1 and 2
# and its manifest holds the file's CRC32; --latents decodes given x_T (row i a function of
# row i alone); --invert matches the closed-form probability-flow map of the Gaussian and
# decodes back to the data; --interpolate equals decoding slerped latents; P = 3 Slurm array
# tasks at W = 1, 2, 3 running at once into one folder equal a single W = 1 run; bad input
# fails with a message naming the file and writes nothing.
# Run by ctest with DIFFUSION_BIN, DIFFUSION_SOURCE, DIFFUSION_TEST_DATA and DIFFUSION_PYTHON.
set -uo pipefail

source "$(dirname "$0")/cli_common.sh" sample_torchscript_test
cd "$WORK" || exit 1
M=("$PY" "$SRC/tests/sample_models.py")
"${M[@]}" gauss gauss.pt && "${M[@]}" conv conv.pt && "${M[@]}" gauss-data data.h5 200 &&
  "${M[@]}" images imgs.h5 24 && "${M[@]}" latents lat2.h5 6 2 && "${M[@]}" latents lat_img.h5 5 1,8,8 ||
  { echo "cannot build the test models"; exit 1; }

GAUSS=("$BIN/diffusion-sample" --torchscript gauss.pt --sample-shape 2 --threads 1)
CONV=("$BIN/diffusion-sample" --torchscript conv.pt --sample-shape 1,8,8 --num-classes 3 --threads 1)
same() {  # same KEY A.h5 B.h5: dataset KEY is bit-identical (and labels/indices when present)
  "$PY" -c "import h5py, numpy as np, sys
a, b = h5py.File(sys.argv[2]), h5py.File(sys.argv[3])
for k in [sys.argv[1], 'labels', 'indices']:
    if k in a or k in b:
        assert np.array_equal(a[k][:], b[k][:]), (k, a[k].shape, b[k].shape)" "$@"
}

# --- exact-eps Gaussian: moments and W/batch invariance -------------------------------------
if "${GAUSS[@]}" --num-samples 3000 --steps 100 --batch-size 16 --out g1 >g1.log 2>&1 &&
   "${MPIRUN[@]}" -np 3 "${GAUSS[@]}" --num-samples 3000 --steps 100 --batch-size 7 --out g3 >g3.log 2>&1; then
  pass "TorchScript Gaussian model samples at W=1 and W=3"
else fail "TorchScript sampling runs"; tail -n 5 g1.log g3.log; fi
if same x g1/samples.h5 g3/samples.h5; then pass "W=1 batch 16 == W=3 batch 7, bit for bit"
else fail "TorchScript outputs differ between W=1 and W=3"; fi
if "$PY" - g1/samples.h5 <<'PYEOF'
import sys, h5py, numpy as np
x = h5py.File(sys.argv[1])["x"][:].astype(np.float64)
n = len(x)
mu, cov = np.array([0.5, -0.3]), np.array([[0.30, 0.10], [0.10, 0.20]])
# 5 standard errors of the sample mean and covariance (DDIM-100's own bias is far below).
assert np.all(np.abs(x.mean(0) - mu) < 5 * np.sqrt(np.diag(cov) / n)), x.mean(0)
se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
assert np.all(np.abs(np.cov(x.T) - cov) < 5 * se + 0.01), np.cov(x.T)
PYEOF
then pass "DDIM-100 on the exact-eps TorchScript model reproduces the data's mean and covariance"
else fail "Gaussian moments"; fi
if "$PY" -c "import json, zlib, os
m = json.load(open('g1/manifest.json'))['settings']['model']
assert m['crc32'] == '%08x' % zlib.crc32(open('gauss.pt', 'rb').read()), m
assert m['bytes'] == os.path.getsize('gauss.pt') and m['torchscript'].endswith('/gauss.pt'), m"; then
  pass "manifest names the TorchScript file with its CRC32 and size"
else fail "manifest model identity"; cat g1/manifest.json; fi

# --- conditional image model: uint8 NHWC, labels, guidance, grid, W=1 == W=2 ------------------
if "${CONV[@]}" --num-samples 20 --steps 10 --guidance-scale 1.5 --batch-size 16 --out c1 >c1.log 2>&1 &&
   "${MPIRUN[@]}" -np 2 "${CONV[@]}" --num-samples 20 --steps 10 --guidance-scale 1.5 --batch-size 7 --out c2 \
     >c2.log 2>&1 && same images c1/samples.h5 c2/samples.h5 &&
   "$PY" -c "import h5py, numpy as np; f = h5py.File('c1/samples.h5')
assert f['images'].dtype == np.uint8 and f['images'].shape == (20, 8, 8, 1)
assert (f['labels'][:] == np.arange(20) % 3).all() and f.attrs['num_classes'] == 3" && [ -s c1/grid.png ]; then
  pass "conditional TorchScript image model: uint8 [20, 8, 8, 1], labels, grid.png, W=1 == W=2"
else fail "conditional TorchScript image model"; tail -n 5 c1.log c2.log; fi

# --- --latents: row i depends on latent row i only, at any W -------------------------------
"$PY" -c "import h5py; f = h5py.File('lat2.h5'); h5py.File('lat2_tail.h5', 'w').create_dataset('x', data=f['x'][2:5])"
if "${GAUSS[@]}" --latents lat2.h5 --steps 50 --out l1 >l1.log 2>&1 &&
   "${MPIRUN[@]}" -np 3 "${GAUSS[@]}" --latents lat2.h5 --num-samples 6 --steps 50 --batch-size 1 --out l3 >l3.log 2>&1 &&
   "${GAUSS[@]}" --latents lat2_tail.h5 --steps 50 --out ltail >ltail.log 2>&1 && same x l1/samples.h5 l3/samples.h5 &&
   "$PY" -c "import h5py, numpy as np
a, b = h5py.File('l1/samples.h5')['x'][:], h5py.File('ltail/samples.h5')['x'][:]
assert a.shape == (6, 2) and np.array_equal(a[2:5], b)"; then
  pass "--latents: N from the file, W=1 == W=3, rows 2..4 alone give the same rows"
else fail "--latents"; tail -n 3 l1.log l3.log ltail.log; fi

# --- --invert: the closed-form flow map of the Gaussian, and back --------------------------
INV=(--steps 1000 --batch-size 64)
if "${MPIRUN[@]}" -np 2 "${GAUSS[@]}" --invert data.h5 "${INV[@]}" --out inv >inv.log 2>&1 &&
   "${GAUSS[@]}" --latents inv/samples.h5 "${INV[@]}" --out dec >dec.log 2>&1 &&
   "$PY" - <<'PYEOF'
import sys, h5py, numpy as np
sys.path.insert(0, __import__("os").environ["DIFFUSION_SOURCE"] + "/tests")
from sample_models import MU, COV, alpha_bar
x = h5py.File("data.h5")["x"][:].astype(np.float64)
z = h5py.File("inv/samples.h5")["x"][:]
back = h5py.File("dec/samples.h5")["x"][:]
assert z.shape == x.shape and z.dtype == np.float32
# For Gaussian data the eta=0 DDIM map is the probability-flow ODE, linear:
# x_t = C_t^{1/2} COV^{-1/2} (x_0 - MU) + sqrt(ab_t) MU with C_t = ab_t COV + (1 - ab_t) I.
def msqrt(a, p):
    w, v = np.linalg.eigh(a)
    return v @ np.diag(w**p) @ v.T
ab = alpha_bar()[999]
cov = np.array(COV)
expect = (msqrt(ab * cov + (1 - ab) * np.eye(2), 0.5) @ msqrt(cov, -0.5) @ (x - MU).T).T + np.sqrt(ab) * np.array(MU)
err, rt = np.abs(z - expect).max(), np.abs(back - x).max()
print(f"inversion vs closed form: max abs {err:.4f}; decode(invert(x)) vs x: max abs {rt:.4f}")
# DDIM is a first-order solver (error ~ 1/S): at S = 1000 these measured 0.014 and 0.011.
assert err < 0.03 and rt < 0.03, (err, rt)
PYEOF
then pass "--invert (W=2) matches the Gaussian's flow map; decode(invert(x)) ~ x at S=1000"
else fail "--invert"; tail -n 3 inv.log dec.log; fi
if "${CONV[@]}" --invert imgs.h5 --steps 10 --out cinv >cinv.log 2>&1 &&
   "${CONV[@]}" --latents cinv/samples.h5 --steps 10 --out cdec >cdec.log 2>&1 &&
   "$PY" -c "import h5py, numpy as np; f = h5py.File('cinv/samples.h5'); d = h5py.File('imgs.h5')
assert f['x'].shape == (24, 1, 8, 8) and f['x'].dtype == np.float32
assert (f['labels'][:] == d['labels'][:]).all()
assert h5py.File('cdec/samples.h5')['images'].shape == (24, 8, 8, 1)"; then
  pass "--invert of uint8 images: latents x [N, 1, 8, 8] with the data's labels, readable by --latents"
else fail "--invert of images"; tail -n 3 cinv.log cdec.log; fi

# --- --interpolate: pair-major slerp rows, equal to decoding the slerped latents -------------
"$PY" - <<'PYEOF'
import h5py, numpy as np
z = h5py.File("lat2.h5")["x"][:].astype(np.float64)  # 3 pairs
K, rows = 4, []
for p in range(3):
    a, b = z[2 * p], z[2 * p + 1]
    th = np.arccos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1, 1))
    for j in range(K):
        lam = j / (K - 1)
        rows.append((np.sin((1 - lam) * th) * a + np.sin(lam * th) * b) / np.sin(th))
h5py.File("slerped.h5", "w").create_dataset("x", data=np.array(rows, dtype=np.float32))
PYEOF
if "${MPIRUN[@]}" -np 2 "${GAUSS[@]}" --latents lat2.h5 --interpolate 4 --steps 50 --out interp >interp.log 2>&1 &&
   "${GAUSS[@]}" --latents slerped.h5 --steps 50 --out slerped >slerped.log 2>&1 &&
   "$PY" -c "import h5py, numpy as np
a, b, l = h5py.File('interp/samples.h5')['x'][:], h5py.File('slerped/samples.h5')['x'][:], h5py.File('l1/samples.h5')['x'][:]
assert a.shape == (12, 2), a.shape
assert np.abs(a - b).max() < 1e-5, np.abs(a - b).max()   # float64 slerp rounded to float32
assert np.abs(a[0::4] - l[0::2]).max() < 1e-5 and np.abs(a[3::4] - l[1::2]).max() < 1e-5"; then
  pass "--interpolate 4: 12 rows pair-major, endpoints are the pair's decodes, equal to decoding Python's slerp"
else fail "--interpolate"; tail -n 3 interp.log slerped.log; fi

# --- Slurm array: P = 3 tasks at W = 1, 2, 3, at once, into one folder ---------------------
ARR=("${CONV[@]}" --num-samples 40 --steps 5 --batch-size 6 --out arr --array-tasks 3)
"${CONV[@]}" --num-samples 40 --steps 5 --out single >single.log 2>&1 || fail "single run"
for k in 0 1 2; do
  "${MPIRUN[@]}" -np $((3 - k)) "${ARR[@]}" --array-task "$k" >"arr$k.log" 2>&1 &
done
wait
if same images single/samples.h5 arr/samples.h5 && [ -s arr/grid.png ] &&
   [ -f arr/shards/task-00002-of-00003/rank-00000-of-00001.h5 ] && grep -q '"status": "complete"' arr/manifest.json &&
   [ "$(grep -l "wrote arr/samples.h5" arr?.log | wc -l)" -ge 1 ]; then
  pass "3 array tasks at W=3,2,1 running together == one W=1 run (images, labels, indices)"
else fail "array tasks"; tail -n 3 arr?.log; ls -R arr; fi
if "${MPIRUN[@]}" -np 3 "${ARR[@]}" --array-task 0 >arr_again.log 2>&1 && grep -q "already complete" arr_again.log; then
  pass "a task of a complete array job is left alone"
else fail "re-run of a complete task"; cat arr_again.log; fi
ARR2=("${CONV[@]}" --num-samples 40 --steps 5 --out arr2 --array-tasks 2)
"${MPIRUN[@]}" -np 2 "${ARR2[@]}" --array-task 1 >arr2a.log 2>&1
if [ -f arr2/manifest.json ] && [ ! -f arr2/samples.h5 ] && grep -q "1 of 2 tasks done" arr2a.log; then
  pass "one of two tasks done: no samples.h5 yet"
else fail "partial array job"; cat arr2a.log; fi

# --- refusals and bad input: non-zero exit, a message naming the key or file, nothing written --
expect_fail "task resumed with another W" "resume it with 2 ranks" "" "${ARR2[@]}" --array-task 1
expect_fail "another P on the same folder" "array_tasks" "" "${CONV[@]}" --num-samples 40 --steps 5 --out arr2 \
  --array-tasks 3 --array-task 0
expect_fail "array task out of range" "array-task" bad_out "${CONV[@]}" --num-samples 4 --out bad_out \
  --array-tasks 3 --array-task 3
echo "not a model" >junk.pt
expect_fail "unreadable TorchScript file" "junk.pt" bad_out "$BIN/diffusion-sample" --torchscript junk.pt \
  --sample-shape 2 --num-samples 4 --out bad_out
expect_fail "missing TorchScript file" "nothere.pt" bad_out "$BIN/diffusion-sample" --torchscript nothere.pt \
  --sample-shape 2 --num-samples 4 --out bad_out
expect_fail "--torchscript without --sample-shape" "sample-shape" bad_out "$BIN/diffusion-sample" \
  --torchscript gauss.pt --num-samples 4 --out bad_out
expect_fail "sample shape the model does not take" "sample-shape" bad_out "$BIN/diffusion-sample" \
  --torchscript gauss.pt --sample-shape 3 --num-samples 4 --out bad_out
expect_fail "--num-classes on an unconditional forward(x, t)" "forward(x, t, y)" bad_out "${GAUSS[@]}" \
  --num-classes 3 --num-samples 4 --out bad_out
expect_fail "guidance on an unconditional TorchScript model" "guidance-scale" bad_out "${GAUSS[@]}" \
  --guidance-scale 2 --num-samples 4 --out bad_out
expect_fail "class out of range (TorchScript)" "class 3" bad_out "${CONV[@]}" --class 3 --num-samples 4 --out bad_out
expect_fail "S > T (TorchScript)" "steps" bad_out "${GAUSS[@]}" --timesteps 100 --steps 101 --num-samples 4 \
  --out bad_out
expect_fail "latents whose shape does not fit the model" "lat_img.h5" bad_out "${GAUSS[@]}" --latents lat_img.h5 \
  --out bad_out
if grep -q "\[5, 1, 8, 8\]" bad.log && grep -q "\[N, 2\]" bad.log; then pass "the message gives both shapes"
else fail "latents shapes in the message: $(cat bad.log)"; fi
expect_fail "latents count != --num-samples" "num-samples 5" bad_out "${GAUSS[@]}" --latents lat2.h5 \
  --num-samples 5 --out bad_out
expect_fail "--interpolate with an odd number of latents" "even" bad_out "${CONV[@]}" --latents lat_img.h5 \
  --interpolate 3 --out bad_out
expect_fail "--invert data that does not fit the model" "data.h5" bad_out "${CONV[@]}" --invert data.h5 --out bad_out
expect_fail "--invert with DDPM" "invert" bad_out "${GAUSS[@]}" --invert data.h5 --sampler ddpm --out bad_out
expect_fail "--latents and --invert together" "exclude" bad_out "${GAUSS[@]}" --invert data.h5 --latents lat2.h5 \
  --out bad_out
expect_fail "both --checkpoint and --torchscript" "one of" bad_out "${GAUSS[@]}" --checkpoint . --num-samples 4 \
  --out bad_out

finish
