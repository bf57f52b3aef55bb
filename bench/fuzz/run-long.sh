#!/usr/bin/env bash
# Long libFuzzer run of the NBD targets (handshake/options and requests), with ASan+UBSan.
#   bench/fuzz/run-long.sh [SECONDS_PER_TARGET=3600] [JOBS=2]
# Builds build-fuzz/ with clang-16 if needed. New corpus entries go to build-fuzz/long-corpus/,
# crashes to build-fuzz/crashes/. Copy interesting inputs into tests/fuzz/corpus/ by hand.
set -euo pipefail
secs=${1:-3600}
jobs=${2:-2}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=$root/build-fuzz
if [ ! -x "$build/tests/fuzz/fuzz_nbd_request" ]; then
  cmake -S "$root" -B "$build" -G Ninja -DDUPLEX_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_COMPILER=clang-16 -DCMAKE_CXX_COMPILER=clang++-16
  ninja -C "$build" fuzz_nbd_handshake fuzz_nbd_request
fi
mkdir -p "$build/crashes"
for t in fuzz_nbd_handshake fuzz_nbd_request; do
  corpus=$build/long-corpus/$t
  mkdir -p "$corpus"
  echo "== $t for ${secs}s with $jobs jobs"
  (cd "$build/crashes" && "$build/tests/fuzz/$t" -max_total_time="$secs" -jobs="$jobs" -workers="$jobs" \
      -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 "$corpus" "$root/tests/fuzz/corpus/$t")
done
ls -l "$build/crashes" | grep -E 'crash-|leak-|timeout-' && { echo "findings in $build/crashes"; exit 1; }
echo "no crashes"
