#!/bin/bash
# Runs the kernels-opencl unit tests (small problems: every op in the GPU
# and CPU variants, the limits and kernel-table tests; about 75 s) under
# Oclgrind, the OpenCL simulator, with its API and data-race checks on
# (out-of-bounds memory checks are always on); OCLGRIND_FULL=1 adds the ops
# suite (5-10 min on 2 cores). Fails when a test fails or Oclgrind reports
# anything. `make test-oclgrind` calls it.
#
# Debian installs Oclgrind without an .icd file, so a temporary vendor
# directory registers it for this run only (OCL_ICD_VENDORS). Tests run one
# at a time: Oclgrind gives wrong results when two contexts run kernels at
# once (measured: 3 of 16 unit tests fail with --test-threads=2, none with
# 1). Skipped: the build-warning test (it drives PoCL; Oclgrind ignores -w),
# the build-failure test (a deliberate clBuildProgram error, which the API
# checker reports), the thread and program-cache suites (threads, child
# processes).
# OCLGRIND_UNINITIALIZED=1 with KERNELS_OPENCL_BUILD_OPTIONS=-cl-opt-disable
# adds the uninitialised-value checks; see OPTIMISATION.md step 21 for what
# they report.
set -euo pipefail
lib=$(dpkg -L oclgrind 2>/dev/null | grep 'liboclgrind-rt-icd.so$' || true)
if [ -z "$lib" ]; then
  echo "oclgrind.sh: Oclgrind is not installed (Debian: apt-get install oclgrind)" >&2
  exit 1
fi
vendors=$(mktemp -d)
log=$(mktemp)
trap 'rm -rf "$vendors" "$log"' EXIT
echo "$lib" > "$vendors/oclgrind.icd"
export OCL_ICD_VENDORS=$vendors KERNELS_OPENCL_CACHE=off KERNELS_OPENCL_DEVICE=oclgrind
export OCLGRIND_CHECK_API=1 OCLGRIND_DATA_RACES=1
status=0
suites=(--lib)
if [ "${OCLGRIND_FULL:-0}" = 1 ]; then suites+=(--test ops); fi
${CARGO:-cargo} test -p kernels-opencl "${suites[@]}" -- --test-threads=1 \
  --skip build_warnings_stay_off_stderr --skip a_build_failure_carries_the_build_log 2>&1 | tee "$log" || status=$?
# Oclgrind prints its findings to stderr and lets the kernel finish.
if grep -E -q 'Invalid (read|write)|data race|Uninitiali[sz]ed|runtime error detected|Oclgrind: [0-9]+ errors|Work-group divergence' "$log"; then
  echo "oclgrind.sh: Oclgrind reported errors (above)" >&2
  exit 1
fi
exit "$status"
