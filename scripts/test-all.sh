#!/usr/bin/env bash
# The one test command: installs, builds and runs every test, then lints.
#
#   scripts/test-all.sh
#
#   1. scripts/install-deps.sh                        (Debian packages; DUPLEX_SKIP_APT=1 to skip apt)
#   2. build/       normal build, `ctest` (every test)
#   3. build-fuzz/  ONE clang build with ASan+UBSan (and libFuzzer instrumentation) of what the unit
#                   tests and the fuzz tests run: `ctest -L unit`, then `ctest -L fuzz` (short runs).
#                   Without a clang that has libFuzzer: build-asan/ (GCC ASan+UBSan), unit tests only
#   4. scripts/lint.sh (clang-format + clang-tidy)    (DUPLEX_LINT=warn: report only; =off: skip)
#                   started in the background at nice 19 right after the normal build (it needs only
#                   build/compile_commands.json), so it runs in the CPU the tests leave idle; its
#                   result is collected here. clang-analyzer runs shallow here (DUPLEX_TIDY_ANALYZER=
#                   deep for clang's default depth): at full depth the lint ended last, past CI's 45 minutes
#
# Tests run two at a time (ctest -j2), except those labelled `serial`, which run alone afterwards.
# Prints a last line `N passed, N failed`: the sum over the ctest runs, plus one per step outside
# ctest (lint passes or fails as one check; a failed install or build counts as one failure).
# Exits non-zero if anything failed. Logs: out/test-all/*.log.
#
# Environment: DUPLEX_JOBS (default 2: the CI machine has 2 cores), DUPLEX_SKIP_APT, DUPLEX_LINT,
# DUPLEX_TEST_TIMEOUT (default per-test timeout in seconds for tests without their own, 900),
# DUPLEX_TIDY_ANALYZER (shallow or deep, default shallow).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

JOBS="${DUPLEX_JOBS:-2}"
export DUPLEX_JOBS="$JOBS"
TIMEOUT="${DUPLEX_TEST_TIMEOUT:-900}"
LINT_MODE="${DUPLEX_LINT:-error}"
ANALYZER="${DUPLEX_TIDY_ANALYZER:-shallow}"
LOGS="$ROOT/out/test-all"
mkdir -p "$LOGS"

# ASan/UBSan: fail loudly with a full report; LeakSanitizer on.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

passed=0
failed=0
summary=()
t_start=$(date +%s)

banner() { printf '\n==== %s ====\n' "$*"; }
note() { summary+=("$1"); }
elapsed() { echo "$(($(date +%s) - $1))s"; }

# Runs a command, output to the console and to out/test-all/NAME.log; returns its exit code.
run_logged() {
  local name=$1; shift
  "$@" 2>&1 | tee "$LOGS/$name.log"
  return "${PIPESTATUS[0]}"
}

# ctest_pass NAME DIR [ctest args...]: one ctest run; adds to passed/failed from its summary line.
ctest_pass() {
  local name=$1 dir=$2; shift 2
  local rc line nfail ntotal t0
  t0=$(date +%s)
  run_logged "$name" ctest --test-dir "$dir" --output-on-failure --no-tests=ignore \
    --timeout "$TIMEOUT" "$@"
  rc=$?
  line=$(grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$LOGS/$name.log" | tail -1)
  if [[ -n "$line" ]]; then
    nfail=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
    ntotal=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\2/' <<<"$line")
  elif grep -q 'No tests were found' "$LOGS/$name.log"; then
    nfail=0 ntotal=0
  else
    nfail=0 ntotal=0
    [[ $rc -ne 0 ]] || rc=1
  fi
  if [[ $rc -ne 0 && $nfail -eq 0 ]]; then
    # ctest itself failed (bad test dir, crash): count it as one failure.
    nfail=1 ntotal=$((ntotal + 1))
  fi
  passed=$((passed + ntotal - nfail))
  failed=$((failed + nfail))
  note "$(printf '%-22s %4d passed %4d failed  (%s)' "$name" "$((ntotal - nfail))" "$nfail" "$(elapsed "$t0")")"
}

# ctest_suite NAME DIR [label filter args...]: parallel part, then the `serial` tests alone.
ctest_suite() {
  local name=$1 dir=$2; shift 2
  banner "ctest $name ($dir${*:+ $*})"
  ctest_pass "$name" "$dir" -j "$JOBS" "$@" -LE serial
  if [[ -n "$(ctest --test-dir "$dir" -N "$@" -L serial 2>/dev/null | grep -E '^ *Test +#')" ]]; then
    ctest_pass "$name-serial" "$dir" "$@" -L serial
  fi
}

step_failed() {  # NAME, t0: a step outside ctest failed: one failure.
  failed=$((failed + 1))
  note "$(printf '%-22s FAILED (%s, log out/test-all/%s.log)' "$1" "$(elapsed "$2")" "$1")"
}
step_passed() {
  note "$(printf '%-22s ok (%s)' "$1" "$(elapsed "$2")")"
}

# 1. Dependencies.
banner "install-deps"
t0=$(date +%s)
if run_logged install-deps "$ROOT/scripts/install-deps.sh"; then step_passed install-deps "$t0"
else step_failed install-deps "$t0"; fi

# 2. Normal build, every test.
banner "build (build/)"
t0=$(date +%s)
lint_pid=""
# Line tables only (DUPLEX_DEBUG_INFO=lines): backtraces keep file:line, the build is a quarter
# faster, and CI's two cores are the limit of its 45 minutes.
if run_logged build "$ROOT/scripts/build.sh" --dir build --jobs "$JOBS" -- -DDUPLEX_DEBUG_INFO=lines; then
  step_passed build "$t0"
  # The lint needs only build/compile_commands.json: it starts now, at the lowest priority, and
  # uses the CPU that the tests leave idle (the system tests mostly wait on timeouts and peers).
  if [[ "$LINT_MODE" != off ]]; then
    lint_t0=$(date +%s)
    nice -n 19 "$ROOT/scripts/lint.sh" --build-dir build --jobs "$JOBS" --analyzer "$ANALYZER" >"$LOGS/lint.log" 2>&1 </dev/null &
    lint_pid=$!
  fi
  ctest_suite ctest build
else
  step_failed build "$t0"
fi

# 3. Sanitizer tree (clang + ASan + UBSan + libFuzzer instrumentation): the unit tests and the fuzz
#    targets from ONE build, so the libraries are compiled once for both. If the tree does not
#    configure (no clang with libFuzzer), the unit tests run under GCC's ASan+UBSan instead.
banner "build --fuzz (build-fuzz/): unit tests + fuzz targets under ASan+UBSan"
t0=$(date +%s)
# ASan instrumentation can stop symmetric transfer between coroutines from being a tail call, so
# long chains of inline completions (a million awaits in Task.InlineCompletionChains..., whole
# NBD sessions over an in-memory volume) grow the stack; optimized builds do not. Give the
# sanitizer runs the stack they need rather than weaken those tests.
ulimit -s unlimited 2>/dev/null || ulimit -s 4194304 2>/dev/null || true
if ! run_logged build-fuzz-configure "$ROOT/scripts/build.sh" --fuzz --dir build-fuzz --configure-only; then
  note "$(printf '%-22s no clang tree (log out/test-all/build-fuzz-configure.log): fuzz skipped, unit tests under GCC ASan' fuzz)"
  if run_logged build-asan "$ROOT/scripts/build.sh" --sanitize --dir build-asan --jobs "$JOBS" --target unit_tests; then
    step_passed build-asan "$t0"
    ctest_suite ctest-asan build-asan -L unit
  else
    step_failed build-asan "$t0"
  fi
else
  # Build only what the tests need: `unit_tests`, plus the executable each fuzz test runs if ctest
  # knows it already, else every target of the directory that defines the test (`<dir>/all`);
  # anything else (a test outside the build tree) builds the whole tree.
  mapfile -t outs < <(ctest --test-dir build-fuzz -L fuzz --show-only=json-v1 2>/dev/null |
    python3 -c '
import json, os, sys
root = os.path.realpath(sys.argv[1])
outs = set()
for t in json.load(sys.stdin).get("tests", []):
    props = {p["name"]: p["value"] for p in t.get("properties", [])}
    cmd = (t.get("command") or [""])[0]
    wd = props.get("WORKING_DIRECTORY", "")
    if cmd and os.path.realpath(cmd).startswith(root + os.sep):
        outs.add(os.path.relpath(os.path.realpath(cmd), root))
    elif wd and os.path.realpath(wd).startswith(root + os.sep) and os.path.isdir(wd):
        outs.add(os.path.relpath(os.path.realpath(wd), root) + "/all")
    else:
        print("ALL"); sys.exit(0)
print("\n".join(sorted(outs)))' "$ROOT/build-fuzz")
  if [[ " ${outs[*]} " == *" ALL "* ]]; then
    build_cmd=(cmake --build build-fuzz -j "$JOBS")
  else
    build_cmd=(ninja -C build-fuzz -j "$JOBS" unit_tests "${outs[@]}")
  fi
  if run_logged build-fuzz "${build_cmd[@]}"; then
    step_passed build-fuzz "$t0"
    ctest_suite ctest-asan build-fuzz -L unit
    ctest_suite ctest-fuzz build-fuzz -L fuzz
  else
    step_failed build-fuzz "$t0"
  fi
fi

# 4. Lint.
banner "lint"
t0=$(date +%s)
case "$LINT_MODE" in
  off) note "$(printf '%-22s skipped (DUPLEX_LINT=off)' lint)" ;;
  *)
    if [[ -n "$lint_pid" ]]; then
      t0=$lint_t0
      wait "$lint_pid"
      lint_rc=$?
      cat "$LOGS/lint.log"
    else
      run_logged lint "$ROOT/scripts/lint.sh" --build-dir build --jobs "$JOBS" --analyzer "$ANALYZER"
      lint_rc=$?
    fi
    if [[ $lint_rc -eq 0 ]]; then
      passed=$((passed + 1))
      step_passed lint "$t0"
    elif [[ "$LINT_MODE" == warn ]]; then
      note "$(printf '%-22s findings, not counted (DUPLEX_LINT=warn; log out/test-all/lint.log)' lint)"
    else
      step_failed lint "$t0"
    fi
    ;;
esac

banner "summary ($(elapsed "$t_start") total)"
printf '%s\n' "${summary[@]}"
echo "${passed} passed, ${failed} failed"
[[ $failed -eq 0 ]]
