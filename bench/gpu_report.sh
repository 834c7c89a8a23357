#!/usr/bin/env bash
# One-command performance report of mlmjax on one GPU, every ratio measured on the same card.
#
#   bash bench/gpu_report.sh               # the report (budget 530 s): tables under $OUT
#   bash bench/gpu_report.sh smoke         # every stage at its least, tiny shapes, CPU (CI runs it)
#   bash bench/gpu_report.sh fit [remat|noremat]  # a longer largest-batch search for BERT-large
#   bash bench/gpu_report.sh fetch-wheels  # on a machine with network: fill bench/wheels
#   bash bench/gpu_report.sh install       # only install what is missing from bench/wheels
#
# The report's stages, most important first; each runs in its own process (so each peak-memory
# figure is its own) under a time cap, and a stage that would start with under 20 s of the
# budget left is skipped and named. After every stage the table is rewritten, so a run cut
# short still reports what it measured:
#   1. mlmjax BERT-base 256x128 (bf16, dropout 0.1), every masking strategy's share of its step,
#      and a jax.profiler trace of 3 steps, summarised (device busy vs wall time, top kernels)
#   2. Hugging Face BertForMaskedLM in PyTorch: eager and torch.compile at 256x128, eager 32x512
#   3. mlmjax BERT-base 64x512
#   4. one-change variants of 1: no dropout, batch 512, XLA attention; the other families at
#      BERT-base's size: RoBERTa, ModernBERT (global + 128-token windowed layers, GeGLU)
#   5. the largest BERT-large s512 batch that trains (doubling from 64, XLA's memory plan
#      extrapolated when the search is cut)
#   6. more variants: dropout from XLA's RngBitGenerator, tanh GELU, threefry dropout (the old way)
# Files under $OUT: gpu_report.md (the table), gpu_report.json (the records),
# trace.md (the trace summary), trace_base128.json.gz, gpu_report.log (everything printed).
#
# Needs python3 with jax (CUDA), flax, optax, orbax, torch and transformers; the report stops at
# once if JAX sees no GPU. The small packages mlmjax also imports (ml_collections, grain, ...)
# are installed from bench/wheels when missing, without network, into $MLMJAX_SITE (default
# /tmp/mlmjax_site); `fetch-wheels` downloads them. mlmjax itself is not installed: the
# repository root goes first on PYTHONPATH, so `python -m bench.train` runs this checkout's
# benchmarks (bench/) on this checkout's mlmjax.
#
# Environment: PYTHON (python3), BUDGET_S (seconds for the whole report, default 530), STEPS
# (timed steps per case, default 20; variants use half), FIT_REFINE (bisection steps after the
# doubling in `fit`, default 0), BENCH_ARGS (extra flags for every bench.train and bench.fit
# run: --config.* overrides), OUT (where the files go), XLA_PYTHON_CLIENT_MEM_FRACTION (default
# 0.95 here, so the fit search may use the card's memory, not JAX's default 75%).

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
  "$PY" -c "import bench.fit, bench.report, bench.trace" || {
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

# report TITLE [NAME]: the table of every record in $WORK/*.json, into $RESULTS/NAME.md and .json,
# then what was not measured.
report() {
  local name=${2:-gpu_report}
  "$PY" -m bench.report --title="$1" --json_out="$RESULTS/$name.json" "$WORK"/*.json \
    >"$RESULTS/$name.md"
  if [[ -s $NOTES ]]; then
    printf '\nNot measured:\n' >>"$RESULTS/$name.md"
    cat "$NOTES" >>"$RESULTS/$name.md"
  fi
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

# variant ID TEXT FLAG...: the base stage with one change, named "mlmjax, TEXT" in the table.
variant() {
  local id=$1 text=$2
  shift 2
  stage "variant: $text" 55 "${TRAIN[@]}" "${BASE[@]}" --steps="$half" "$@" \
    --name="mlmjax, $text" --json_out="$WORK/${id}.json"
  report "$title"
}

# The trace of stage 1, summarised into $RESULTS/trace.md and kept beside it.
summarize_trace() {
  local trace
  trace=$(find "$WORK/trace" -name perfetto_trace.json.gz 2>/dev/null | head -n 1)
  [[ -z "$trace" ]] && return
  cp "$trace" "$RESULTS/trace_base128.json.gz"
  "$PY" -m bench.trace "$trace" >"$RESULTS/trace.md" 2>&1
  { echo "#### Device time of the traced base step"; echo; cat "$RESULTS/trace.md"; } | tee -a "$LOG"
}

HEADLINE=$(headline)
# shellcheck disable=SC2206  # BENCH_ARGS is split into flags on purpose
TRAIN=("$PY" -m bench.train ${BENCH_ARGS:-})
FIT=("$PY" -m bench.fit ${BENCH_ARGS:-})
TORCH=("$PY" -m bench.torch_baseline)
case "$MODE" in
  fetch-wheels)
    fetch_wheels
    exit $?
    ;;
  install)
    ensure_packages
    exit 0
    ;;
  report | smoke)
    if [[ $MODE == smoke ]]; then
      # The report's pipeline at tiny shapes on CPU: checks the script, not the speed. Every
      # stage runs, at its least: one strategy, one HF case, one try of the batch search; of
      # the one-flag variants, 4a-4c (the families' and 6a-6c's settings are tested elsewhere).
      BUDGET=${BUDGET_S:-400}
      export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
      tiny=(--config=configs/bench.py:tiny --config.train.batch_size=4)
      # tests/bench/test_train.py times every strategy.
      BASE=("${tiny[@]}" --warmup=1 --config.data.seq_len=32 --masking_iters=2
            --masking_unroll=1 --strategies=dynamic)
      BASE512=("${tiny[@]}" --warmup=1 --config.data.seq_len=128)
      LARGE=("${tiny[@]}" --config.data.seq_len=128 --fit_start=4 --fit_limit=4)
      HF=(--device=cpu --tiny --dtype=fp32 --warmup=1 --cases=eager-s128)
      STEPS=2 BIG_BATCH=8
    else
      BUDGET=${BUDGET_S:-530}
      BASE=(--config=configs/bert_base.py)
      BASE512=(--config=configs/bert_base.py --config.data.seq_len=512
               --config.masking.max_predictions=80 --config.train.batch_size=64)
      LARGE=(--config=configs/bert_large.py:512 --config.model.remat_policy=none --fit_start=64
             --fit_limit=2048)
      HF=()
      BIG_BATCH=512
    fi
    ensure_packages
    header | tee -a "$LOG"
    if [[ $MODE == report ]] && ! "$PY" -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')"; then
      echo "error: JAX sees no GPU ($("$PY" -c 'import jax; print(jax.devices())' 2>&1 | tail -n 1));" \
           "install jax[cuda] or run 'bash bench/gpu_report.sh smoke' on a CPU" | tee -a "$LOG" >&2
      exit 3
    fi
    title="mlmjax vs Hugging Face PyTorch, $HEADLINE"
    [[ $MODE == smoke ]] && title="CPU smoke run (tiny shapes; not a performance figure), $HEADLINE"
    half=$(( (STEPS + 1) / 2 ))
    stage "mlmjax BERT-base 256x128 + masking, traced" 150 "${TRAIN[@]}" "${BASE[@]}" \
      --steps="$STEPS" --masking --profile_dir="$WORK/trace" --json_out="$WORK/1_base128.json"
    summarize_trace
    report "$title"
    stage "HF PyTorch BERT-base" 110 "${TORCH[@]}" "${HF[@]}" --steps="$STEPS" \
      --json_out="$WORK/2_hf.json"
    report "$title"
    stage "mlmjax BERT-base 64x512" 70 "${TRAIN[@]}" "${BASE512[@]}" --steps="$STEPS" \
      --json_out="$WORK/3_base512.json"
    report "$title"
    variant 4a "no dropout" --config.model.hidden_dropout=0.0
    variant 4b "batch $BIG_BATCH" --config.train.batch_size="$BIG_BATCH"
    variant 4c "XLA attention" --config.model.attention=xla
    if [[ $MODE == report ]]; then  # the families' training runs in CI: tests/convert/test_families.py
      variant 4d "RoBERTa, BERT-base's shape" --config.model.family=roberta \
        --config.model.type_vocab_size=1 --config.model.max_position_embeddings=514
      variant 4e "ModernBERT, 12 layers x 768, GeGLU 1152" --config.model.family=modernbert \
        --config.model.intermediate_size=1152 --config.model.hidden_dropout=0.0 \
        --config.model.layer_norm_eps=1e-5 --config.model.type_vocab_size=1
    fi
    stage "BERT-large s512 largest batch" 110 "${FIT[@]}" "${LARGE[@]}" --fit_refine=0 \
      --json_out="$WORK/5_fit.json"
    report "$title"
    if [[ $MODE == report ]]; then  # the smoke run's variants 4a-4c already check the path;
      # these settings are tested on their own (tests/model/test_dropout.py, test_hf.py)
      variant 6a "rbg dropout" --config.model.dropout_impl=rbg
      variant 6b "tanh GELU" --config.model.hidden_act=gelu_pytorch_tanh
      variant 6c "threefry dropout" --config.model.dropout_impl=threefry
    fi
    echo; cat "$RESULTS/gpu_report.md"
    ;;
  fit)
    # Doubling from a batch that fits to the first that does not, remat off then on; every try
    # compiles BERT-large afresh. `fit remat` or `fit noremat` runs one search alone.
    BUDGET=${BUDGET_S:-500}
    WHICH=${2:-both}
    ensure_packages
    header | tee -a "$LOG"
    large=("${FIT[@]}" --config=configs/bert_large.py:512 --fit_refine="${FIT_REFINE:-0}")
    if [[ $WHICH == both || $WHICH == noremat ]]; then
      stage "BERT-large s512 largest batch, no remat" 240 "${large[@]}" \
        --config.model.remat_policy=none --fit_start="${FIT_START:-32}" --fit_limit=1024 \
        --json_out="$WORK/fit_noremat.json"
    fi
    if [[ $WHICH == both || $WHICH == remat ]]; then
      stage "BERT-large s512 largest batch, remat" 480 "${large[@]}" \
        --config.model.remat_policy=full --fit_start=256 --fit_limit=4096 \
        --json_out="$WORK/fit_remat.json"
    fi
    report "Largest batch, $HEADLINE" fit
    echo; cat "$RESULTS/fit.md"
    ;;
  *)
    echo "usage: bash bench/gpu_report.sh [report|smoke|fit|fetch-wheels|install]" >&2
    exit 2
    ;;
esac
echo "($MODE took $((SECONDS - START)) s; files in $RESULTS)"
