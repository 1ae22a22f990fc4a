#!/usr/bin/env bash
# sdlab vs diffusers on a GPU box, float16 on CUDA, 512x512: one script, run from a copy of the
# repository (no network there).
#
#   bench/gpu.sh [SDLAB [BEFORE]]
#                            SDLAB: a CUDA build of sdlab, or SDLAB.xz beside where it would be
#                            (default .gpu/sdlab; .ci/cuda-build --out .gpu/sdlab makes both);
#                            BEFORE: another build (same forms), timed too, sdlab alone, to
#                            measure one lever: e.g. .ci/cuda-build --features cuda --out
#                            .gpu/sdlab-nocudnn for the convolutions without cuDNN
#
# Carried with the repository: .whl/ with the wheels of diffusers 0.42.1, accelerate and psutil (the
# box's Python has torch, transformers, huggingface_hub, safetensors, numpy, pillow, regex, requests
# but no diffusers; see bench/README.md for the download command), and the sdlab binary.
# Without the binary only diffusers runs.
#
# Environment: PYTHON (default /opt/torch/.venv/bin/python3, else python3), MODEL (default
# /tmp/benchmodel, made here when missing), WIDTH HEIGHT STEPS REPEATS (512 512 20 3), OUT (a folder
# for the results: gpu.log, compare.md, compare.jsonl; default /tmp/sdlab-bench-out), BUDGET (seconds
# the whole script may take, default 450: the model's making and each tool's run get timeouts that
# keep it inside that).
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS
SDLAB=${1:-.gpu/sdlab}
BEFORE=${2:-}
PY=${PYTHON:-/opt/torch/.venv/bin/python3}
[ -x "$PY" ] || PY=$(command -v python3)
MODEL=${MODEL:-/tmp/benchmodel}
WIDTH=${WIDTH:-512} HEIGHT=${HEIGHT:-512} STEPS=${STEPS:-20} REPEATS=${REPEATS:-3}
OUTDIR=${OUT:-/tmp/sdlab-bench-out}
BUDGET=${BUDGET:-450}
mkdir -p "$OUTDIR"
exec > >(tee -a "$OUTDIR/gpu.log") 2>&1
lap() { echo "-- $1: $((SECONDS - t)) s (total $((SECONDS - t0)) s)"; }

echo "== wheels (.whl/) into /tmp/site"
t=$SECONDS
ls .whl/*.whl || { echo "no wheels in .whl/: see bench/README.md"; exit 1; }
if "$PY" -m pip --version >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
else  # no pip in that venv: these wheels have no .data folders, so unpacking them installs them
  for w in .whl/*.whl; do "$PY" -m zipfile -e "$w" /tmp/site; done
fi
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
"$PY" -c 'import sys, torch, diffusers, transformers, accelerate
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      "diffusers", diffusers.__version__, "transformers", transformers.__version__, "accelerate", accelerate.__version__)'
lap "wheels"

echo "== nvidia-smi"
nvidia-smi || true

# .ci/cuda-build's packed form (BIN.xz), the one that fits the trip here, unpacked to $2
unpack() {
  if [ ! -x "$1" ] && [ -f "$1.xz" ]; then
    "$PY" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
      "$1.xz" "$2"
    chmod +x "$2"
    echo "$2"
  else
    echo "$1"
  fi
}
echo "== sdlab binary: $SDLAB"
SDLAB=$(unpack "$SDLAB" /tmp/sdlab-unpacked)
[ -z "$BEFORE" ] || BEFORE=$(unpack "$BEFORE" /tmp/sdlab-before-unpacked)
echo "sdlab: $SDLAB${BEFORE:+; before: $BEFORE}"
only=()
if [ -x "$SDLAB" ]; then
  ldd "$SDLAB" || true
  if ldd "$SDLAB" 2>/dev/null | grep -q "not found"; then
    # the CUDA libraries are in the torch venv's nvidia wheels; .ci/cuda-build bakes that RUNPATH in
    libs=$("$PY" -c 'import nvidia, os; print(":".join(r for r, _, _ in os.walk(nvidia.__path__[0]) if r.endswith("/lib")))' 2>/dev/null || true)
    export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$libs
    echo "some libraries not found; LD_LIBRARY_PATH += the nvidia wheels' lib folders:"
    ldd "$SDLAB" | grep -E "cuda|cublas|curand|nvrtc|cudnn|not found" || true
  fi
  "$SDLAB" --version
else
  echo "no sdlab binary at $SDLAB: diffusers only"
  only=(--only diffusers)
fi

echo "== bench model: $MODEL"
t=$SECONDS
if [ ! -f "$MODEL/model_index.json" ]; then
  rm -rf "$MODEL.part"
  # random weights drawn on the GPU (seconds); on the CPU if that fails (a minute or two on 16 cores)
  timeout 120 "$PY" bench/make_bench_model.py "$MODEL.part" tests/fixtures/sd2-tiny/model/tokenizer cuda \
    || { rm -rf "$MODEL.part"; timeout 180 "$PY" bench/make_bench_model.py "$MODEL.part" tests/fixtures/sd2-tiny/model/tokenizer cpu; }
  mv "$MODEL.part" "$MODEL"
fi
du -sh "$MODEL"
lap "model"

echo "== compare: ${WIDTH}x${HEIGHT}, $STEPS steps, cuda f16"
t=$SECONDS
status=0
tools=$(( (${#only[@]} ? 1 : 2) + (${#BEFORE} ? 1 : 0) ))
per_tool=$(( (BUDGET - (SECONDS - t0) - 15) / tools ))
[ "$per_tool" -ge 60 ] || per_tool=60
echo "each tool may take $per_tool s"
"$PY" bench/compare.py --model "$MODEL" --device cuda --dtype f16 --width "$WIDTH" --height "$HEIGHT" \
  --steps "$STEPS" --repeats "$REPEATS" --sdlab "$SDLAB" --python "$PY" --timeout "$per_tool" "${only[@]}" \
  --json-out "$OUTDIR/compare.jsonl" >"$OUTDIR/compare.md" || status=$?
cat "$OUTDIR/compare.md"
lap "compare"
if [ -n "$BEFORE" ] && [ -x "$BEFORE" ]; then
  echo "== before: $BEFORE (sdlab alone)"
  t=$SECONDS
  "$BEFORE" --version
  "$PY" bench/compare.py --model "$MODEL" --device cuda --dtype f16 --width "$WIDTH" --height "$HEIGHT" \
    --steps "$STEPS" --repeats "$REPEATS" --sdlab "$BEFORE" --python "$PY" --timeout "$per_tool" --only sdlab \
    --json-out "$OUTDIR/before.jsonl" >"$OUTDIR/before.md" || status=$?
  cat "$OUTDIR/before.md"
  lap "before"
fi
echo "results in $OUTDIR: gpu.log compare.md compare.jsonl${BEFORE:+ before.md before.jsonl}"
exit $status
