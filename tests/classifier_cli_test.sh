#!/usr/bin/env bash
# End-to-end test of classifier guidance on the gmm-ring toy set (8 classes, 2-D):
# diffusion-train --objective classifier at W = 1 and W = 2 trains the same weights (within
# float32 round-off); the classifier, run by an independent PyTorch forward on the
# checkpoint's tensors, is well above chance on clean data; diffusion-sample --classifier
# --class K on an unconditional model puts more samples in mode K (by the true mixture's
# posterior) than unguided sampling, more with a larger scale, for DDIM and DDPM; on 8×8 images
# the UNet classifier guides an unconditional UNet to the asked class; W = 1 and
# W = 3 give bit-identical guided samples; bad input is refused, naming the folder and
# setting, before anything is written.
# Run by ctest with DIFFUSION_BIN, DIFFUSION_SOURCE, DIFFUSION_TEST_DATA and DIFFUSION_PYTHON.
set -uo pipefail

source "$(dirname "$0")/cli_common.sh" classifier_cli_test
cd "$WORK" || exit 1
export PYTHONPATH="$SRC/python${PYTHONPATH:+:$PYTHONPATH}"
"$BIN/diffusion-data" make-toy --kind gmm-ring --num 5000 --seed 0 --out ring.h5 >/dev/null

# toy_2d's recipe before issue #13 pinned (eps, constant lr 1e-3, batch 256): what these checks were sized on.
COMMON=(--config "$SRC/configs/toy_2d.ini" --data ring.h5 --threads 1 --mlp-hidden 64 --log-every 100
        --prediction eps --lr 1e-3 --lr-decay constant --batch-size 256)
"$BIN/diffusion-train" "${COMMON[@]}" --steps 1500 --ema-rates 0.99 --checkpoint-every 1500 --out model \
  >model.log 2>&1 || { cat model.log; exit 1; }
CLS=("$BIN/diffusion-train" "${COMMON[@]}" --objective classifier --steps 400 --mlp-blocks 2 --ema-rates 0.99
     --checkpoint-every 400)
if "${CLS[@]}" --out cls1 >cls1.log 2>&1 && "${MPIRUN[@]}" -np 2 "${CLS[@]}" --out cls2 >cls2.log 2>&1; then
  pass "diffusion-train --objective classifier at W=1 and W=2 exits 0"
else
  fail "classifier training"; cat cls1.log cls2.log; finish; exit 1
fi
if grep -q "objective = classifier" cls1/config.ini && grep -q "num-classes = 8" cls1/config.ini &&
   grep -q "sample-shape = 2" cls1/config.ini; then
  pass "the run's config records objective = classifier, its 8 classes and the sample shape"
else fail "classifier config.ini"; cat cls1/config.ini; fi
if grep -q "train-accuracy" cls1.log && "$PY" -c "import json; r = [json.loads(l) for l in open('cls1/metrics.jsonl')]
assert all('accuracy' in x for x in r) and r[-1]['accuracy'] > 0.25, r[-1]"; then
  pass "train accuracy on the noisy inputs is logged and above chance"
else fail "train accuracy logging"; tail -3 cls1.log; fi

# Same weights at W = 1 and 2; clean-data accuracy by an independent forward (the PyTorch MLP
# of python/diffusion_cluster with its output layer replaced by the head).
if "$PY" - <<'PYEOF'
import h5py, numpy as np, torch
from diffusion_cluster.checkpoint import find_checkpoint, read_checkpoint
from diffusion_cluster.nets import MlpDenoiser, python_name
_, a = read_checkpoint(find_checkpoint("cls1"))
_, b = read_checkpoint(find_checkpoint("cls2"))
diff = max((a[k] - b[k]).abs().max().item() for k in a if k.startswith("model/"))
print("max |W1 - W2| over the weights:", diff)
assert diff < 1e-5, diff
net = MlpDenoiser(2, 64, 2, 64, 0.0, 0)
net.out = torch.nn.Linear(64, 8)
state = {python_name(k[len("ema_0.99/"):]).replace("head.", "out."): v for k, v in a.items() if k.startswith("ema_0.99/")}
net.load_state_dict(state)
f = h5py.File("ring.h5")
x, y = torch.from_numpy(f["x"][:]), torch.from_numpy(f["labels"][:])
with torch.no_grad():
    acc = (net(x, torch.zeros(len(x), dtype=torch.long)).argmax(1) == y).double().mean().item()
print("clean-data accuracy:", acc)
assert acc > 0.8, acc
PYEOF
then pass "W=1 and W=2 weights agree; clean-data accuracy well above chance (1/8)"
else fail "classifier weights / accuracy"; fi

# Share of samples whose true-mixture posterior puts them in mode K.
share() {
  "$PY" - "$1" "$2" <<'PYEOF'
import h5py, numpy as np, sys
x = h5py.File(sys.argv[1])["x"][:]
k = int(sys.argv[2])
angles = 2 * np.pi * np.arange(8) / 8
means = 2.0 * np.stack([np.cos(angles), np.sin(angles)], 1)
logp = -((x[:, None, :] - means[None]) ** 2).sum(-1) / (2 * 0.15 ** 2)
print(np.mean(logp.argmax(1) == k))
PYEOF
}
SAMPLE=("$BIN/diffusion-sample" --checkpoint model --threads 1 --num-samples 200)
for s in ddim ddpm; do
  extra=(--steps 50)
  ok=1
  "${SAMPLE[@]}" --sampler "$s" "${extra[@]}" --out "plain_$s" >"plain_$s.log" 2>&1 || ok=0
  for scale in 1 4; do
    "${SAMPLE[@]}" --sampler "$s" "${extra[@]}" --classifier cls1 --classifier-scale "$scale" --class 3 \
      --out "g${scale}_$s" >"g${scale}_$s.log" 2>&1 || ok=0
  done
  if [ "$ok" = 1 ]; then
    p0=$(share "plain_$s/samples.h5" 3); p1=$(share "g1_$s/samples.h5" 3); p4=$(share "g4_$s/samples.h5" 3)
    if "$PY" -c "import sys; p0, p1, p4 = map(float, sys.argv[1:]); assert p0 < 0.3 and p1 > p0 + 0.15 and p4 >= p1 and p4 > 0.8" \
       "$p0" "$p1" "$p4"; then
      pass "$s: share of mode 3 grows with the classifier scale (unguided $p0, s=1 $p1, s=4 $p4)"
    else fail "$s: share of mode 3: unguided $p0, s=1 $p1, s=4 $p4"; fi
  else
    fail "$s guided sampling runs"; cat "plain_$s.log" "g1_$s.log" "g4_$s.log"
  fi
done
if grep -q "classifier guidance, scale 4" g4_ddim.log && grep -q '"classifier"' g4_ddim/manifest.json; then
  pass "the log and the manifest name the classifier and its scale"
else fail "classifier in log / manifest"; cat g4_ddim.log; fi

# W = 1 vs W = 3, DDPM (noisy steps) with batch sizes 16 and 7.
if "${SAMPLE[@]}" --sampler ddpm --steps 50 --classifier cls1 --classifier-scale 2 --class 5 --batch-size 16 --out w1 \
     >w1.log 2>&1 &&
   "${MPIRUN[@]}" -np 3 "${SAMPLE[@]}" --sampler ddpm --steps 50 --classifier cls1 --classifier-scale 2 --class 5 \
     --batch-size 7 --out w3 >w3.log 2>&1 &&
   "$PY" -c "import h5py, numpy as np; a = h5py.File('w1/samples.h5')['x'][:]; b = h5py.File('w3/samples.h5')['x'][:]
assert np.array_equal(a, b) and (h5py.File('w1/samples.h5')['labels'][:] == 5).all()"; then
  pass "guided DDPM: W=1 batch 16 == W=3 batch 7, bit for bit; labels record the class"
else fail "guided W=1 vs W=3"; cat w1.log w3.log; fi

# --- images: the UNet classifier (the UNet's encoder half) guides an unconditional 8×8 UNet -----
# Two classes, dark and bright noisy images; guided at scale 3 every sample takes the class's
# brightness, unguided about half do.
"$PY" -c "import h5py, numpy as np
r = np.random.default_rng(0); y = (np.arange(256) % 2).astype(np.int64)
img = np.where(y[:, None, None, None] == 1, 255, 0) + r.integers(-40, 40, (256, 8, 8, 1))
with h5py.File('imgs.h5', 'w') as f:
    f['images'] = np.clip(img, 0, 255).astype(np.uint8); f['labels'] = y; f.attrs['num_classes'] = np.int64(2)"
UNET=("$BIN/diffusion-train" --data imgs.h5 --model unet --image-size 8 --base-channels 16 --channel-mult 1,2
      --num-res-blocks 1 --attention-resolutions 4 --num-groups 4 --dropout 0 --timesteps 100 --batch-size 32
      --steps 500 --lr 1e-3 --log-every 500 --checkpoint-every 500 --threads 1 --ema-rates 0.99)
ok=1
"${UNET[@]}" --out img_model >img_model.log 2>&1 || ok=0
"${UNET[@]}" --objective classifier --out img_cls >img_cls.log 2>&1 || ok=0
for k in 0 1; do
  "$BIN/diffusion-sample" --checkpoint img_model --classifier img_cls --classifier-scale 3 --class "$k" --num-samples 32 \
    --steps 50 --threads 1 --out "img_g$k" >"img_g$k.log" 2>&1 || ok=0
done
"$BIN/diffusion-sample" --checkpoint img_model --num-samples 32 --steps 50 --threads 1 --out img_plain >img_plain.log 2>&1 || ok=0
if [ "$ok" = 1 ] && "$PY" -c "import h5py, numpy as np
bright = lambda d: np.mean(h5py.File(d + '/samples.h5')['images'][:].reshape(32, -1).mean(1) > 127.5)
b0, b1, bp = bright('img_g0'), bright('img_g1'), bright('img_plain')
print('bright share: class 0', b0, 'class 1', b1, 'unguided', bp)
assert b0 <= 0.1 and b1 >= 0.9 and 0.2 <= bp <= 0.8"; then
  pass "images: the UNet classifier guides an unconditional UNet to the asked class"
else fail "image classifier guidance"; cat img_model.log img_cls.log img_g0.log | tail -20; fi
expect_fail "a classifier of another image size" "option --classifier: .*img_cls.* classifies samples of shape \[1, 8, 8\]" bad10 \
  "${SAMPLE[@]}" --classifier img_cls --class 1 --out bad10

# --- bad input: refused before anything is written ---------------------------------------------
"$BIN/diffusion-data" make-toy --kind gmm-ring --modes 4 --num 500 --seed 1 --out ring4.h5 >/dev/null
"$BIN/diffusion-data" make-toy --kind swiss-roll --num 500 --seed 1 --out roll.h5 >/dev/null
"$PY" -c "import h5py, numpy as np
with h5py.File('three.h5', 'w') as f:
    f['x'] = np.random.default_rng(0).normal(size=(300, 3)).astype(np.float32)
    f['labels'] = (np.arange(300) % 8).astype(np.int64)
    f.attrs['num_classes'] = np.int64(8)"
TINY=("$BIN/diffusion-train" --config "$SRC/configs/toy_2d.ini" --threads 1 --mlp-hidden 16 --mlp-blocks 1 --steps 5
      --batch-size 32 --log-every 5 --checkpoint-every 5)
"${TINY[@]}" --data ring4.h5 --objective classifier --out cls4 >cls4.log 2>&1 || cat cls4.log
"${TINY[@]}" --data three.h5 --objective classifier --out cls3d >cls3d.log 2>&1 || cat cls3d.log
"${TINY[@]}" --data ring.h5 --objective classifier --timesteps 500 --out cls_t500 >cls_t500.log 2>&1 || cat cls_t500.log
"${TINY[@]}" --data ring.h5 --class-cond true --out cond >cond.log 2>&1 || cat cond.log

expect_fail "train: --objective classifier on data without labels" "roll.h5.*labels" bad_roll \
  "${TINY[@]}" --data roll.h5 --objective classifier --out bad_roll
expect_fail "train: an unknown --objective" "option --objective: 'bogus'" bad_obj \
  "${TINY[@]}" --data ring.h5 --objective bogus --out bad_obj
expect_fail "train: --objective classifier with --class-cond" "option --class-cond" bad_cc \
  "${TINY[@]}" --data ring.h5 --objective classifier --class-cond true --out bad_cc
expect_fail "--classifier-scale without --classifier" "option --classifier-scale 2: needs --classifier" bad1 \
  "${SAMPLE[@]}" --classifier-scale 2 --out bad1
expect_fail "a denoiser folder as --classifier" "option --classifier: .*model.* is not a classifier" bad2 \
  "${SAMPLE[@]}" --classifier model --class 1 --out bad2
expect_fail "a classifier of another sample shape" "option --classifier: .*cls3d.* classifies samples of shape \[3\]" bad3 \
  "${SAMPLE[@]}" --classifier cls3d --class 1 --out bad3
expect_fail "a classifier of another T" "option --classifier: .*cls_t500.* timesteps = 500" bad4 \
  "${SAMPLE[@]}" --classifier cls_t500 --class 1 --out bad4
expect_fail "a classifier of other classes than the conditional model" "option --classifier: .*cls4.* tells 4 classes apart.* conditioned on 8" bad5 \
  "$BIN/diffusion-sample" --checkpoint cond --num-samples 10 --classifier cls4 --out bad5
expect_fail "an unconditional model without --class" "option --classifier: the model is unconditional; give the class" bad6 \
  "${SAMPLE[@]}" --classifier cls1 --out bad6
expect_fail "--class beyond the classifier's classes" "option --class 9: out of range, the classifier has 8" bad7 \
  "${SAMPLE[@]}" --classifier cls1 --class 9 --out bad7
expect_fail "a fast sampler with --classifier" "option --classifier: .*ddpm and ddim, not heun" bad8 \
  "${SAMPLE[@]}" --sampler heun --classifier cls1 --class 1 --out bad8
expect_fail "a classifier as --checkpoint" "option --checkpoint: .*cls1.* is a noisy-sample classifier" bad9 \
  "$BIN/diffusion-sample" --checkpoint cls1 --num-samples 10 --out bad9

finish
