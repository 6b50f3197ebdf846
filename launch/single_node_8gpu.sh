#!/usr/bin/env bash
# One node, 8 GPUs, one process: JAX drives all local GPUs from a single process.
#   bash launch/single_node_8gpu.sh configs/record.py [--config.key=value ...]
set -euo pipefail
config=${1:?usage: $0 CONFIG [--config.key=value ...]}; shift
# The whole GPU for XLA; no per-step autotuning surprises after the clock starts.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
# The other XLA GPU flags, each on and off against this: python bench/xla_flags_ab.py (docs/perf.md).
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true"
# Persistent compilation cache: a second run skips compilation entirely.
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$HOME/.cache/golf_jax/xla}
exec python -m golf_jax.train --config="$config" "$@"
