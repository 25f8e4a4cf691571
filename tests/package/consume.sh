#!/usr/bin/env bash
# Builds and runs the consumer program (tests/package/consumer/main.cpp) as a user of the package
# would; the CTest tests of tests/package/package_tests.cmake. Exits non-zero on any failure.
#
#   consume.sh install BUILD_DIR WORK_DIR [CMAKE_ARGS...]
#       cmake --install BUILD_DIR into WORK_DIR/prefix; checks the layout; builds the consumer with
#       find_package(remote_xcomm CONFIG) against that prefix and runs it; compiles and links
#       main.cpp with `pkg-config --cflags --libs remote_xcomm` (CXX, CXX_LAUNCHER) and runs it.
#   consume.sh subdirectory SOURCE_DIR WORK_DIR [CMAKE_ARGS...]
#       builds the consumer of tests/package/subdirectory (add_subdirectory(SOURCE_DIR)) and runs it.
set -euo pipefail

mode="$1" tree="$2" work="$3"
shift 3
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

step() {
  printf '==> %s\n' "$*"
}
fail() {
  printf 'FAIL: %s\n' "$*" >&2
  exit 1
}

rm -rf "$work"
mkdir -p "$work"

case "$mode" in
  install)
    prefix="$work/prefix"
    step "cmake --install $tree --prefix $prefix"
    cmake --install "$tree" --prefix "$prefix" >"$work/install.log" || {
      cat "$work/install.log"
      fail "cmake --install"
    }
    # The layout docs/install.md promises, and nothing of the build tree.
    [[ -f "$prefix/include/remote_xcomm/remote_xcomm.hpp" ]] || fail "public headers not installed"
    [[ -f "$prefix/share/remote_xcomm/proto/remote_xcomm/v1/remote_xcomm.proto" ]] || fail "proto not installed"
    config="$(find "$prefix" -name remote_xcomm-config.cmake)"
    [[ -n "$config" ]] || fail "remote_xcomm-config.cmake not installed"
    [[ -n "$(find "$prefix" -name remote_xcomm-config-version.cmake)" ]] || fail "no version file"
    pc="$(find "$prefix" -name remote_xcomm.pc)"
    [[ -n "$pc" ]] || fail "remote_xcomm.pc not installed"
    [[ -z "$(find "$prefix" -name '*.pb.h')" ]] || fail "generated headers installed"
    if grep -rl -e "$tree" -e "$(cd "$here/../.." && pwd)" "$prefix" --include='*.cmake' --include='*.pc'; then
      fail "installed package files name the build or source tree (not relocatable)"
    fi
    if grep -q BOOST_ASIO_NO_DEPRECATED "$(dirname "$config")/remote_xcomm-targets.cmake"; then
      fail "the package forces BOOST_ASIO_NO_DEPRECATED on consumers"
    fi

    step "find_package(remote_xcomm CONFIG): configure, build, run"
    cmake -S "$here/consumer" -B "$work/build" "$@" "-DCMAKE_PREFIX_PATH=$prefix" </dev/null
    found="$(sed -n 's/^remote_xcomm_DIR:PATH=//p' "$work/build/CMakeCache.txt")"
    [[ "$found" == "$prefix"/* ]] || fail "find_package found remote_xcomm in '$found', not in $prefix"
    cmake --build "$work/build" </dev/null
    "$work/build/consumer"

    step "pkg-config --cflags --libs remote_xcomm: compile, link, run"
    export PKG_CONFIG_PATH="$(dirname "$pc")"
    pkg-config --exists --print-errors remote_xcomm
    [[ "$(pkg-config --modversion remote_xcomm)" == "$(sed -n 's/^Version: //p' "$pc")" ]] || fail "--modversion"
    read -r -a flags <<<"$(pkg-config --cflags --libs remote_xcomm)"
    libdir="$(pkg-config --variable=libdir remote_xcomm)"
    [[ -d "$libdir" && "$(cd "$libdir" && pwd)" == "$prefix"/* ]] || fail "pkg-config libdir '$libdir' not in $prefix"
    compile=(${CXX_LAUNCHER:+"$CXX_LAUNCHER"} "${CXX:-c++}" -std=c++20 -O1 "$here/consumer/main.cpp" "${flags[@]}"
      "-Wl,-rpath,$libdir" -o "$work/pkg_config_consumer")
    printf '%s\n' "${compile[*]}"
    "${compile[@]}"
    "$work/pkg_config_consumer"
    ;;
  subdirectory)
    step "add_subdirectory($tree): configure, build, run"
    cmake -S "$here/subdirectory" -B "$work/build" "$@" "-DREMOTE_XCOMM_SOURCE_DIR=$tree" </dev/null
    # Only the consumer and what it needs: a subproject's tests and examples are off by default.
    cmake --build "$work/build" --target consumer </dev/null
    "$work/build/consumer"
    ;;
  *) fail "mode '$mode': expected install or subdirectory" ;;
esac
echo "PASS ($mode)"
