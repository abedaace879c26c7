#!/bin/bash
# A/B timing of two builds of the opencl_bench example under the same load.
#
# Build the "old" variant, copy target/release/examples/opencl_bench to
# /tmp/ab_old, build the "new" one, copy it to /tmp/ab_new, then
#   kernels-opencl/scripts/ab.sh ROUNDS BENCH-ARGS...
# e.g. `ab.sh 3 gemm --reps 5 --only n=1024`. The two binaries run one after
# the other, ROUNDS times, with the per-kernel breakdown, so background load
# hits both alike; compare within a round. (`opencl_bench --compare` does
# the same for GEMM tiles inside one process.)
set -euo pipefail
rounds=$1
shift
for _ in $(seq "$rounds"); do
  for v in old new; do
    BENCH_BREAKDOWN=1 "/tmp/ab_$v" "$@" 2>&1 | grep -v '^device\|^build\|^reps' | sed "s/^/$v: /"
  done
done
