#!/usr/bin/env bash
# End-to-end test of build/bin/diffusion-data: imports the real Debian Fashion-MNIST training
# files, checks the result with h5py, inspects it, makes a toy set, and checks that an existing
# output is refused and left unchanged. Run by ctest with DIFFUSION_BIN, DIFFUSION_TEST_DATA and
# DIFFUSION_PYTHON set.
set -euo pipefail

source "$(dirname "$0")/cli_common.sh" data_cli_test
BIN="$BIN/diffusion-data"
FMNIST=/usr/share/datasets/fashion-mnist
IMAGES="$FMNIST/train-images-idx3-ubyte.gz"
LABELS="$FMNIST/train-labels-idx1-ubyte.gz"


# --- make-toy and inspect: need nothing but the binary -------------------------------------
if "$BIN" make-toy --kind gmm-ring --num 2000 --seed 3 --out "$WORK/toy.h5" &&
   "$PY" -c '
import sys, h5py
f = h5py.File(sys.argv[1], "r")
x = f["x"]
assert x.dtype == "float32" and x.shape == (2000, 2), (x.dtype, x.shape)
assert f["labels"].dtype == "int64" and f["labels"].shape == (2000,)
assert int(f.attrs["num_classes"]) == 8
' "$WORK/toy.h5"; then
  pass "make-toy writes x float32 [2000, 2] with 8 classes"
else
  fail "make-toy"
fi

if "$BIN" make-toy --kind gmm-ring --num 2000 --seed 3 --out "$WORK/toy2.h5" &&
   cmp -s "$WORK/toy.h5" "$WORK/toy2.h5"; then
  pass "make-toy with the same seed gives a byte-identical file"
else
  fail "make-toy is not reproducible"
fi

# Outputs go to files before grep: with pipefail, grep -q closing a pipe early could fail the
# writer with SIGPIPE.
if "$BIN" inspect "$WORK/toy.h5" > "$WORK/toy.txt" &&
   grep -q "trainer can read it: yes" "$WORK/toy.txt"; then
  pass "inspect accepts the toy set"
else
  fail "inspect on the toy set"
fi

echo "not hdf5" > "$WORK/junk.h5"
set +e
"$BIN" inspect "$WORK/junk.h5" > "$WORK/junk.txt" 2>&1
rc=$?
set -e
if [[ $rc -ne 0 ]] && grep -q "trainer can read it: no: .*junk.h5" "$WORK/junk.txt"; then
  pass "inspect rejects a non-HDF5 file, naming it (exit $rc)"
else
  fail "inspect on a non-HDF5 file (exit $rc): $(cat "$WORK/junk.txt")"
fi

if "$BIN" make-toy --help > "$WORK/help.txt" && grep -q -- "--std arg (=0.15)" "$WORK/help.txt"; then
  pass "make-toy --help shows defaults"
else
  fail "make-toy --help"
fi

# --- Fashion-MNIST import --------------------------------------------------------------------
if [[ ! -f "$IMAGES" || ! -f "$LABELS" ]]; then
  echo "SKIP: Fashion-MNIST files not found under $FMNIST (Debian package dataset-fashion-mnist);" \
       "the import checks did not run"
else
  OUT="$WORK/fashion.h5"
  if "$BIN" import-idx --images "$IMAGES" --labels "$LABELS" --out "$OUT"; then
    pass "import-idx of Fashion-MNIST train"
  else
    fail "import-idx of Fashion-MNIST train"
  fi

  if "$PY" -c '
import sys, h5py
f = h5py.File(sys.argv[1], "r")
im, lab = f["images"], f["labels"]
assert im.dtype == "uint8" and im.shape == (60000, 28, 28, 1), (im.dtype, im.shape)
assert lab.dtype == "int64" and lab.shape == (60000,), (lab.dtype, lab.shape)
assert int(f.attrs["num_classes"]) == 10
names = [n.decode() if isinstance(n, bytes) else str(n) for n in f.attrs["class_names"]]
assert names[0] == "T-shirt/top" and names[9] == "Ankle boot" and len(names) == 10, names
y = lab[:]
assert y.min() == 0 and y.max() == 9
assert im.chunks[0] > 0 and im.maxshape[0] is None
' "$OUT"; then
    pass "h5py reads images uint8 (60000, 28, 28, 1), labels (60000,), 10 named classes"
  else
    fail "h5py check of the Fashion-MNIST file"
  fi

  if "$BIN" inspect "$OUT" > "$WORK/inspect.txt" &&
     grep -q "shape: \[60000, 28, 28, 1\]" "$WORK/inspect.txt" &&
     grep -q "class 9 (Ankle boot): 6000" "$WORK/inspect.txt" &&
     grep -q "trainer can read it: yes" "$WORK/inspect.txt"; then
    pass "inspect reports shape, the label histogram and a yes verdict"
  else
    fail "inspect of the Fashion-MNIST file: $(cat "$WORK/inspect.txt")"
  fi

  # Footwear in Fashion-MNIST faces one way (measured apart with numpy: sandals 0.926, sneakers
  # 0.997, ankle boots 1.000 of the rows nearer the class mean than their mirror image is; every
  # other class at most 0.794), so random flips would put mirrored shoes off the data.
  if grep -q "classes 5 (Sandal), 7 (Sneaker), 9 (Ankle boot) face one way" "$WORK/inspect.txt" &&
     grep -q "class 9 (Ankle boot): 6000, facing as the class mean: 1.000" "$WORK/inspect.txt" &&
     grep -q "class 7 (Sneaker): 6000, facing as the class mean: 0.997" "$WORK/inspect.txt"; then
    pass "inspect's mirror check names sandals, sneakers and ankle boots as facing one way"
  else
    fail "inspect's mirror check on Fashion-MNIST: $(cat "$WORK/inspect.txt")"
  fi

  before=$(sha256sum "$OUT" | cut -d' ' -f1)
  set +e
  "$BIN" import-idx --images "$IMAGES" --labels "$LABELS" --out "$OUT" 2> "$WORK/again.txt"
  rc=$?
  set -e
  after=$(sha256sum "$OUT" | cut -d' ' -f1)
  if [[ $rc -ne 0 && "$before" == "$after" ]] && grep -q "already exists" "$WORK/again.txt"; then
    pass "a second import to the same --out fails (exit $rc) and leaves the file unchanged"
  else
    fail "second import: exit $rc, checksum before $before after $after"
  fi

  # A truncated copy of the images is refused and leaves no output, temporary or final.
  head -c 100000 "$IMAGES" > "$WORK/cut-images.gz"
  set +e
  "$BIN" import-idx --images "$WORK/cut-images.gz" --labels "$LABELS" --out "$WORK/cut.h5" \
    2> "$WORK/cut.txt"
  rc=$?
  set -e
  if [[ $rc -ne 0 ]] && grep -q "cut-images.gz" "$WORK/cut.txt" &&
     [[ -z "$(find "$WORK" -name 'cut.h5*')" ]]; then
    pass "a truncated IDX file is refused, named, and leaves no output"
  else
    fail "truncated IDX: exit $rc: $(cat "$WORK/cut.txt")"
  fi
fi

finish
