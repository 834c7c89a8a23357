#!/usr/bin/env bash
# Quickstart recipes: each candidate runs the whole quickstart (prepare, train, evaluate, export,
# demo) from an empty workdir, one after another, and the table gives its wall time and held-out
# accuracy. How the quickstart's defaults were chosen: docs/BENCHMARKS.md.
#
#   bash bench/quickstart_recipes.sh [NAME ...]     # all candidates, or the named ones
#
# ROOT (default /tmp/mlmjax_recipes) holds one workdir and one log per candidate.
set -euo pipefail
ROOT=${ROOT:-/tmp/mlmjax_recipes}
mkdir -p "$ROOT"

# Each candidate sets every key the search varied (so the table holds whatever configs/quickstart.py
# says): hidden dropout, batch rows, steps, warmup steps, learning rate, layers, heads, and the
# steps between evaluations (and checkpoints), the seed. BERT-Tiny's shape otherwise: hidden 128,
# 128 tokens.
#  name       dropout batch steps warmup lr    layers heads eval_every seed
CANDIDATES='
base         0.1     32    1200  100    2e-3  2      2     400        0
drop0        0.0     32    1200  100    2e-3  2      2     400        0
drop0_lr5    0.0     32    1200  100    5e-3  2      2     400        0
drop0_b16    0.0     16    2400  200    2e-3  2      2     800        0
b16_seed1    0.0     16    2400  200    2e-3  2      2     800        1
b16_lr1      0.0     16    2400  200    1e-3  2      2     800        0
b16_lr3      0.0     16    2400  200    3e-3  2      2     800        0
b16_heads4   0.0     16    2400  200    2e-3  2      4     800        0
b16_l4       0.0     16    1600  130    2e-3  4      2     800        0
b8_4000      0.0     8     4000  330    2e-3  2      2     1000       0
b8           0.0     8     4800  400    2e-3  2      2     1600       0
'

row() {  # name wall_s workdir log -> one Markdown row
  python - "$@" <<'PY'
import json, re, sys
name, wall, workdir, log = sys.argv[1:]
r = json.load(open(f"{workdir}/eval_results.json"))
demo = re.search(r"([\d.]+)% are the model's first guess and ([\d.]+)% are in its top", open(log).read())
first, top = demo.groups() if demo else ("?", "?")
print(f"| {name} | {int(float(wall)) // 60} min {int(float(wall)) % 60:02d} s | {r['step']} "
      f"| {r['eval_accuracy']:.1%} | {r['eval_loss']:.3f} | {first}% | {top}% |")
PY
}

echo "| candidate | wall time | steps | held-out MLM accuracy | loss | cloze first | cloze top 5 |"
echo "|---|---|---|---|---|---|---|"
echo "$CANDIDATES" | while read -r name dropout batch steps warmup lr layers heads every seed; do
  [ -z "$name" ] && continue
  if [ $# -gt 0 ] && [[ ! " $* " == *" $name "* ]]; then continue; fi
  workdir="$ROOT/$name"; log="$ROOT/$name.log"
  rm -rf "$workdir"
  start=$SECONDS
  mlmjax-quickstart --workdir="$workdir" --config.model.hidden_dropout="$dropout" \
    --config.train.batch_size="$batch" --config.train.steps="$steps" \
    --config.train.warmup_steps="$warmup" --config.train.learning_rate="$lr" \
    --config.model.num_layers="$layers" --config.model.num_heads="$heads" \
    --config.train.eval_every="$every" --config.train.checkpoint_every="$every" \
    --config.seed="$seed" \
    > "$log" 2>&1 || { echo "| $name | failed: $log |"; continue; }
  row "$name" "$((SECONDS - start))" "$workdir" "$log"
done
