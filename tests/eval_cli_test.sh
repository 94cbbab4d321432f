#!/usr/bin/env bash
# End-to-end test of build/bin/diffusion-eval. Images: a 4000-image Fashion-MNIST reference
# (the Debian t10k files) — the distance of the set to itself is ~0, to brightness-shifted and
# noised copies larger and growing with the shift; the classifier is trained once, cached next
# to the reference and reused, retrained when the reference changes; --features with a
# TorchScript net matches a NumPy Fréchet distance; the sampler's float `x` [N,H,W,C] reads as
# images. 2-D: a ring sample missing modes 2 and 5 reports exactly those, and its NLL matches
# NumPy. Bad input fails with a message naming the file.
# Run by ctest with DIFFUSION_BIN, DIFFUSION_TEST_DATA and DIFFUSION_PYTHON set.
set -uo pipefail
source "$(dirname "$0")/cli_common.sh" eval_cli_test
FMNIST=/usr/share/datasets/fashion-mnist
cd "$WORK" || exit 1

EVAL=("$BIN/diffusion-eval" --threads 1 --classifier-train-rows 3000 --classifier-epochs 2)
jq_py() {  # jq_py FILE.json 'python expression over j' -> exit status of the assertion
  "$PY" -c "import json, sys; j = json.load(open(sys.argv[1])); assert ($2), j" "$1"
}

# --- data: 4000 labelled Fashion-MNIST test images and modified copies -----------------------
"$BIN/diffusion-data" import-idx --images "$FMNIST/t10k-images-idx3-ubyte.gz" \
  --labels "$FMNIST/t10k-labels-idx1-ubyte.gz" --out full.h5 >/dev/null 2>&1 || { echo "import failed"; exit 1; }
"$PY" - <<'PY' || { echo "making the test sets failed"; exit 1; }
import h5py, numpy as np
src = h5py.File("full.h5", "r")
img, lab = src["images"][:4000], src["labels"][:4000]
names = src.attrs["class_names"]
def write(path, images, labels=None, key="images"):
    with h5py.File(path, "w") as f:
        f.create_dataset(key, data=images)
        if labels is not None:
            f.create_dataset("labels", data=labels.astype(np.int64))
            f.attrs["num_classes"] = np.int64(10)
            f.attrs["class_names"] = names
write("ref.h5", img, lab)
write("self.h5", img, lab)          # the same rows as the reference, in another file
rng = np.random.default_rng(0)
for shift in (30, 60):
    write(f"shift{shift}.h5", np.clip(img.astype(np.int32) + shift, 0, 255).astype(np.uint8), lab)
write("noised.h5", np.clip(img + rng.normal(0, 40, img.shape), 0, 255).astype(np.uint8), lab)
write("unlabelled.h5", img[:500])
# The sampler's --save-float layout: x float32 [N, H, W, C] in [-1, 1].
write("float.h5", (img.astype(np.float32) / 127.5 - 1.0), lab, key="x")
PY

# --- images: classifier trained and cached, self-distance ~0 ---------------------------------
t0=$(date +%s.%N)
"${EVAL[@]}" --samples self.h5 --reference ref.h5 --json self.json >self.txt 2>self.log
rc=$?
t1=$(date +%s.%N)
if [[ $rc -eq 0 ]] && grep -q "training the cnn" self.log && [[ -f ref.classifier.pt && -f ref.classifier.json ]] &&
   jq_py self.json 'j["classifier"]["reused"] is False and j["classifier"]["cached"] is True'; then
  pass "first run trains the classifier and caches it as ref.classifier.pt + ref.classifier.json"
else
  fail "first run / cache"; cat self.log
fi
if jq_py self.json 'all(k in j for k in ("frechet_distance", "feature_space", "classifier", "predicted_class_histogram",
    "label_histogram", "conditional_accuracy", "class_names", "samples", "reference")) and
    all(k in j["classifier"] for k in ("heldout_accuracy", "heldout_rows", "train_rows", "cache"))'; then
  pass "JSON has every key"
else
  fail "JSON keys"; cat self.json
fi
if jq_py self.json 'j["frechet_distance"] < 1e-3 and j["classifier"]["heldout_accuracy"] > 0.7 and
    j["conditional_accuracy"] > 0.7 and sum(j["predicted_class_histogram"]) == 4000 and
    sum(j["label_histogram"]) == 4000'; then
  pass "self-distance ~0, accuracies: $("$PY" -c "import json; j = json.load(open('self.json')); print(f'FD {j[\"frechet_distance\"]:.2e}, held-out {j[\"classifier\"][\"heldout_accuracy\"]:.3f}, conditional {j[\"conditional_accuracy\"]:.3f}')")"
else
  fail "self-distance / accuracy"; cat self.txt
fi
grep -q "frechet_distance:" self.txt && grep -q "conditional_accuracy:" self.txt &&
  grep -q "predicted_class_histogram:" self.txt && pass "summary on stdout" || fail "summary on stdout"

t2=$(date +%s.%N)
"${EVAL[@]}" --samples self.h5 --reference ref.h5 --json self2.json >self2.txt 2>self2.log
t3=$(date +%s.%N)
if grep -q "reusing the classifier cached in ref.classifier.pt" self2.log && ! grep -q "training the" self2.log &&
   jq_py self2.json 'j["classifier"]["reused"] is True' &&
   "$PY" -c "import json,sys; a=json.load(open('self.json')); b=json.load(open('self2.json'))
assert a['frechet_distance'] == b['frechet_distance'] and a['classifier']['heldout_accuracy'] == b['classifier']['heldout_accuracy']"; then
  pass "second run reuses the cache (same numbers; $(printf '%.1f' "$(echo "$t1 - $t0" | bc)") s then $(printf '%.1f' "$(echo "$t3 - $t2" | bc)") s)"
else
  fail "cache reuse"; cat self2.log
fi

# Seeded: retraining gives the same classifier, hence the same numbers.
"${EVAL[@]}" --samples self.h5 --reference ref.h5 --classifier-cache other.pt --json retrain.json >/dev/null 2>retrain.log
if "$PY" -c "import json; a=json.load(open('self.json')); b=json.load(open('retrain.json'))
assert b['classifier']['reused'] is False
assert a['classifier']['heldout_accuracy'] == b['classifier']['heldout_accuracy'], (a['classifier'], b['classifier'])
assert abs(a['frechet_distance'] - b['frechet_distance']) < 1e-9 and a['predicted_class_histogram'] == b['predicted_class_histogram']"; then
  pass "training is seeded: a second training (--classifier-cache other.pt) gives the same numbers"
else
  fail "seeded training"; cat retrain.log
fi

# --- distances to modified copies --------------------------------------------------------------
for s in shift30 shift60 noised; do
  "${EVAL[@]}" --samples $s.h5 --reference ref.h5 --json $s.json >/dev/null 2>$s.log || { cat $s.log; }
done
if "$PY" -c "import json
fd = {k: json.load(open(k + '.json'))['frechet_distance'] for k in ('self', 'shift30', 'shift60', 'noised')}
print('FD', fd)
assert fd['self'] < 1e-3 < fd['shift30'] < fd['shift60'], fd
assert fd['noised'] > 100 * max(fd['self'], 1e-6), fd"; then
  pass "distance grows: self < brightness +30 < +60; noised copy far from 0"
else
  fail "distance ordering"
fi

# --- reference changed: the cache is not reused -----------------------------------------------
touch ref.h5
"${EVAL[@]}" --samples self.h5 --reference ref.h5 >/dev/null 2>touched.log
if grep -q "reference_mtime_ns" touched.log && grep -q "training the cnn" touched.log; then
  pass "a changed reference (mtime) retrains the classifier"
else
  fail "changed reference"; cat touched.log
fi

# --- float samples (sampler --save-float layout) -----------------------------------------------
"${EVAL[@]}" --samples float.h5 --reference ref.h5 --json float.json >/dev/null 2>float.log
if jq_py float.json 'abs(j["frechet_distance"] - json.load(open("self.json"))["frechet_distance"]) < 1e-6 and j["samples"]["kind"] == "images"'; then
  pass "float x [N,H,W,C] samples read as the same images"
else
  fail "float samples"; cat float.log
fi

# --- --features: a TorchScript net; the distance matches NumPy -------------------------------
"$PY" - <<'PY' || fail "making the TorchScript feature net"
import torch
class Pool(torch.nn.Module):
    def forward(self, x):
        return torch.nn.functional.avg_pool2d(x, 4).flatten(1)   # [B, 49] for 28x28x1
torch.jit.trace(Pool(), torch.zeros(2, 1, 28, 28)).save("pool.pt")
PY
"${EVAL[@]}" --samples shift30.h5 --reference ref.h5 --features pool.pt --json feat.json >/dev/null 2>feat.log
if "$PY" - <<'PY'
import json, h5py, numpy as np
def feats(path):
    x = h5py.File(path, "r")["images"][:].astype(np.float64) / 127.5 - 1.0     # [N, 28, 28, 1]
    return x[..., 0].reshape(-1, 7, 4, 7, 4).mean(axis=(2, 4)).reshape(len(x), 49)
def sqrtm(m):
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T
a, b = feats("shift30.h5"), feats("ref.h5")
ma, mb, ca, cb = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
r = sqrtm(ca)
fd = ((ma - mb) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * np.trace(sqrtm(r @ cb @ r))
j = json.load(open("feat.json"))
print("torchscript FD", j["frechet_distance"], "numpy", fd)
assert j["feature_space"] == "torchscript:pool.pt" and j["feature_dim"] == 49
assert abs(j["frechet_distance"] - fd) < 1e-4 * fd, (j["frechet_distance"], fd)
assert "classifier" in j   # the labelled reference still gets its classifier for the histogram
PY
then
  pass "--features pool.pt: FD matches NumPy's"
else
  fail "--features"; cat feat.log
fi

# --- 2-D: coverage and NLL ---------------------------------------------------------------------
"$BIN/diffusion-data" make-toy --kind gmm-ring --num 3000 --seed 1 --out ring.h5 >/dev/null 2>&1
"$PY" - <<'PY'
import h5py, numpy as np
f = h5py.File("ring.h5", "r")
x, lab = f["x"][:], f["labels"][:]
keep = (lab != 2) & (lab != 5)
with h5py.File("missing.h5", "w") as g:
    g.create_dataset("x", data=x[keep])
PY
"${EVAL[@]}" --samples missing.h5 --reference ring.h5 --json missing.json >missing.txt 2>missing.log
if "$PY" - <<'PY'
import json, h5py, numpy as np
j = json.load(open("missing.json"))
g = j["gmm"]
f = h5py.File("ring.h5", "r")
x = h5py.File("missing.h5", "r")["x"][:].astype(np.float64)
mu, s, w = f.attrs["gmm_means"], f.attrs["gmm_std"], f.attrs["gmm_weights"]
d2 = ((x[:, None, :] - mu[None]) ** 2).sum(-1)
logp = np.log(w) - np.log(2 * np.pi * s ** 2) - d2 / (2 * s ** 2)
top = logp.max(1)
nll = -(top + np.log(np.exp(logp - top[:, None]).sum(1))).mean()
print("coverage", g["coverage"], "missing", g["missing_modes"], "nll", g["nll"], "numpy", nll)
assert g["missing_modes"] == [2, 5] and g["coverage"] == 0.75 and g["source"] == "reference attributes"
assert g["mode_counts"][2] == 0 and g["mode_counts"][5] == 0 and min(g["mode_counts"][k] for k in (0, 1, 3, 4, 6, 7)) > 300
assert abs(g["nll"] - nll) < 1e-9 * abs(nll)
assert j["frechet_distance_data"] > 0.01 and j["classifier"]["heldout_accuracy"] > 0.95
PY
then
  pass "ring without modes 2 and 5: missing_modes [2, 5], coverage 0.75, NLL matches NumPy"
else
  fail "2-D coverage / NLL"; cat missing.txt missing.log
fi
grep -q "missing \[2, 5\]" missing.txt && pass "missing modes on stdout" || fail "missing modes on stdout"

# --- unlabelled vectors: data-space distance, no classifier, no mixture ------------------------
"$BIN/diffusion-data" make-toy --kind swiss-roll --num 1000 --seed 2 --out roll.h5 >/dev/null 2>&1
"$BIN/diffusion-data" make-toy --kind swiss-roll --num 1000 --seed 3 --out roll2.h5 >/dev/null 2>&1
"${EVAL[@]}" --samples roll2.h5 --reference roll.h5 --json roll.json >roll.txt 2>roll.log
if jq_py roll.json 'j["feature_space"] == "data" and "classifier" not in j and
    j["frechet_distance"] == j["frechet_distance_data"] and 0 < j["frechet_distance"] < 0.1 and
    "roll.h5 has no attribute" in j["gmm"]["skipped"] and "gmm_means" in j["gmm"]["skipped"]' && grep -q "gmm: skipped" roll.txt; then
  pass "unlabelled swiss roll: data-space FD $(jq_py roll.json 'print(round(j["frechet_distance"], 5)) is None' 2>/dev/null), mixture skipped naming the file"
else
  fail "unlabelled vectors"; cat roll.txt roll.log
fi

# --- bad input ---------------------------------------------------------------------------------
expect_fail() {  # expect_fail NAME NEEDLE... -- command: fails, message has every needle, no JSON
  local name=$1; shift
  local needles=()
  while [[ $1 != -- ]]; do needles+=("$1"); shift; done
  shift
  rm -f bad.json
  "$@" --json bad.json >bad.txt 2>bad.log
  local rc=$?
  local ok=1
  [[ $rc -ne 0 ]] || ok=0
  for n in "${needles[@]}"; do grep -qF -- "$n" bad.log || ok=0; done
  [[ ! -e bad.json ]] || ok=0
  if [[ $ok -eq 1 ]]; then pass "$name: $(tail -1 bad.log)"; else fail "$name"; cat bad.log; fi
}
expect_fail "missing samples file" "nothere.h5" "does not exist" -- \
  "${EVAL[@]}" --samples nothere.h5 --reference ref.h5
expect_fail "unlabelled image reference" "unlabelled.h5" "labels" -- \
  "${EVAL[@]}" --samples self.h5 --reference unlabelled.h5
expect_fail "shape mismatch" "missing.h5" "ref.h5" "vectors of 2" "images 28x28x1" -- \
  "${EVAL[@]}" --samples missing.h5 --reference ref.h5
"$PY" -c "
import h5py, numpy as np
with h5py.File('partial.h5', 'w') as f:
    f.create_dataset('x', data=np.zeros((10, 2), np.float32))
    f.attrs['gmm_means'] = np.zeros((3, 2))
"
expect_fail "incomplete mixture attributes" "partial.h5" "gmm_std" -- \
  "${EVAL[@]}" --samples missing.h5 --reference partial.h5
"$BIN/diffusion-data" make-toy --kind moons --num 200 --out moons.h5 >/dev/null 2>&1
expect_fail "class-count mismatch" "moons.h5" "ring.h5" "num_classes = 2" -- \
  "${EVAL[@]}" --samples moons.h5 --reference ring.h5
echo junk >junk.h5
expect_fail "not HDF5" "junk.h5" -- "${EVAL[@]}" --samples junk.h5 --reference ref.h5
expect_fail "--gmm-modes without --gmm-std" "--gmm-std" -- \
  "${EVAL[@]}" --samples missing.h5 --reference ring.h5 --gmm-modes 8

finish
