#!/usr/bin/env bash
# Builds the benchmarks in Release and runs the whole suite (bench/), writing Google Benchmark's
# JSON, then turns it into docs/benchmarks.md and docs/benchmarks.png (scripts/bench_report.py).
#
# Usage: scripts/bench.sh
#
# Environment (defaults in brackets):
#   BENCH_BUILD_DIR            Release build directory [build-bench]
#   BENCH_RESULTS_DIR          where each binary's JSON and the merged JSON go [$BENCH_BUILD_DIR/results]
#   BENCH_REPETITIONS          repetitions of the round trips (one and two processes), run
#                              interleaved, medians reported [5]
#   BENCH_LOCAL_REPETITIONS    repetitions of codec and loop hand-off [3]
#   BENCH_CAPTURE_REPETITIONS  repetitions of poller capture, median reported [5]: a run either
#                              captures both of gRPC's pollers or not, so a few runs are needed
#   BENCH_MIN_TIME             --benchmark_min_time, seconds per repetition [Google Benchmark's 0.5]
#   BENCH_FILTER               --benchmark_filter for every binary [all]
#   BENCH_DENSITY_ENDPOINTS    endpoint counts of the density benchmark [10000,100000]
#   BENCH_MARKDOWN, BENCH_PLOT where the report goes [docs/benchmarks.md, docs/benchmarks.png]
#   BENCH_REPORT=0             run and keep the JSON, but write no report
#   JOBS                       parallel build jobs [nproc]
#
# Measure on a quiet machine: client and server share its cores, so anything else running moves
# the figures. A ratio between a raw_grpc and an rxcomm twin is read off one run.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# shellcheck source=scripts/lib.sh
source "$root/scripts/lib.sh"

ensure_packages "${RX_BUILD_PACKAGES[@]}" python3-matplotlib

build_dir="${BENCH_BUILD_DIR:-$root/build-bench}"
results_dir="${BENCH_RESULTS_DIR:-$build_dir/results}"
repetitions="${BENCH_REPETITIONS:-5}"
local_repetitions="${BENCH_LOCAL_REPETITIONS:-3}"
capture_repetitions="${BENCH_CAPTURE_REPETITIONS:-5}"
density_endpoints="${BENCH_DENSITY_ENDPOINTS:-10000,100000}"
markdown="${BENCH_MARKDOWN:-$root/docs/benchmarks.md}"
plot="${BENCH_PLOT:-$root/docs/benchmarks.png}"

log "configuring a Release build in $build_dir"
generator=()
[[ -f "$build_dir/CMakeCache.txt" ]] || generator=(-G Ninja)
cmake -S "$root" -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DREMOTE_XCOMM_BUILD_BENCHMARKS=ON \
  -DREMOTE_XCOMM_BUILD_TESTS=OFF -DREMOTE_XCOMM_BUILD_EXAMPLES=OFF \
  -DREMOTE_XCOMM_SANITIZE= </dev/null >/dev/null
log "building the benchmarks"
cmake --build "$build_dir" --parallel "${JOBS:-$(nproc)}" --target bm_codec bm_handoff bm_roundtrip bm_capture bench_server \
  bm_density bm_overload </dev/null

rm -rf "$results_dir"
mkdir -p "$results_dir"
bin="$build_dir/bench"

common=()
[[ -n "${BENCH_MIN_TIME:-}" ]] && common+=("--benchmark_min_time=$BENCH_MIN_TIME")
[[ -n "${BENCH_FILTER:-}" ]] && common+=("--benchmark_filter=$BENCH_FILTER")

# run NAME BINARY [ARGS...]: one binary, its JSON in $results_dir/NAME.json, console output shown.
run() {
  local name="$1" binary="$2"
  shift 2
  log "running $(basename "$binary") $*"
  "$binary" --benchmark_out="$results_dir/$name.json" --benchmark_out_format=json "${common[@]}" "$@" </dev/null
}

local_args=(--benchmark_repetitions="$local_repetitions" --benchmark_report_aggregates_only=true)
run codec "$bin/bm_codec" "${local_args[@]}"
run handoff "$bin/bm_handoff" "${local_args[@]}"
# Repetitions of all round trips in random order, so that twins see the same machine on average
# (the foundation issue's measurements interleaved their variants the same way).
run roundtrip "$bin/bm_roundtrip" --benchmark_repetitions="$repetitions" --benchmark_report_aggregates_only=true \
  --benchmark_enable_random_interleaving=true

# Poller capture: its own server process; each repetition loads it afresh.
run capture "$bin/bm_capture" --benchmark_repetitions="$capture_repetitions" --benchmark_report_aggregates_only=true

# Density: each case in a process of its own, so one case's freed memory cannot hide the next's.
mapfile -t density_cases < <("$bin/bm_density" --density_endpoints="$density_endpoints" --benchmark_list_tests \
  ${BENCH_FILTER:+"--benchmark_filter=$BENCH_FILTER"} </dev/null)
index=0
for case_name in "${density_cases[@]}"; do
  run "density_$index" "$bin/bm_density" --density_endpoints="$density_endpoints" --benchmark_filter="^${case_name}\$"
  index=$((index + 1))
done

# Memory under overload: one iteration per case, each with a server process of its own.
run overload "$bin/bm_overload"

if [[ "${BENCH_REPORT:-1}" == 0 ]]; then
  log "results in $results_dir (no report written: BENCH_REPORT=0)"
  exit 0
fi

# The exact command, with every setting that differs from the defaults.
command="scripts/bench.sh"
for variable in BENCH_REPETITIONS BENCH_LOCAL_REPETITIONS BENCH_CAPTURE_REPETITIONS BENCH_MIN_TIME BENCH_FILTER BENCH_DENSITY_ENDPOINTS; do
  [[ -n "${!variable:-}" ]] && command="$variable=${!variable} $command"
done
revision="$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if ! git -C "$root" diff --quiet HEAD -- include src bench 2>/dev/null; then
  revision="$revision with uncommitted changes"
fi

# A binary whose filter matched nothing leaves an empty file.
mapfile -t result_files < <(find "$results_dir" -maxdepth 1 -name '*.json' ! -name benchmarks.json -size +0 |
  LC_ALL=C sort)
((${#result_files[@]} > 0)) || die "no benchmark ran (BENCH_FILTER=${BENCH_FILTER:-})"
/usr/bin/python3 "$root/scripts/bench_report.py" --markdown "$markdown" --plot "$plot" \
  --merged "$results_dir/benchmarks.json" --command "$command" --revision "$revision" "${result_files[@]}"
log "report: $markdown (plot $plot); raw results: $results_dir/benchmarks.json"
