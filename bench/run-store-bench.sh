#!/usr/bin/env bash
# Build duplex-store-bench and run it: the store engine vs the raw file on one disk.
#
#   bench/run-store-bench.sh [--build-dir DIR] [--out DIR] [--no-build] [--aa] [-- BENCH ARGS...]
#
#   --build-dir DIR  where to build (default: build-bench/ in the repo; RelWithDebInfo, the
#                    project's default: -O2, assertions kept, as shipped)
#   --out DIR        results directory (default /var/tmp/duplex-store-bench/<UTC time>): the
#                    Markdown table (table.md), --json output (results.json), stderr (log.txt)
#   --no-build       use the binary already in the build dir
#   --aa             also run the A/A check first (raw vs a second raw file): the noise floor
#   BENCH ARGS       passed to duplex-store-bench, e.g. --dir /var/tmp --size 1G --seconds 5
#
# Example (the run in docs/performance.md):
#   bench/run-store-bench.sh --aa -- --dir /var/tmp --size 1G --seconds 10 --rounds 5
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir="$ROOT/build-bench"
out=""
build=1
aa=0
args=()

usage() { sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --build-dir) build_dir="${2:?--build-dir needs a value}"; shift ;;
    --out) out="${2:?--out needs a value}"; shift ;;
    --no-build) build=0 ;;
    --aa) aa=1 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; args+=("$@"); break ;;
    *) echo "run-store-bench.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [[ $build -eq 1 ]]; then
  cmake -S "$ROOT" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDUPLEX_TESTS=OFF >/dev/null
  ninja -C "$build_dir" duplex-store-bench >&2
fi
bin="$build_dir/bench/duplex-store-bench"
[[ -x "$bin" ]] || { echo "run-store-bench.sh: $bin not found (build it or drop --no-build)" >&2; exit 1; }

out=${out:-/var/tmp/duplex-store-bench/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
{
  echo "date: $(date -u +%FT%TZ)"
  echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "kernel: $(uname -r)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "cores: $(nproc)"
  echo "memory: $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
  echo "command: $bin ${args[*]}"
} > "$out/env.txt"

if [[ $aa -eq 1 ]]; then
  echo "== A/A check (noise floor) ==" >&2
  "$bin" "${args[@]}" --aa --json "$out/aa.json" > "$out/aa.md" 2> "$out/aa-log.txt"
  cat "$out/aa.md"
  echo
fi
echo "== store vs raw ==" >&2
"$bin" "${args[@]}" --json "$out/results.json" > "$out/table.md" 2> >(tee "$out/log.txt" >&2)
cat "$out/table.md"
echo >&2
echo "results in $out" >&2
