#!/usr/bin/env bash
# Installs what is missing (Debian 12), builds in Release, and runs every check:
# the header self-compile target, the clang-format check and the whole CTest suite.
# Exits non-zero if any of them fails. CI runs exactly this (.ci/run).
#
# Usage: scripts/test.sh [extra CMake arguments...]
# Environment:
#   BUILD_DIR=DIR          build directory (default: build/ in the repository root)
#   JOBS=N                 parallel build jobs (default: nproc)
#   CTEST_JOBS=N           tests run in parallel (default: 2)
#   CTEST_TIMEOUT=S        limit of each test that sets none itself, in seconds (default: 300)
#   SUITE_TIMEOUT=S        limit of the whole ctest run, in seconds (default: 1500)
#   CHECK_FORMAT=0         skip the clang-format check
#   DRY_RUN=1              print the apt-get commands instead of running them
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_packages "${RX_BUILD_PACKAGES[@]}" clang-format

dir="$(build_dir)"
configure_and_build "$dir" "$@"

# Part of the default build already; named here so that losing it is an error, not a silent skip.
log "header self-compile check"
cmake --build "$dir" --target remote_xcomm_header_checks </dev/null

failed=()

if [[ "${CHECK_FORMAT:-1}" != 0 ]]; then
  log "checking formatting"
  if ! "$RX_ROOT/scripts/check-format.sh"; then
    failed+=("clang-format (fix with scripts/check-format.sh --fix)")
  fi
fi

# Last, so that CTest's summary closes the output.
log "running the test suite"
if ! timeout --kill-after=30 "${SUITE_TIMEOUT:-1500}" \
  ctest --test-dir "$dir" --output-on-failure --no-tests=error --no-label-summary \
  -j "${CTEST_JOBS:-2}" --timeout "${CTEST_TIMEOUT:-300}" </dev/null; then
  failed+=("ctest")
fi

if ((${#failed[@]} > 0)); then
  printf 'FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
# On success CTest's own summary ("100% tests passed, …") is the last thing printed.
