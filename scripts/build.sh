#!/usr/bin/env bash
# Configure and build Duplex with CMake + Ninja.
#
#   scripts/build.sh [--sanitize] [--fuzz] [--type Release|RelWithDebInfo|Debug] [--dir DIR]
#                    [--jobs N] [--target T]... [--configure-only] [-- EXTRA CMAKE ARGS...]
#
#   (default)    build/        g++, RelWithDebInfo (assertions kept)
#   --sanitize   build-asan/   ASan + UBSan (-DDUPLEX_SANITIZE=ON)
#   --fuzz       build-fuzz/   clang++-NN with libFuzzer (-DDUPLEX_FUZZ=ON), NN = newest installed
#                              clang whose fuzzer runtime is present (override: DUPLEX_CLANG=clang++-19)
#
# Environment: DUPLEX_JOBS (default: number of cores) sets ninja -j.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
sanitize=0
fuzz=0
type=RelWithDebInfo
dir=""
jobs="${DUPLEX_JOBS:-$(nproc)}"
configure_only=0
targets=()
extra=()

usage() { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --sanitize) sanitize=1 ;;
    --fuzz) fuzz=1 ;;
    --type) type="${2:?--type needs a value}"; shift ;;
    --type=*) type="${1#*=}" ;;
    --dir) dir="${2:?--dir needs a value}"; shift ;;
    --dir=*) dir="${1#*=}" ;;
    --jobs|-j) jobs="${2:?--jobs needs a value}"; shift ;;
    --jobs=*) jobs="${1#*=}" ;;
    --target) targets+=(--target "${2:?--target needs a value}"); shift ;;
    --configure-only) configure_only=1 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; extra+=("$@"); break ;;
    *) echo "build.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

case "$type" in
  Release|RelWithDebInfo|Debug|MinSizeRel) ;;
  *) echo "build.sh: --type must be Release, RelWithDebInfo, Debug or MinSizeRel, not '$type'" >&2; exit 2 ;;
esac

# Newest clang++-NN with the libFuzzer runtime (libclang-rt-NN-dev).
find_fuzz_clang() {
  if [[ -n "${DUPLEX_CLANG:-}" ]]; then echo "$DUPLEX_CLANG"; return; fi
  local v
  for v in 21 20 19 18 17 16 15; do
    if command -v "clang++-$v" >/dev/null 2>&1 &&
      compgen -G "/usr/lib/llvm-$v/lib/clang/*/lib/linux/libclang_rt.fuzzer-*.a" >/dev/null; then
      echo "clang++-$v"
      return
    fi
  done
  return 1
}

args=(-DCMAKE_BUILD_TYPE="$type" -DCMAKE_EXPORT_COMPILE_COMMANDS=ON)
if [[ $fuzz == 1 ]]; then
  cxx=$(find_fuzz_clang) || {
    echo "build.sh: no clang++ with libFuzzer found; run scripts/install-deps.sh" >&2
    exit 1
  }
  cc=${cxx/clang++/clang}
  args+=(-DDUPLEX_FUZZ=ON -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_C_COMPILER="$cc")
  [[ -n "$dir" ]] || dir=build-fuzz
elif [[ $sanitize == 1 ]]; then
  args+=(-DDUPLEX_SANITIZE=ON)
  [[ -n "$dir" ]] || dir=build-asan
else
  [[ -n "$dir" ]] || dir=build
fi
if [[ $sanitize == 1 && $fuzz == 1 ]]; then echo "build.sh: --fuzz already implies ASan+UBSan" >&2; fi
# Options set explicitly either way, so reusing a directory never keeps a stale one.
if [[ $fuzz == 0 ]]; then args+=(-DDUPLEX_FUZZ=OFF); fi
if [[ $sanitize == 0 ]]; then args+=(-DDUPLEX_SANITIZE=OFF); fi

case "$dir" in /*) ;; *) dir="$ROOT/$dir" ;; esac

# A directory made by another generator cannot be reused: start it afresh.
if [[ -f "$dir/CMakeCache.txt" ]] && ! grep -q '^CMAKE_GENERATOR:INTERNAL=Ninja$' "$dir/CMakeCache.txt"; then
  echo "build.sh: $dir was not configured with Ninja; removing its CMake cache" >&2
  rm -rf "$dir/CMakeCache.txt" "$dir/CMakeFiles"
fi

echo "build.sh: configuring $dir (${args[*]} ${extra[*]})" >&2
cmake -S "$ROOT" -B "$dir" -G Ninja "${args[@]}" "${extra[@]}"
if [[ $configure_only == 1 ]]; then exit 0; fi
echo "build.sh: building $dir with -j$jobs ${targets[*]}" >&2
cmake --build "$dir" -j "$jobs" "${targets[@]}"
