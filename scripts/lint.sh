#!/usr/bin/env bash
# Lint the tree: clang-format (style) over src/ tests/ tools/ bench/, clang-tidy (bugs) over src/.
#
#   scripts/lint.sh                 check; exits non-zero on any finding
#   scripts/lint.sh --fix           rewrite files with clang-format (then re-check clang-tidy yourself)
#   scripts/lint.sh --format-only   only clang-format      scripts/lint.sh --tidy-only   only clang-tidy
#   scripts/lint.sh --build-dir DIR compile_commands.json from DIR (default: build/, configured if absent)
#   scripts/lint.sh --jobs N        parallel clang-tidy processes (default: number of cores)
#   scripts/lint.sh --analyzer M    clang-analyzer depth: deep (default) or shallow (about 1/3 of
#                                   the time; scripts/test-all.sh uses it to fit CI's time)
#
# Tools (installed by scripts/install-deps.sh): clang-format-19, pinned because formatting differs
# between releases; clang-tidy-22 where bookworm has it (bookworm-security does), else 19. 22 does
# not run its checks over system headers: the whole src/ takes a quarter of 19's CPU time (measured
# 8 min against about 32 min, src/daemon/main.cpp 5 s against 32 s). Configs: .clang-format and
# .clang-tidy.
# clang-tidy runs through scripts/run-tidy.py, which skips files unchanged since they last passed
# (cache: ~/.cache/duplex/clang-tidy; DUPLEX_TIDY_CACHE=DIR or off).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

fix=0
do_format=1
do_tidy=1
build_dir=build
jobs="${DUPLEX_JOBS:-$(nproc)}"
analyzer="${DUPLEX_TIDY_ANALYZER:-deep}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --fix) fix=1; do_tidy=0 ;;
    --format-only) do_tidy=0 ;;
    --tidy-only) do_format=0 ;;
    --build-dir) build_dir="${2:?--build-dir needs a value}"; shift ;;
    --jobs|-j) jobs="${2:?--jobs needs a value}"; shift ;;
    --analyzer) analyzer="${2:?--analyzer needs deep or shallow}"; shift ;;
    -h|--help) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "lint.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

# The first of the preferred versions installed, else the unversioned one.
pick_tool() {
  local name=$1 v
  local -a order=(19 21 20 18 17 16 15)
  [[ $name != clang-tidy ]] || order=(22 19 21 20 18 17 16 15)
  for v in "${order[@]}"; do
    if command -v "$name-$v" >/dev/null 2>&1; then echo "$name-$v"; return; fi
  done
  if command -v "$name" >/dev/null 2>&1; then
    echo "lint.sh: warning: no versioned $name found, using $name ($("$name" --version | head -1))" >&2
    echo "$name"
    return
  fi
  return 1
}

status=0

if [[ $do_format == 1 ]]; then
  fmt=$(pick_tool clang-format) || { echo "lint.sh: clang-format not found; run scripts/install-deps.sh" >&2; exit 1; }
  mapfile -t files < <(find src tests tools bench -type f \
    \( -name '*.h' -o -name '*.hpp' -o -name '*.cpp' -o -name '*.cc' \) 2>/dev/null | sort)
  if [[ ${#files[@]} -eq 0 ]]; then
    echo "lint.sh: no C++ files found"
  elif [[ $fix == 1 ]]; then
    echo "lint.sh: $fmt -i on ${#files[@]} files"
    printf '%s\0' "${files[@]}" | xargs -0 -n 50 "$fmt" -i --style=file
  else
    echo "lint.sh: $fmt --dry-run --Werror on ${#files[@]} files"
    bad=()
    for f in "${files[@]}"; do
      if ! out=$("$fmt" --dry-run --Werror --style=file "$f" 2>&1); then
        bad+=("$f")
        printf '%s\n' "$out" | head -6  # the first two places; --fix shows all by rewriting
      fi
    done
    if [[ ${#bad[@]} -gt 0 ]]; then
      echo "lint.sh: clang-format: ${#bad[@]} file(s) not formatted (fix: scripts/lint.sh --fix):"
      printf '  %s\n' "${bad[@]}"
      status=1
    else
      echo "lint.sh: clang-format: clean"
    fi
  fi
fi

if [[ $do_tidy == 1 ]]; then
  tidy=$(pick_tool clang-tidy) || { echo "lint.sh: clang-tidy not found; run scripts/install-deps.sh" >&2; exit 1; }
  case "$build_dir" in /*) ;; *) build_dir="$ROOT/$build_dir" ;; esac
  if [[ ! -f "$build_dir/compile_commands.json" ]]; then
    echo "lint.sh: no $build_dir/compile_commands.json; configuring"
    "$ROOT/scripts/build.sh" --dir "$build_dir" --configure-only >/dev/null
  fi
  # Translation units under src/ (headers are checked through them: HeaderFilterRegex).
  mapfile -t tus < <(python3 - "$build_dir/compile_commands.json" "$ROOT/src/" <<'PY'
import json, os, sys
db, prefix = sys.argv[1], sys.argv[2]
seen = set()
for e in json.load(open(db)):
    f = os.path.normpath(os.path.join(e.get("directory", ""), e["file"]))
    if f.startswith(prefix) and os.path.exists(f) and f not in seen:
        seen.add(f)
        print(f)
PY
  )
  if [[ ${#tus[@]} -eq 0 ]]; then
    echo "lint.sh: clang-tidy: no source files under src/ in $build_dir/compile_commands.json"
  else
    echo "lint.sh: $tidy on ${#tus[@]} files under src/ (-j$jobs, analyzer $analyzer)"
    # Parallel runner with a cache of clean results (scripts/run-tidy.py): an unchanged file that
    # passed before is not checked again. DUPLEX_TIDY_CACHE=off disables the cache.
    cache="${DUPLEX_TIDY_CACHE:-${XDG_CACHE_HOME:-${HOME:-/var/tmp}/.cache}/duplex/clang-tidy}"
    [[ "$cache" != off ]] || cache=""
    if python3 "$ROOT/scripts/run-tidy.py" --build-dir "$build_dir" --tidy "$(command -v "$tidy")" \
      --jobs "$jobs" --analyzer "$analyzer" --cache "$cache" --config-file "$ROOT/.clang-tidy" "${tus[@]}"; then
      echo "lint.sh: clang-tidy: clean"
    else
      echo "lint.sh: clang-tidy: findings (fix them, or NOLINT(check) one line with a reason)"
      status=1
    fi
  fi
fi

exit $status
