#!/usr/bin/env bash
# Several hosts without SLURM: run this once on every host, each process driving all
# of its host's GPUs (as launch/single_node_8gpu.sh does on one host).
#   GOLF_JAX_COORDINATOR=host0:12355 GOLF_JAX_NUM_PROCESSES=2 GOLF_JAX_PROCESS_ID=0 \
#       bash launch/multihost.sh configs/record.py [--config.key=value ...]    # on host0
#   ... GOLF_JAX_PROCESS_ID=1 ... on host1 (the same coordinator: process 0's host and a free port)
# train.run_dir and the data must be on a filesystem every host sees: process 0 writes
# the run dir, every process reads the data and the artifact.
set -euo pipefail
config=${1:?usage: GOLF_JAX_COORDINATOR=HOST:PORT GOLF_JAX_NUM_PROCESSES=N GOLF_JAX_PROCESS_ID=I $0 CONFIG [--config.key=value ...]}; shift
: "${GOLF_JAX_COORDINATOR:?set GOLF_JAX_COORDINATOR=HOST:PORT (process 0's host and a free port)}"
: "${GOLF_JAX_NUM_PROCESSES:?set GOLF_JAX_NUM_PROCESSES (the number of hosts)}"
: "${GOLF_JAX_PROCESS_ID:?set GOLF_JAX_PROCESS_ID (0 on the coordinator's host, then 1, 2, ...)}"
export GOLF_JAX_COORDINATOR GOLF_JAX_NUM_PROCESSES GOLF_JAX_PROCESS_ID
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
# The other XLA GPU flags, each on and off against this: python bench/xla_flags_ab.py (docs/perf.md).
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true"
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$HOME/.cache/golf_jax/xla}
exec python -m golf_jax.train --config="$config" "$@"
