#!/usr/bin/env bash
# Builds the Debian package with CPack and proves that it installs and works on a clean Debian 12
# root: debootstrap (minbase) a root, `apt-get install ./remote-xcomm_*.deb` in it (only the
# package's own Depends come along), then install a compiler and CMake and build and run the
# consumer project (tests/package/consumer) with find_package and with pkg-config against it.
# Needs root (chroot, mounts) and the Debian mirror of /etc/apt/sources.list*; slow, not part of CI.
#
# Usage: scripts/check-deb.sh
# Environment:
#   DEB_BUILD_DIR=DIR   build directory for the package (default: build-deb/ in the repository root)
#   BASE_ROOT=DIR       an existing debootstrapped bookworm root to start from (copied, not changed);
#                       without it a fresh one is made with debootstrap
#   MIRROR=URL          Debian mirror for debootstrap (default: http://deb.debian.org/debian)
#   KEEP_ROOT=1         keep the clean root after the run (its path is printed)
#   JOBS=N              parallel build jobs (default: nproc)
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ "$(id -u)" -eq 0 ]] || die "run as root (debootstrap, chroot and mounts need it)"
ensure_packages "${RX_BUILD_PACKAGES[@]}" debootstrap dpkg-dev

dir="${DEB_BUILD_DIR:-$RX_ROOT/build-deb}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"

# A shared library under /usr, as a Debian package ships it; only the library is built.
log "configuring the package build in $dir"
generator=()
[[ -f "$dir/CMakeCache.txt" ]] || generator=(-G Ninja)
cmake -S "$RX_ROOT" -B "$dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
  -DCMAKE_INSTALL_PREFIX=/usr -DREMOTE_XCOMM_BUILD_TESTS=OFF -DREMOTE_XCOMM_BUILD_EXAMPLES=OFF \
  -DREMOTE_XCOMM_BUILD_BENCHMARKS=OFF </dev/null
cmake --build "$dir" --parallel "${JOBS:-$(nproc)}" --target remote_xcomm </dev/null
rm -f "$dir"/remote-xcomm_*.deb
(cd "$dir" && cpack -G DEB) </dev/null
debs=("$dir"/remote-xcomm_*.deb)
[[ -f "${debs[0]}" ]] || die "cpack made no remote-xcomm_*.deb in $dir"
deb="${debs[0]}"
log "package: $deb"
dpkg-deb --info "$deb"
dpkg-deb --contents "$deb"

work="$(mktemp -d /tmp/rx-check-deb.XXXXXX)"
root="$work/root"
cleanup() {
  local mount
  for mount in "$root/dev/pts" "$root/dev" "$root/proc"; do
    mountpoint -q "$mount" && umount "$mount"
  done
  if [[ "${KEEP_ROOT:-0}" == 1 ]]; then
    log "kept the clean root: $root"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

if [[ -n "${BASE_ROOT:-}" ]]; then
  log "copying the clean root $BASE_ROOT"
  cp -a "$BASE_ROOT" "$root"
else
  log "debootstrap --variant=minbase bookworm $root"
  debootstrap --variant=minbase bookworm "$root" "${MIRROR:-http://deb.debian.org/debian}" >"$work/debootstrap.log" ||
    {
      tail -20 "$work/debootstrap.log"
      die "debootstrap failed"
    }
fi
cp /etc/resolv.conf "$root/etc/resolv.conf"
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"
mkdir -p "$root/tmp/check"
cp "$deb" "$root/tmp/check/"
cp -r "$RX_ROOT/tests/package/consumer" "$root/tmp/check/consumer"

in_root() {
  chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root DEBIAN_FRONTEND=noninteractive "$@" </dev/null
}

log "in the clean root: apt-get install ./$(basename "$deb") (its Depends only)"
in_root apt-get -q update
in_root bash -c "cd /tmp/check && apt-get -q -y --no-install-recommends install ./$(basename "$deb")"
in_root dpkg -s remote-xcomm
log "in the clean root: a compiler and CMake for the consumer (the user's own tools)"
in_root apt-get -q -y --no-install-recommends install g++ cmake make
log "in the clean root: find_package(remote_xcomm CONFIG) consumer"
in_root cmake -S /tmp/check/consumer -B /tmp/check/build -DCMAKE_BUILD_TYPE=Release
in_root cmake --build /tmp/check/build
in_root /tmp/check/build/consumer
log "in the clean root: pkg-config consumer"
in_root bash -c 'g++ -std=c++20 -O1 /tmp/check/consumer/main.cpp $(pkg-config --cflags --libs remote_xcomm) -o /tmp/check/pc_consumer'
in_root /tmp/check/pc_consumer
log "OK: $(basename "$deb") installs with apt-get on a clean bookworm root; both consumers build and run"
