#!/usr/bin/env bash
# Checks that our C++ sources match .clang-format (clang-format --dry-run -Werror), listing each
# file that does not. With --fix, formats them in place instead.
#
# Usage: scripts/check-format.sh [--fix]
# Covers *.cpp and *.hpp under include/ src/ tests/ examples/ bench/. Installs clang-format
# (Debian 12's, version 14) if it is missing; DRY_RUN=1 only prints that install.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

fix=0
case "${1:-}" in
  "") ;;
  --fix) fix=1 ;;
  *)
    echo "usage: $0 [--fix]" >&2
    exit 2
    ;;
esac

ensure_packages clang-format
command -v clang-format >/dev/null 2>&1 || die "clang-format not found"

cd "$RX_ROOT"
dirs=()
for candidate in include src tests examples bench; do
  [[ -d "$candidate" ]] && dirs+=("$candidate")
done
files=()
if ((${#dirs[@]} > 0)); then
  mapfile -t files < <(find "${dirs[@]}" -type f \( -name '*.cpp' -o -name '*.hpp' \) | LC_ALL=C sort)
fi
if ((${#files[@]} == 0)); then
  echo "check-format: no C++ sources found"
  exit 0
fi

if ((fix)); then
  clang-format -i --style=file "${files[@]}"
  echo "check-format: formatted ${#files[@]} files with $(clang-format --version)"
  exit 0
fi

bad=()
for file in "${files[@]}"; do
  if ! clang-format --dry-run -Werror --style=file "$file" >/dev/null 2>&1; then
    bad+=("$file")
  fi
done
if ((${#bad[@]} > 0)); then
  echo "check-format: ${#bad[@]} of ${#files[@]} files need clang-format ($(clang-format --version)):" >&2
  for file in "${bad[@]}"; do
    echo "  $file" >&2
    clang-format --style=file "$file" | diff -u --label "$file" --label "$file (formatted)" "$file" - | head -40 >&2 || true
  done
  echo "check-format: run scripts/check-format.sh --fix" >&2
  exit 1
fi
echo "check-format: ${#files[@]} files formatted as .clang-format says"
