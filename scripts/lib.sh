# shellcheck shell=bash
# Shared helpers for scripts/*.sh. Source it; do not run it.
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#   ensure_packages cmake ninja-build ...   # installs the Debian packages that are missing
#   configure_and_build "$BUILD_DIR" [-DSOME=OPTION ...]
#
# Environment:
#   DRY_RUN=1   ensure_packages prints the apt-get commands it would run instead of running them
#   JOBS=N      parallel build jobs (default: nproc)

# The repository root, whatever the caller's working directory.
RX_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Debian 12 packages that configuring, building and testing the project needs. The demo needs
# the same set, since it configures the whole project (tests and benchmarks included).
# shellcheck disable=SC2034  # used by the scripts that source this file
RX_BUILD_PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libboost1.81-dev libboost-json1.81-dev libsqlite3-dev
  libgtest-dev libgmock-dev libbenchmark-dev libcli11-dev doxygen
  python3 python3-grpcio python3-protobuf python3-h2 python3-dev pybind11-dev
)

# The fuzz stage of scripts/test.sh (tests/fuzz/): libFuzzer comes with clang, not with GCC.
# shellcheck disable=SC2034  # used by the scripts that source this file
RX_FUZZ_PACKAGES=(clang libclang-rt-14-dev libfuzzer-14-dev)

log() {
  printf '==> %s\n' "$*" >&2
}

die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# Succeeds if the Debian package is installed.
package_installed() {
  local status
  status="$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" || return 1
  [[ "$status" == installed ]]
}

# ensure_packages PKG... : installs, non-interactively, those of the Debian packages not yet
# installed. Runs `apt-get update` only when something is missing. Uses sudo when not root.
ensure_packages() {
  command -v dpkg-query >/dev/null 2>&1 || die "dpkg-query not found: these scripts expect Debian 12"
  local missing=() package
  for package in "$@"; do
    package_installed "$package" || missing+=("$package")
  done
  if ((${#missing[@]} == 0)); then
    return 0
  fi

  local -a sudo=()
  if [[ "$(id -u)" -ne 0 ]]; then
    if [[ "${DRY_RUN:-0}" != 1 ]]; then
      command -v sudo >/dev/null 2>&1 || die "not root and no sudo: install these packages first: ${missing[*]}"
    fi
    sudo=(sudo)
  fi
  local -a apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=600)

  log "missing Debian packages: ${missing[*]}"
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf 'DRY_RUN: would run: %s update\n' "${apt[*]}"
    printf 'DRY_RUN: would run: %s install --no-install-recommends %s\n' "${apt[*]}" "${missing[*]}"
    return 0
  fi
  "${apt[@]}" update </dev/null || die "apt-get update failed"
  "${apt[@]}" install --no-install-recommends "${missing[@]}" </dev/null ||
    die "apt-get install failed for: ${missing[*]}"
}

# Absolute path of the build directory: $BUILD_DIR (relative to the caller's working directory)
# or build/ in the repository root.
build_dir() {
  local dir="${BUILD_DIR:-$RX_ROOT/build}"
  mkdir -p "$dir"
  (cd "$dir" && pwd)
}

# configure_and_build BUILD_DIR [CMAKE_ARGS...] : configures the project in BUILD_DIR (Ninja for a
# new directory; Release unless CMAKE_ARGS say otherwise) and builds every default target.
configure_and_build() {
  local dir="$1"
  shift
  local -a generator=()
  if [[ ! -f "$dir/CMakeCache.txt" ]]; then
    generator=(-G Ninja)
  fi
  log "configuring $RX_ROOT in $dir"
  cmake -S "$RX_ROOT" -B "$dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release "$@" </dev/null
  log "building in $dir with ${JOBS:-$(nproc)} jobs"
  cmake --build "$dir" --parallel "${JOBS:-$(nproc)}" </dev/null
}
