#!/usr/bin/env bash
# One-command performance report of mlmjax on one GPU, every ratio measured on the same card.
#
#   bash bench/gpu_report.sh               # the report: one Markdown table (budget 450 s)
#   bash bench/gpu_report.sh fit [remat|noremat]  # largest BERT-large s512 batch (both: default)
#   bash bench/gpu_report.sh profile       # BERT-base 256x128 traced, and one-change variants
#   bash bench/gpu_report.sh smoke         # the same pipeline with tiny shapes, on CPU (a test)
#   bash bench/gpu_report.sh fetch-wheels  # on a machine with network: fill bench/wheels
#   bash bench/gpu_report.sh install       # only install what is missing from bench/wheels
#
# The report runs, each in its own process (so each peak-memory figure is its own):
#   1. mlmjax BERT-base, seq 128, batch 256, bf16, and every masking strategy alone at that shape
#   2. Hugging Face BertForMaskedLM in PyTorch: eager and torch.compile at 256x128, eager 32x512
#   3. mlmjax BERT-base, seq 512, batch 64
#   4. mlmjax BERT-large, seq 512, batch 32, no rematerialisation
# then prints one table (also written to $OUT/gpu_report.md when $OUT is set, with the raw
# records in $OUT/gpu_report.json and the whole log in $OUT/gpu_report.log).
#
# Needs python3 with jax (CUDA), flax, optax, orbax, torch and transformers. The small packages
# mlmjax also imports (ml_collections, grain, ...) are installed from bench/wheels when missing,
# without network, into $MLMJAX_SITE (default /tmp/mlmjax_site); `fetch-wheels` downloads them.
#
# Environment: PYTHON (python3), BUDGET_S (seconds for the whole report, default 450; a stage
# that would start with less than 20 s left is skipped and named in the report), STEPS (timed
# steps per case, default 20), FIT_REFINE (bisection steps after the doubling in `fit`,
# default 0), ATTENTION (xla or cudnn instead of the configs' "auto"),
# BENCH_ARGS (extra flags for every mlmjax run, e.g. "--preset=tiny" to try a mode on CPU),
# OUT (where the report goes; the log gpu_report.log is appended to, one header per mode),
# XLA_PYTHON_CLIENT_MEM_FRACTION
# (default 0.95 here, so the fit search may use the card's memory, not JAX's default 75%).

set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
ROOT=$PWD
MODE=${1:-report}
PY=${PYTHON:-python3}
WHEELS=${MLMJAX_WHEELS:-$ROOT/bench/wheels}
SITE=${MLMJAX_SITE:-/tmp/mlmjax_site}
STEPS=${STEPS:-20}
export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
export TOKENIZERS_PARALLELISM=false
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.95}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mlmjax_report.XXXXXX")
# One persistent compilation cache per invocation: stages that share a program (BERT-base's
# initialiser at seq 128 and 512, the fit search's tries) compile it once. Programs that differ
# (every train step timed) still compile afresh, so the compile-time column stays honest.
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$WORK/jax_cache}
RESULTS=${OUT:-$WORK}
mkdir -p "$RESULTS"
LOG=$RESULTS/gpu_report.log
NOTES=$WORK/notes.txt
: >"$NOTES"
START=$SECONDS

# Pinned as tested with mlmjax (Python 3.12, x86-64 wheels): what the GPU image may lack.
WHEEL_PINS=(ml_collections==1.1.0 grain==0.2.18 array_record==0.8.6 portpicker==1.6.0
            absl-py==2.5.1 tqdm==4.70.1 tokenizers==0.23.3 flax==0.12.8)

fetch_wheels() {
  mkdir -p "$WHEELS"
  "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$WHEELS" "${WHEEL_PINS[@]}"
}

# Prints the distributions (wheel-name prefixes) whose modules fail to import, or are too old.
missing_dists() {
  "$PY" - <<'EOF'
import importlib
missing = []
for module, dist in [("ml_collections", "ml_collections"), ("absl", "absl_py"),
                     ("tqdm", "tqdm"), ("tokenizers", "tokenizers"), ("portpicker", "portpicker"),
                     ("array_record", "array_record"), ("grain", "grain")]:
  try:
    importlib.import_module(module)
  except Exception:  # an ImportError, or a broken install: either way, use the wheel
    missing.append(dist)
try:
  import flax
  if tuple(int(x) for x in flax.__version__.split(".")[:3]) < (0, 12, 8):
    missing.append("flax")
except Exception:
  missing.append("flax")
print(" ".join(missing))
EOF
}

ensure_packages() {
  local dists files=() dist whl
  dists=$(missing_dists)
  if [[ -n "$dists" ]]; then
    echo "installing from $WHEELS into $SITE: $dists"
    for dist in $dists; do
      whl=$(ls "$WHEELS/$dist"-*.whl 2>/dev/null | head -n 1)
      if [[ -z "$whl" ]]; then
        echo "error: $dist is missing and $WHEELS has no wheel of it. On a machine with network," \
             "run 'bash bench/gpu_report.sh fetch-wheels' and bring bench/wheels along." >&2
        exit 2
      fi
      files+=("$whl")
    done
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" "${files[@]}" || exit 2
  fi
  "$PY" -c "import mlmjax.bench.train, mlmjax.bench.torch_baseline" || {
    echo "error: mlmjax's benchmarks do not import (see above)" >&2; exit 2; }
}

# stage NAME CAP_S COMMAND...: runs COMMAND under min(CAP_S, what is left of BUDGET_S).
stage() {
  local name=$1 cap=$2 left rc t
  shift 2
  left=$((BUDGET - (SECONDS - START)))
  if ((left < 20)); then
    echo "- skipped: $name (the ${BUDGET} s budget was spent)" | tee -a "$NOTES"
    return
  fi
  ((cap > left)) && cap=$left
  echo "== $name (at most ${cap} s)" | tee -a "$LOG"
  t=$SECONDS
  timeout --kill-after=10 "$cap" "$@" 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  if ((rc == 124 || rc == 137)); then
    echo "- timed out after ${cap} s: $name" | tee -a "$NOTES"
  elif ((rc != 0)); then
    echo "- failed (exit $rc, see gpu_report.log): $name" | tee -a "$NOTES"
  fi
  echo "   ($name: $((SECONDS - t)) s)" | tee -a "$LOG"
}

# report TITLE: the table of every record in $WORK/*.json, to stdout and $RESULTS.
report() {
  local title=$1 md=$RESULTS/${2:-gpu_report}.md
  "$PY" - "$title" "$WORK" "$NOTES" "$RESULTS/${2:-gpu_report}.json" >"$md" <<'EOF'
import glob, json, sys
from mlmjax import bench
title, work, notes, out = sys.argv[1:5]
records = bench.load_records(sorted(glob.glob(f"{work}/*.json")))
with open(out, "w", encoding="utf-8") as f:
  json.dump(records, f, indent=1)
print(bench.report(records, title))
problems = open(notes, encoding="utf-8").read().strip()
if problems:
  print("\nNot measured:\n" + problems)
EOF
  echo
  cat "$md"
}

# The card, the date and the commit: the first line of the log and the report's title.
headline() {
  local gpu commit
  gpu=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -n 1)
  commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "unknown")
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit, ${gpu:-no NVIDIA GPU}"
}

header() {
  echo "mlmjax $MODE: $HEADLINE"
  "$PY" -c "import sys, jax, torch, transformers; print('python', sys.version.split()[0], \
'| jax', jax.__version__, '| torch', torch.__version__, '| transformers', \
transformers.__version__)"
}

HEADLINE=$(headline)
# shellcheck disable=SC2206  # BENCH_ARGS is split into flags on purpose
TRAIN=("$PY" -m mlmjax.bench.train ${ATTENTION:+--config.model.attention=$ATTENTION}
       ${BENCH_ARGS:-})
TORCH=("$PY" -m mlmjax.bench.torch_baseline)
case "$MODE" in
  fetch-wheels)
    fetch_wheels
    exit $?
    ;;
  install)
    ensure_packages
    exit 0
    ;;
  report)
    # Caps from the H100 run of 2026-11-26 (compiles dominate): base ~100 s with 12 maskers,
    # HF 76 s, base s512 ~60 s (initialiser cached), large ~2 min.
    BUDGET=${BUDGET_S:-450}
    ensure_packages
    header | tee -a "$LOG"
    stage "mlmjax BERT-base 256x128 + masking" 150 "${TRAIN[@]}" --config=configs/bert_base.py \
      --steps="$STEPS" --masking --json_out="$WORK/1_base128.json"
    stage "HF PyTorch BERT-base" 100 "${TORCH[@]}" --steps="$STEPS" --json_out="$WORK/2_hf.json"
    stage "mlmjax BERT-base 64x512" 80 "${TRAIN[@]}" --config=configs/bert_base.py \
      --config.data.seq_len=512 --config.masking.max_predictions=80 \
      --config.train.batch_size=64 --steps="$STEPS" --json_out="$WORK/3_base512.json"
    stage "mlmjax BERT-large 32x512" 140 "${TRAIN[@]}" --config=configs/bert_large.py:512 \
      --config.model.remat=False --config.train.batch_size=32 --steps="$STEPS" \
      --json_out="$WORK/4_large512.json"
    report "mlmjax vs Hugging Face PyTorch, $HEADLINE"
    ;;
  profile)
    # Where the base step's time goes (a jax.profiler trace, summarised by mlmjax.bench.trace),
    # then the same step with one thing changed each: what each choice costs or buys.
    BUDGET=${BUDGET_S:-240}
    ensure_packages
    header | tee -a "$LOG"
    base=("${TRAIN[@]}" --config=configs/bert_base.py --steps="$STEPS")
    stage "mlmjax BERT-base 256x128, traced" 90 "${base[@]}" --profile_dir="$WORK/trace" \
      --json_out="$WORK/p0.json"
    trace=$(find "$WORK/trace" -name perfetto_trace.json.gz 2>/dev/null | head -n 1)
    if [[ -n "$trace" ]]; then
      cp "$trace" "$RESULTS/trace_base128.json.gz"
      "$PY" -m mlmjax.bench.trace "$trace" >"$WORK/trace.md" 2>&1
    fi
    stage "variant: XLA attention" 60 "${base[@]}" --config.model.attention=xla \
      --name="mlmjax, XLA attention" --json_out="$WORK/p1.json"
    stage "variant: no dropout" 60 "${base[@]}" --config.model.hidden_dropout=0.0 \
      --name="mlmjax, no dropout" --json_out="$WORK/p2.json"
    stage "variant: batch 512" 60 "${base[@]}" --config.train.batch_size=512 \
      --name="mlmjax, batch 512" --json_out="$WORK/p3.json"
    report "Profile and variants of BERT-base 256x128, $HEADLINE" profile
    if [[ -f "$WORK/trace.md" ]]; then
      { echo; echo "#### Device time of the traced base step"; echo; cat "$WORK/trace.md"; } \
        | tee -a "$RESULTS/profile.md"
    fi
    ;;
  fit)
    # Doubling from a batch that fits to the first that does not, remat off then on; every try
    # compiles BERT-large afresh. `fit remat` or `fit noremat` runs one search alone.
    BUDGET=${BUDGET_S:-500}
    WHICH=${2:-both}
    ensure_packages
    header | tee -a "$LOG"
    large=("${TRAIN[@]}" --config=configs/bert_large.py:512 --find_max_batch
           --fit_refine="${FIT_REFINE:-0}")
    if [[ $WHICH == both || $WHICH == noremat ]]; then
      stage "BERT-large s512 largest batch, no remat" 240 "${large[@]}" \
        --config.model.remat=False --fit_start="${FIT_START:-32}" --fit_limit=1024 \
        --json_out="$WORK/fit_noremat.json"
    fi
    if [[ $WHICH == both || $WHICH == remat ]]; then
      stage "BERT-large s512 largest batch, remat" 480 "${large[@]}" \
        --config.model.remat=True --fit_start=256 --fit_limit=4096 \
        --json_out="$WORK/fit_remat.json"
    fi
    report "Largest batch, $HEADLINE" fit
    ;;
  smoke)
    # The report's pipeline at tiny shapes on CPU: checks the script, not the speed.
    BUDGET=${BUDGET_S:-400}
    export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
    ensure_packages
    header | tee -a "$LOG"
    tiny=(--preset=tiny --config.train.batch_size=4 --steps=3 --warmup=1)
    stage "mlmjax tiny 4x32 + masking" 200 "${TRAIN[@]}" "${tiny[@]}" \
      --config.data.seq_len=32 --masking --masking_iters=2 --masking_unroll=1 \
      --json_out="$WORK/1_tiny32.json"
    stage "HF PyTorch tiny, eager" 100 "${TORCH[@]}" --device=cpu --tiny \
      --cases=eager-s128,eager-s512 --dtype=fp32 --steps=3 --warmup=1 --json_out="$WORK/2_hf.json"
    stage "mlmjax tiny 4x128, remat" 100 "${TRAIN[@]}" "${tiny[@]}" \
      --config.data.seq_len=128 --config.model.remat=True --json_out="$WORK/3_tiny128.json"
    report "CPU smoke run (tiny shapes; not a performance figure), $HEADLINE"
    ;;
  *)
    echo "usage: bash bench/gpu_report.sh [report|fit|profile|smoke|fetch-wheels|install]" >&2
    exit 2
    ;;
esac
echo "($MODE took $((SECONDS - START)) s; files in $RESULTS)"
