#!/usr/bin/env bash
# End-to-end test of the diffusion_cluster package against the C++ programs: tiny runs (MLP,
# class-conditional MLP with cosine schedule and v-prediction, a
# class-conditional learned-variance UNet on 14x14 images so 14 → 7 → 4 upsamples back, and a
# distilled student) are trained for a few steps; for each, `diffusion-sample --checkpoint`
# and `--torchscript` of `python -m diffusion_cluster.export` decode the same latents with
# DDIM (equal to round-off), and a Python DDIM loop over `diffusion_cluster.load` matches them
# (interop_check.py). Two consistency models (trained, and distilled from the MLP) sampled
# through `--checkpoint` match consistency_sample; ddim_sample and the export refuse them.
# Bad input (not a run, checksum, unknown architecture) fails naming the
# file, writing nothing. Then the plots. Run by ctest with DIFFUSION_BIN, DIFFUSION_SOURCE,
# DIFFUSION_TEST_DATA and DIFFUSION_PYTHON (tests/cli_common.sh).
set -uo pipefail

source "$(dirname "$0")/../../tests/cli_common.sh" interop_test
# The package from this source tree (what launch/setup.sh installs), whatever .venv holds.
export PYTHONPATH="$SRC/python${PYTHONPATH:+:$PYTHONPATH}"
cd "$WORK" || exit 1

"$BIN/diffusion-data" make-toy --kind gmm-ring --num 2000 --seed 0 --out ring.h5 >/dev/null
"$PY" - <<'PYEOF'
# 14x14 grey images with 3 classes, in the dataset format (docs/formats.md).
import h5py, numpy as np
rng = np.random.default_rng(0)
with h5py.File("img14.h5", "w") as f:
    f.create_dataset("images", data=rng.integers(0, 256, (96, 14, 14, 1), dtype=np.uint8),
                     chunks=(96, 14, 14, 1), maxshape=(None, 14, 14, 1))
    f.create_dataset("labels", data=np.arange(96, dtype=np.int64) % 3, chunks=(96,), maxshape=(None,))
    f.attrs["num_classes"] = np.int64(3)
PYEOF

# A high learning rate so that a few steps move every weight well away from its (partly zero)
# initialisation: the comparisons below then depend on every tensor loaded.
COMMON=(--threads 1 --dropout 0 --lr 5e-3 --log-every 5 --warmup 0)
train() {  # NAME ARGS...: train runs/NAME
  local name=$1; shift
  if "$BIN/diffusion-train" "${COMMON[@]}" --out "$name" "$@" >"$name.log" 2>&1; then
    pass "train $name"
  else
    fail "train $name (log follows)"; cat "$name.log"
  fi
}
train mlp --data ring.h5 --model mlp --mlp-hidden 32 --mlp-blocks 2 --mlp-time-dim 16 \
  --steps 30 --batch-size 64 --ema-rates 0.9,0.5 --ema-sigma-rels 0.1 --checkpoint-every 15
train mlpc --data ring.h5 --model mlp --mlp-hidden 24 --mlp-blocks 1 --mlp-time-dim 15 --class-cond true \
  --schedule cosine --prediction v --timesteps 200 --steps 20 --batch-size 64 --ema-rates 0.8
train unet --data img14.h5 --model unet --base-channels 8 --channel-mult 1,2,2 --num-res-blocks 1 \
  --attention-resolutions 7 --image-size 14 --num-groups 4 --num-heads 2 --class-cond true \
  --learned-variance true --steps 12 --batch-size 16 --ema-rates 0.7
if "$BIN/diffusion-distill" --teacher mlp --data ring.h5 --out dist --start-steps 4 --target-steps 2 \
     --steps-per-round 10 --batch-size 64 --lr 1e-3 --ema-rates none --threads 1 >dist.log 2>&1 &&
   [ -d dist/steps-2/checkpoints ]; then
  pass "distill a 2-step student"
else
  fail "distill (log follows)"; cat dist.log
fi

# Consistency models: one trained (iCT, v-prediction) and one distilled from the mlp teacher.
train ct --data ring.h5 --model mlp --mlp-hidden 32 --mlp-blocks 2 --mlp-time-dim 16 --objective consistency \
  --prediction v --steps 20 --batch-size 64 --ema-rates 0.9
if "$BIN/diffusion-distill" --method consistency --teacher mlp --data ring.h5 --out cdist --steps-per-round 10 \
     --batch-size 64 --lr 1e-3 --threads 1 >cdist.log 2>&1 && [ -d cdist/consistency/checkpoints ]; then
  pass "distill a consistency student"
else
  fail "consistency distillation (log follows)"; cat cdist.log
fi

"$PY" "$SRC/tests/sample_models.py" latents lat2.h5 6 2 >/dev/null
"$PY" "$SRC/tests/sample_models.py" latents lat14.h5 6 1,14,14 >/dev/null

# NAME RUN LATENTS SAMPLER-FLAGS...: sample RUN through the checkpoint and through its export.
roundtrip() {
  local name=$1 run=$2 lat=$3; shift 3
  local common=(--latents "$lat" --save-float true --batch-size 4 --threads 1 "$@")
  "$BIN/diffusion-sample" --checkpoint "$run" "${common[@]}" --out "ck_$name" >"ck_$name.log" 2>&1 ||
    { fail "$name: diffusion-sample --checkpoint (log follows)"; cat "ck_$name.log"; return; }
  "$PY" -m diffusion_cluster.export "$run" --out "$name.pt" >"export_$name.log" 2>&1 ||
    { fail "$name: export (log follows)"; cat "export_$name.log"; return; }
  [ -f "$name.pt" ] && [ -f "$name.safetensors" ] && [ -f "$name.json" ] ||
    { fail "$name: export wrote $(ls "$name".*)"; return; }
  # The flags that describe the TorchScript file, as the export recorded them.
  mapfile -t flags < <("$PY" -c "import json,sys; print('\n'.join(json.load(open(sys.argv[1]))['diffusion_sample_flags']))" "$name.json")
  "$BIN/diffusion-sample" --torchscript "$name.pt" "${flags[@]}" "${common[@]}" --out "ts_$name" >"ts_$name.log" 2>&1 ||
    { fail "$name: diffusion-sample --torchscript (log follows)"; cat "ts_$name.log"; return; }
  pass "$name: exported and sampled through --checkpoint and --torchscript"
}
DDIM=(--sampler ddim --steps 4 --timestep-spacing trailing --clip-x0 false)
roundtrip mlp mlp lat2.h5 "${DDIM[@]}"
roundtrip mlpc mlpc lat2.h5 "${DDIM[@]}"
roundtrip unet unet lat14.h5 "${DDIM[@]}"
roundtrip student dist/steps-2 lat2.h5 --clip-x0 false  # the student's own grid, from its config

# Samples equal: checkpoint vs TorchScript, and a Python DDIM loop over load() vs both.
if "$PY" "$SRC/python/tests/interop_check.py" compare mlp:mlp:lat2.h5 mlpc:mlpc:lat2.h5 \
     unet:unet:lat14.h5 student:dist/steps-2:lat2.h5; then
  pass "outputs equal to round-off (see the table above)"
else
  fail "outputs equal"
fi
# Consistency models through --checkpoint (1 step by default) vs consistency_sample from the
# same latents; 3 steps too where ddpm_step_probe (a test program) gives the sampler's keyed
# noise, which Python cannot draw itself.
csample() {  # NAME RUN FLAGS...
  local name=$1 run=$2; shift 2
  "$BIN/diffusion-sample" --checkpoint "$run" --latents lat2.h5 --save-float true --batch-size 4 --threads 1 \
    "$@" --out "ck_$name" >"ck_$name.log" 2>&1 || { fail "$name: diffusion-sample --checkpoint (log follows)"; cat "ck_$name.log"; }
}
csample ct ct
csample cdist cdist/consistency
cspecs=(ct:ct:lat2.h5 cdist:cdist/consistency:lat2.h5)
if [ -x "$BIN/ddpm_step_probe" ]; then
  csample ct3 ct --steps 3 --seed 7
  "$PY" -c "import h5py, numpy as np
with h5py.File('keyed.h5', 'w') as f:
    g = f.create_group('keyed')
    for k, v in dict(seed=7, count=6, draws=3, dim=2).items(): g.attrs[k] = np.int64(v)" &&
    "$BIN/ddpm_step_probe" keyed.h5 >/dev/null && cspecs+=(ct3:ct:lat2.h5:3:keyed.h5)
else
  echo "note: no $BIN/ddpm_step_probe: multistep consistency sampling not compared"
fi
if "$PY" "$SRC/python/tests/interop_check.py" consistency "${cspecs[@]}"; then
  pass "consistency_sample equals diffusion-sample --checkpoint to round-off; ddim_sample refuses (table above)"
else
  fail "consistency_sample"
fi
expect_fail "export refuses a consistency model" "ct/checkpoints/step-00000020/manifest.json: a consistency model" \
  ct.pt "$PY" -m diffusion_cluster.export ct --out ct.pt
expect_fail "export refuses a consistency student" \
  "cdist/consistency/checkpoints/step-00000010/manifest.json: a consistency model" cdist.pt \
  "$PY" -m diffusion_cluster.export cdist/consistency --out cdist.pt
[ -e ct.safetensors ] || [ -e ct.json ] || [ -e cdist.safetensors ] || [ -e cdist.json ] &&
  fail "a refused export left files" || pass "refused exports wrote nothing"

if "$PY" "$SRC/python/tests/interop_check.py" load-checks mlp unet.safetensors unet; then
  pass "EMA choice, safetensors weights and config"
else
  fail "EMA choice, safetensors"
fi

# --- bad input: a clear exception naming the file, nothing written -----------------------------
mkdir notarun
expect_fail "not a run folder" "notarun: not a run folder" bad.pt "$PY" -m diffusion_cluster.export notarun --out bad.pt
cp -r mlp badcrc
"$PY" - <<'PYEOF'
import json
p = "badcrc/checkpoints/step-00000030/manifest.json"
m = json.load(open(p))
m["shards"][0]["crc32"] = "%08x" % (int(m["shards"][0]["crc32"], 16) ^ 1)
json.dump(m, open(p, "w"))
PYEOF
expect_fail "checksum mismatch" "badcrc/checkpoints/step-00000030/shard-00000-of-00001.h5: checksum mismatch" bad.pt \
  "$PY" -m diffusion_cluster.export badcrc --out bad.pt
cp -r mlp badarch
"$PY" - <<'PYEOF'
import json
p = "badarch/checkpoints/step-00000030/manifest.json"
m = json.load(open(p))
m["config_text"] = m["config_text"].replace("model = mlp", "model = transformer")
json.dump(m, open(p, "w"))
PYEOF
expect_fail "unknown architecture" "badarch/checkpoints/step-00000030/manifest.json: model = 'transformer'" bad.pt \
  "$PY" -m diffusion_cluster.export badarch --out bad.pt
[ -e bad.safetensors ] || [ -e bad.json ] && fail "bad input left bad.safetensors/bad.json" || pass "bad input wrote nothing"
if "$PY" "$SRC/python/tests/interop_check.py" exceptions notarun badcrc badarch; then
  pass "load() raises RunFormatError naming the file"
else
  fail "load() exceptions"
fi

# --- plots: training curves of runs and a distillation, quality against steps ----------------
if "$BIN/diffusion-distill" --teacher mlp --data ring.h5 --out dist2 --start-steps 4 --target-steps 1 \
     --steps-per-round 6 --batch-size 32 --ema-rates none --log-every 2 --threads 1 >dist2.log 2>&1 &&
   "$PY" -m diffusion_cluster.plot mlp dist2 --out plots >plot.log 2>&1; then
  pass "plot runs (a distillation with rounds)"
else
  fail "plot runs (logs follow)"; cat dist2.log plot.log
fi
evals=()
for s in 2 8; do
  "$BIN/diffusion-sample" --checkpoint mlp --sampler ddim --steps "$s" --num-samples 300 --threads 1 \
    --out "q$s" >/dev/null 2>&1 &&
    "$BIN/diffusion-eval" --samples "q$s/samples.h5" --reference ring.h5 --json "q$s/eval.json" --threads 1 >/dev/null 2>&1
  evals+=("q$s/eval.json")
done
"$BIN/diffusion-sample" --checkpoint dist2/steps-1 --num-samples 300 --threads 1 --out qs1 >/dev/null 2>&1 &&
  "$BIN/diffusion-eval" --samples qs1/samples.h5 --reference ring.h5 --json qs1/eval.json --threads 1 >/dev/null 2>&1
evals+=(qs1/eval.json)
if "$PY" -m diffusion_cluster.plot --eval "${evals[@]}" --out plots >plot.log 2>&1 &&
   "$PY" "$SRC/python/tests/interop_check.py" plots plots mlp dist2; then
  pass "plots: loss.png, training.png, quality.png"
else
  fail "plots (log follows)"; cat plot.log
fi
expect_fail "plot of a folder that is not a run" "notarun: not a run folder" notarun/plots \
  "$PY" -m diffusion_cluster.plot notarun
expect_fail "plot of a file that is not an eval report" "mlp.json: not a diffusion-eval" plots2 \
  "$PY" -m diffusion_cluster.plot --eval mlp.json --out plots2

finish
