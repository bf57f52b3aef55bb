#!/usr/bin/env bash
# libiscsi's reservation conformance tests with the two initiators on different nodes (issue 8
# item 3; docs/conformance.md "Reservations across nodes"): a two-node cluster serves a mirrored
# volume over iSCSI, and iscsi-test-cu gets both nodes' URLs for the same LU. With two URLs it
# logs the first in as its initiator 1 and the second as initiator 2 (test-tool/iscsi-test-cu.c,
# suite_init), and every test that needs a second I_T nexus uses the second URL
# (iscsi-multipath.c, mpath_sd2_get_or_clone): each PERSISTENT RESERVE test then registers,
# reserves, preempts and checks access through n1 and n2 at once, and MultipathIO.Reset resets
# through one node and expects the unit attention through the other.
# Two runs: n1 first (initiator 2 on n2, the non-owner) and n2 first (initiator 2 on n1, the
# owner). Fails on any failed test or a run that does not reach its end; prints the counts.
# Only 127.0.0.1, free ports; every process started here is stopped by its pid.
#   DUPLEXD=path/to/duplexd tests/system/multipath_pr_conformance.sh
# Environment: PR_CONFORMANCE_TESTS (default below; iscsi-test-cu -t, comma-separated),
#   KEEP_RESULTS=DIR (copy iscsi-test-cu's logs there).
set -euo pipefail
DUPLEXD=${DUPLEXD:-duplexd}
HOST=127.0.0.1
here=$(cd "$(dirname "$0")" && pwd)
command -v iscsi-test-cu >/dev/null || { echo "FAIL - iscsi-test-cu not found (scripts/install-deps.sh)"; exit 1; }
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"
# shellcheck source-path=SCRIPTDIR source=mirror_lib.sh
source "$here/mirror_lib.sh"
work_dir duplex-multipath-pr-cu
T_START=$SECONDS
# Every suite that uses a second nexus or a reservation (RESERVE(6) is not implemented: its 7 tests
# skip), and MultipathIO (reset, COMPARE AND WRITE and I/O through both nodes).
TESTS=${PR_CONFORMANCE_TESTS:-SCSI.PrinReadKeys,SCSI.PrinServiceactionRange,SCSI.PrinReportCapabilities,SCSI.ProutRegister,SCSI.ProutReserve,SCSI.ProutClear,SCSI.ProutPreempt,SCSI.Reserve6,SCSI.MultipathIO}
INIT1=iqn.2026-11.io.duplex.test:cu-init1
INIT2=iqn.2026-11.io.duplex.test:cu-init2

MIRROR_ISCSI=1
MIRROR_POOL_SIZE=256MiB
mirror_cluster "$TEST_MIRROR_TOML"
# One volume per run: MultipathIO.CompareAndWrite zeroes blocks 0-255 but compares block 256 too
# (its loop runs to n inclusive, libiscsi 1.19 and upstream), which holds what the previous run
# wrote there.
mirrored_volume cu1 $((64 * 1024 * 1024))
mirrored_volume cu2 $((64 * 1024 * 1024))
url() { echo "iscsi://$HOST:${ISCSI[$1]}/iqn.2026-11.io.duplex:$2/0"; }

# run FIRST SECOND VOLUME: iscsi-test-cu with initiator 1 through FIRST, initiator 2 through SECOND.
logins() { grep -c "event=iscsi.login conn=.* initiator=$2 " "$work/$1.log" || true; }
run() {
  local log=$work/cu-$1-$2.log rc=0 t0=$SECONDS
  local before_first before_second
  before_first=$(logins "$1" "$INIT2")
  before_second=$(logins "$2" "$INIT2")
  # Line-buffered, so that each test's messages follow its "Test:" line (skips are logged there).
  timeout 300 stdbuf -oL -eL iscsi-test-cu -d -i "$INIT1" -I "$INIT2" -t "$TESTS" "$(url "$1" "$3")" \
    "$(url "$2" "$3")" >"$log" 2>&1 || rc=$?
  echo "# iscsi-test-cu, initiator 1 through $1, initiator 2 through $2: exit $rc, $((SECONDS - t0)) s"
  $PY - "$log" "$1" "$2" <<'PY' || bad "iscsi-test-cu with initiator 1 through $1 and initiator 2 through $2"
import re, sys
log, first, second = sys.argv[1:4]
text = open(log, errors="replace").read().splitlines()
tests, cur = [], None
summary = None
for line in text:
    m = re.match(r"^Suite: (\S+)", line)
    if m:
        suite = m.group(1)
        continue
    m = re.match(r"^  Test: (.+?) \.\.\.(.*)$", line)
    if m:
        cur = {"name": f"{suite}.{m.group(1)}", "status": "pass", "why": ""}
        tests.append(cur)
        line = m.group(2)
    m = re.match(r"^\s+tests\s+(\d+)\s+(\d+)\s+(\S+)\s+(\d+)\s+(\d+)", line)
    if m:
        summary = {"ran": int(m.group(2)), "failed": int(m.group(4))}
        cur = None
        continue
    if cur is None:
        continue
    if "FAILED" in line or re.match(r"^\s+\d+\. \S+:\d+\s+- ", line):
        cur["status"] = "fail"
        cur["why"] = cur["why"] or line.strip()
    elif "[SKIPPED]" in line and cur["status"] == "pass":
        cur["status"] = "skip"
        cur["why"] = line.strip()
counts = {s: sum(t["status"] == s for t in tests) for s in ("pass", "fail", "skip")}
print(f"  {len(tests)} tests: {counts['pass']} pass, {counts['fail']} fail, {counts['skip']} skip")
for t in tests:
    if t["status"] != "pass":
        print(f"  {t['status']} - {t['name']}: {t['why'][:160]}")
# A failed test's own messages (CI shows the output, not the log).
shown, cur = 0, None
for line in text:
    m = re.match(r"^  Test: (.+?) \.\.\.", line)
    if m:
        cur = m.group(1)
    if cur and any(t["status"] == "fail" and t["name"].endswith("." + cur) for t in tests) and shown < 40:
        print("    | " + line[:200])
        shown += 1
ok = summary is not None and summary["ran"] == len(tests) and len(tests) > 0 and counts["fail"] == 0
if summary is None or summary["ran"] != len(tests):
    print(f"  the suite did not run to its end (CUnit summary {summary}, {len(tests)} tests seen)")
    print("\n".join(text[-20:]))
sys.exit(0 if ok else 1)
PY
  # The point of the run: initiator 2's sessions went through the other node, and only there.
  local first=$(($(logins "$1" "$INIT2") - before_first)) second=$(($(logins "$2" "$INIT2") - before_second))
  if [ "$first" -eq 0 ] && [ "$second" -gt 0 ]; then
    ok "initiator 2 logged in $second times, all through $2"
  else
    bad "initiator 2 logged in $first times through $1 and $second through $2"
  fi
}

cleanup_hook() { if [ -n "${KEEP_RESULTS:-}" ]; then mkdir -p "$KEEP_RESULTS" && cp "$work"/cu-*.log "$work"/n?.log "$KEEP_RESULTS"/ 2>/dev/null; fi; return 0; }
run n1 n2 cu1
run n2 n1 cu2
# Both nodes still serve the volumes in step after the runs (no shared-state push failed).
for v in cu1 cu2; do
  if until_vol 10 "$v" "$IN_SYNC"; then ok "$v: both replicas still in sync"; else bad "$v: replicas not in sync: $(VOL=$v vol "d['insync']")"; fi
done
finish_mirror_test n1 n2
