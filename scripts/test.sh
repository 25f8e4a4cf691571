#!/usr/bin/env bash
# Installs what is missing (Debian 12), builds, and runs every check. Exits non-zero if any fails.
# CI runs exactly this (.ci/run), with no environment set, so it runs every stage:
#
#   1. Release build in build/ (default targets, which include the header self-compile check);
#   2. the clang-format check;
#   3. AddressSanitizer + UndefinedBehaviorSanitizer: the whole CTest suite, built in build-asan/;
#   4. ThreadSanitizer: the tests labelled "concurrent" (tests/CMakeLists.txt), built in build-tsan/;
#   5. fuzzing (tests/fuzz/): the libFuzzer targets, built with clang and ASan+UBSan in build-fuzz/,
#      replay their seed corpus (CTest), then each fuzzes for FUZZ_SECONDS from it;
#   6. the whole CTest suite on the Release build, last, so that CTest's summary closes the output.
#
# A sanitizer build is RelWithDebInfo at -O1 -g1 (assertions on, line tables for the stacks) with
# REMOTE_XCOMM_SANITIZE, which instruments our library, the generated protobuf code, the test
# utils, the tests and the examples; benchmarks are off there. gRPC, absl and protobuf are Debian's
# uninstrumented libraries: tests/sanitizers/*.supp hold the suppressions for them, each line with
# its reason, and none for our own code. Every report fails the run (halt_on_error,
# -fno-sanitize-recover=all). Each stage prints its wall time.
#
# Usage: scripts/test.sh [extra CMake arguments for every build...]
# Environment:
#   SANITIZERS=LIST        sanitizer stages to run: all (default), none, asan, tsan or asan,tsan
#   BUILD_DIR=DIR          Release build directory (default: build/ in the repository root)
#   ASAN_BUILD_DIR=DIR     ASan+UBSan build directory (default: build-asan/ in the repository root)
#   TSAN_BUILD_DIR=DIR     TSan build directory (default: build-tsan/ in the repository root)
#   FUZZ=0                 skip the fuzz stage
#   FUZZ_SECONDS=S         how long each fuzz target runs after replaying its corpus (default: 10)
#   FUZZ_BUILD_DIR=DIR     fuzz build directory (default: build-fuzz/ in the repository root); each
#                          target's new inputs and any crashing input go to DIR/fuzz-runs/TARGET/
#   JOBS=N                 parallel build jobs (default: nproc)
#   CTEST_JOBS=N           tests run in parallel (default: 2)
#   CTEST_TIMEOUT=S        limit of each test that sets none itself, in seconds (default: 300)
#   SUITE_TIMEOUT=S        limit of each ctest run, in seconds (default: 1500)
#   CTEST_ARGS="..."       extra ctest arguments for the sanitizer runs, e.g. "-R Client"
#   RELEASE=0              skip the Release build, header check and Release suite (to iterate on
#                          a sanitizer: SANITIZERS=tsan RELEASE=0 CHECK_FORMAT=0 scripts/test.sh)
#   CHECK_FORMAT=0         skip the clang-format check
#   DRY_RUN=1              print the apt-get commands instead of running them
#   ASAN_OPTIONS, UBSAN_OPTIONS, LSAN_OPTIONS, TSAN_OPTIONS are appended to this script's own
#   (a later option wins), e.g. TSAN_OPTIONS=halt_on_error=0 to see every report of a run.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

sanitizers="${SANITIZERS:-all}"
run_asan=0
run_tsan=0
case "$sanitizers" in
  all) run_asan=1 run_tsan=1 ;;
  none) ;;
  asan) run_asan=1 ;;
  tsan) run_tsan=1 ;;
  asan,tsan | tsan,asan) run_asan=1 run_tsan=1 ;;
  *) die "SANITIZERS=$sanitizers: expected all, none, asan, tsan or asan,tsan" ;;
esac

# libasan8, libubsan1 and libtsan2 come with build-essential's GCC 12; named so that a missing
# runtime is installed rather than found at link time.
sanitizer_packages=()
((run_asan)) && sanitizer_packages+=(libasan8 libubsan1)
((run_tsan)) && sanitizer_packages+=(libtsan2)
run_fuzz="${FUZZ:-1}"
fuzz_packages=()
[[ "$run_fuzz" == 0 ]] || fuzz_packages=("${RX_FUZZ_PACKAGES[@]}")
ensure_packages "${RX_BUILD_PACKAGES[@]}" lld clang-format "${sanitizer_packages[@]}" "${fuzz_packages[@]}"

# Every build links with lld (Debian: lld), which links in about half of GNU ld's CPU time: relinking
# (and listing the tests of) the ASan build's 37 executables took 36 s of CPU time with lld against
# 63 s with GNU ld, and a CI run links about 130. Extra arguments come later, so a caller's own
# linker flags still win.
set -- -DCMAKE_EXE_LINKER_FLAGS=-fuse-ld=lld -DCMAKE_SHARED_LINKER_FLAGS=-fuse-ld=lld \
  -DCMAKE_MODULE_LINKER_FLAGS=-fuse-ld=lld "$@"

failed=()
suppressions="$RX_ROOT/tests/sanitizers"

# time_stage NAME COMMAND... : runs COMMAND, prints its wall time, and records NAME as failed if
# COMMAND fails (the remaining stages still run).
time_stage() {
  local name="$1" start=$SECONDS status=0
  shift
  "$@" || status=$?
  log "$name: $((SECONDS - start)) s$( ((status == 0)) || printf ', FAILED (exit %d)' "$status")"
  ((status == 0)) || failed+=("$name")
}

# run_ctest DIR [CTEST_ARGS...] : the suite in DIR, bounded as a whole.
run_ctest() {
  local dir="$1"
  shift
  timeout --kill-after=30 "${SUITE_TIMEOUT:-1500}" \
    ctest --test-dir "$dir" --output-on-failure --no-tests=error --no-label-summary \
    -j "${CTEST_JOBS:-2}" --timeout "${CTEST_TIMEOUT:-300}" "$@" </dev/null
}

# sanitizer_build DIR SANITIZE TARGET [CMAKE_ARGS...] : configures DIR for REMOTE_XCOMM_SANITIZE
# and builds TARGET only (what the tests run), not the header checks or the benchmarks.
sanitizer_build() {
  local dir="$1" sanitize="$2" target="$3"
  shift 3
  local -a generator=()
  [[ -f "$dir/CMakeCache.txt" ]] || generator=(-G Ninja)
  log "configuring $RX_ROOT in $dir with -fsanitize=$sanitize"
  cmake -S "$RX_ROOT" -B "$dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1" -DREMOTE_XCOMM_SANITIZE="$sanitize" \
    -DREMOTE_XCOMM_BUILD_BENCHMARKS=OFF "$@" </dev/null
  log "building $target in $dir with ${JOBS:-$(nproc)} jobs"
  cmake --build "$dir" --parallel "${JOBS:-$(nproc)}" --target "$target" </dev/null
}

# absolute_dir DIR : creates DIR and prints its absolute path.
absolute_dir() {
  mkdir -p "$1"
  (cd "$1" && pwd)
}

# The sanitizer stages run in subshells that export the runtime options: the build needs them too,
# since gtest_discover_tests runs each test executable when it is built. Each subshell keeps its
# own list of failed stages; the caller records the stage as a whole.
asan_stage() {
  (
    failed=()
    export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:strict_init_order=1:check_initialization_order=1:detect_stack_use_after_return=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
    export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:suppressions=$suppressions/ubsan.supp${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
    export LSAN_OPTIONS="suppressions=$suppressions/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
    local dir
    dir="$(absolute_dir "${ASAN_BUILD_DIR:-$RX_ROOT/build-asan}")"
    time_stage "ASan+UBSan build" sanitizer_build "$dir" address,undefined remote_xcomm_tests "$@"
    ((${#failed[@]} == 0)) || exit 1
    # shellcheck disable=SC2086  # CTEST_ARGS is a list of words
    time_stage "ASan+UBSan suite" run_ctest "$dir" ${CTEST_ARGS:-}
    ((${#failed[@]} == 0))
  )
}

tsan_stage() {
  (
    failed=()
    # ignore_noninstrumented_modules: see tests/sanitizers/tsan.supp (gRPC's own libc calls).
    export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:ignore_noninstrumented_modules=1:suppressions=$suppressions/tsan.supp:print_suppressions=0${TSAN_OPTIONS:+:$TSAN_OPTIONS}"
    local dir
    dir="$(absolute_dir "${TSAN_BUILD_DIR:-$RX_ROOT/build-tsan}")"
    time_stage "TSan build" sanitizer_build "$dir" thread remote_xcomm_concurrent_tests "$@"
    ((${#failed[@]} == 0)) || exit 1
    # shellcheck disable=SC2086  # CTEST_ARGS is a list of words
    time_stage "TSan suite (concurrent tests)" run_ctest "$dir" -L concurrent ${CTEST_ARGS:-}
    ((${#failed[@]} == 0))
  )
}

# fuzz_build DIR [CMAKE_ARGS...] : configures DIR with clang for REMOTE_XCOMM_BUILD_FUZZERS (the
# library, the generated code and the targets with ASan+UBSan and libFuzzer's coverage; nothing
# else of the project) and builds the fuzz targets. -O0 -g1, assertions on: the stage's cost is
# compiling the library once more, and most of a fuzzed call's time is in gRPC, which is Debian's
# optimised build either way.
fuzz_build() {
  local dir="$1"
  shift
  local -a generator=()
  [[ -f "$dir/CMakeCache.txt" ]] || generator=(-G Ninja)
  log "configuring $RX_ROOT in $dir with clang for libFuzzer"
  cmake -S "$RX_ROOT" -B "$dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O0 -g1" -DCMAKE_CXX_COMPILER=clang++ -DREMOTE_XCOMM_BUILD_FUZZERS=ON \
    -DREMOTE_XCOMM_BUILD_TESTS=OFF -DREMOTE_XCOMM_BUILD_EXAMPLES=OFF -DREMOTE_XCOMM_BUILD_TOOLS=OFF \
    -DREMOTE_XCOMM_BUILD_PYTHON=OFF -DREMOTE_XCOMM_BUILD_BENCHMARKS=OFF -DREMOTE_XCOMM_INSTALL=OFF "$@" </dev/null
  log "building the fuzz targets in $dir with ${JOBS:-$(nproc)} jobs"
  cmake --build "$dir" --parallel "${JOBS:-$(nproc)}" --target remote_xcomm_fuzzers </dev/null
}

# run_fuzzer DIR TARGET : fuzzes TARGET for FUZZ_SECONDS, starting from its seed corpus, in
# DIR/fuzz-runs/TARGET/ (new inputs in corpus/, a crashing input in artifacts/, libFuzzer's output
# in fuzz.log, whose end is printed). Fails on a crash, a leak, a sanitizer report or a timeout.
run_fuzzer() {
  local dir="$1" target="$2" status=0
  local work="$dir/fuzz-runs/$target"
  rm -rf "$work"
  mkdir -p "$work/corpus" "$work/artifacts"
  log "fuzzing $target for ${FUZZ_SECONDS:-10} s"
  timeout --kill-after=30 $((${FUZZ_SECONDS:-10} + 300)) \
    "$dir/tests/fuzz/remote_xcomm_fuzz_$target" -max_total_time="${FUZZ_SECONDS:-10}" -timeout=60 \
    -print_final_stats=1 -artifact_prefix="$work/artifacts/" "$work/corpus" "$RX_ROOT/tests/fuzz/corpus/$target" \
    </dev/null >"$work/fuzz.log" 2>&1 || status=$?
  if ((status == 0)); then
    grep -E '^(stat::number_of_executed_units|Done)' "$work/fuzz.log" >&2 || true
  else
    tail -n 80 "$work/fuzz.log" >&2
    log "$target: the input is in $work/artifacts/; replay it with $dir/tests/fuzz/remote_xcomm_fuzz_$target FILE"
  fi
  return "$status"
}

fuzz_stage() {
  (
    failed=()
    export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:strict_init_order=1:check_initialization_order=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
    export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:suppressions=$suppressions/ubsan.supp${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
    export LSAN_OPTIONS="suppressions=$suppressions/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
    local dir binary
    dir="$(absolute_dir "${FUZZ_BUILD_DIR:-$RX_ROOT/build-fuzz}")"
    time_stage "fuzz build" fuzz_build "$dir" "$@"
    ((${#failed[@]} == 0)) || exit 1
    time_stage "fuzz corpus replay" run_ctest "$dir" -L fuzz
    # Every target tests/fuzz/CMakeLists.txt lists (REMOTE_XCOMM_FUZZ_TARGETS), as built.
    for binary in "$dir"/tests/fuzz/remote_xcomm_fuzz_*; do
      [[ -x "$binary" ]] || continue
      time_stage "fuzz ${binary##*/remote_xcomm_fuzz_}" run_fuzzer "$dir" "${binary##*/remote_xcomm_fuzz_}"
    done
    ((${#failed[@]} == 0))
  )
}

run_release="${RELEASE:-1}"
if [[ "$run_release" != 0 ]]; then
  dir="$(build_dir)"
  time_stage "Release build" configure_and_build "$dir" "$@"
  # Part of the default build already; named here so that losing it is an error, not a silent skip.
  log "header self-compile check"
  time_stage "header self-compile check" cmake --build "$dir" --target remote_xcomm_header_checks </dev/null
fi

if [[ "${CHECK_FORMAT:-1}" != 0 ]]; then
  log "checking formatting"
  time_stage "clang-format (fix with scripts/check-format.sh --fix)" "$RX_ROOT/scripts/check-format.sh"
fi

# A failing sanitizer stage has already printed what failed and how long each part took.
if ((run_asan)); then
  asan_stage "$@" || failed+=("ASan+UBSan")
fi
if ((run_tsan)); then
  tsan_stage "$@" || failed+=("TSan")
fi
if [[ "$run_fuzz" != 0 ]]; then
  fuzz_stage "$@" || failed+=("fuzz")
fi

# Last, so that CTest's summary closes the output.
if [[ "$run_release" != 0 && " ${failed[*]} " != *" Release build "* ]]; then
  log "running the test suite (Release)"
  run_ctest "$dir" || failed+=("ctest (Release)")
fi

if ((${#failed[@]} > 0)); then
  printf 'FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
# On success CTest's own summary ("100% tests passed, …") is the last thing printed.
