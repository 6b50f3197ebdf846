#!/usr/bin/env bash
# The standing GPU benchmarks (docs/perf.md), on one GPU (an H200 or H100), meant to fit in 8 minutes:
#   * the train step of configs/baseline.py and configs/record.py at 48 x 2048 tokens per device
#     (the record's per-GPU batch, 786,432 tokens over 8 GPUs);
#   * the same record step compiled ahead of time for an H100 (bench --target), to set the prediction
#     (peak memory, roofline bound) beside the measurement, and bench/gpu_description.py;
#   * the record's plain eval, sliding-window and SLOT batches over a 4 M-target slice;
#   * if the reference's train_gpt.py is there (REF_TRAIN_GPT, default build/ref/train_gpt.py, where
#     tools/torch_side_by_side.py says to put it; build/ is ignored, so carry it to a device machine),
#     its train step at the same per-GPU batch: TRAIN_BATCH_TOKENS=786432 on one GPU is
#     8 accumulated micro-batches of 48 x 2048, so ms per 48 x 2048 = step_avg / 8.
# Each bench writes OUT_DIR/<name>.json and .txt (python -m golf_jax.bench; fields in README.md).
#
#   bash bench/gpu_standing.sh [OUT_DIR]          # default build/bench_gpu
#
# GOLF_BENCH_EXTRA is appended to every bench command (later flags win), e.g. to check the
# script on a CPU at a tiny width:
#   GOLF_BENCH_EXTRA="--per_device_seqs=1 --tokens=4096 --config.train.seq_len=128 \
#     --config.model.model_dim=64 --config.model.num_layers=2 ..." bash bench/gpu_standing.sh /tmp/b
# The reference needs torch, FlashAttention 3 (or FORCE_FA2=1 and FlashAttention 2) and its data:
# REF_DATA_PATH (default build/shards/sp1024), REF_TOKENIZER_PATH (default
# ../shared/data/tokenizers/fineweb_1024_bpe.model).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-build/bench_gpu}
mkdir -p "$OUT"
read -r -a EXTRA <<< "${GOLF_BENCH_EXTRA:-}"
# Seconds per bench, compile included: a guard (the set is estimated at ~7 min on an H200; not yet measured).
LIMIT=${BENCH_TIMEOUT:-240}

bench() {
  local name=$1
  shift
  echo "== $name: python -m golf_jax.bench $* ${EXTRA[*]}"
  timeout "$LIMIT" python -m golf_jax.bench "$@" ${EXTRA[@]+"${EXTRA[@]}"} --json="$OUT/$name.json" 2>&1 |
    tee "$OUT/$name.txt" || echo "== $name FAILED (see $OUT/$name.txt)"
}

BATCH=(--per_device_seqs=48 --config.train.seq_len=2048)
bench train_baseline --config=configs/baseline.py --stage=train "${BATCH[@]}" --calls=20
bench train_record --config=configs/record.py --stage=train "${BATCH[@]}" --calls=20
# The ahead-of-time prediction of the same step (peak memory, roofline bound) beside its measurement,
# and the card's own description against ours (golf_jax/bench/gpu_targets.py).
bench train_record_aot --config=configs/record.py --stage=train "${BATCH[@]}" --target=h100 --devices=1
python bench/gpu_description.py --target=h100 2>&1 | tee "$OUT/gpu_description.txt" || true
for stage in eval sliding slot; do
  bench "${stage}_record" --config=configs/record.py --stage=$stage --tokens=4000000
done

REF=${REF_TRAIN_GPT:-build/ref/train_gpt.py}
if [ -f "$REF" ]; then
  STEPS=${REF_STEPS:-30}
  LOG="$OUT/reference_train.txt"
  echo "== reference: $REF, $STEPS steps of 786,432 tokens on one GPU (8 micro-batches of 48 x 2048)"
  # The reference evaluates after training (minutes): stop it once the last step is logged.
  setsid env DATA_PATH="${REF_DATA_PATH:-build/shards/sp1024}" \
    TOKENIZER_PATH="${REF_TOKENIZER_PATH:-../shared/data/tokenizers/fineweb_1024_bpe.model}" \
    ITERATIONS="$STEPS" WARMUP_STEPS=5 TRAIN_BATCH_TOKENS=786432 TRAIN_SEQ_LEN=2048 \
    MAX_WALLCLOCK_SECONDS=0 VAL_LOSS_EVERY=0 TRAIN_LOG_EVERY=10 RUN_ID=bench_standing \
    torchrun --standalone --nproc_per_node=1 "$REF" > "$LOG" 2>&1 &
  pid=$!
  for _ in $(seq "$LIMIT"); do
    if grep -q "step:$STEPS/$STEPS" "$LOG" || ! kill -0 "$pid" 2>/dev/null; then break; fi
    sleep 1
  done
  kill -- "-$pid" 2>/dev/null || true
  last=$(grep -o "step_avg:[0-9.]*ms" "$LOG" | tail -1 | tr -dc '0-9.')
  if [ -n "$last" ]; then
    echo "reference: step_avg ${last} ms per 786,432 tokens = $(python -c "print(f'{$last / 8:.1f}')") ms per 48 x 2048"
  else
    echo "reference: no step_avg line in $LOG (see it for the error)"
  fi
else
  echo "== reference: $REF not found (set REF_TRAIN_GPT), skipped"
fi
