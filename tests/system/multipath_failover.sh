#!/usr/bin/env bash
# A node lost under load, seen by a multipath host (issue 8 item 5; docs/multipath.md "Path
# failover"): tests/system/multipath_failover.py logs in through both nodes' portals, writes on the
# ALUA-optimized path and retries a failed I/O on the other path (queueing up to 30 s when no
# path serves, as dm-multipath's queue_if_no_path). While it writes, n1 (the owner, optimized
# path) is killed with SIGKILL; after n1 is back in sync, n2 is killed. Each time: the longest
# pause between two acknowledged writes is at most 5 s, no error reaches the application, and
# every acknowledged write reads back.
# Only 127.0.0.1, free ports; every process started here is stopped by its pid.
#   DUPLEXD=path/to/duplexd tests/system/multipath_failover.sh
# FAILOVER_MIRROR_TOML replaces the test's short [mirror] timings (TEST_MIRROR_TOML), e.g. with
# "[mirror]" alone to measure the defaults (docs/multipath.md "Path failover").
set -euo pipefail
DUPLEXD=${DUPLEXD:-duplexd}
HOST=127.0.0.1
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"
# shellcheck source-path=SCRIPTDIR source=mirror_lib.sh
source "$here/mirror_lib.sh"
work_dir duplex-multipath-failover
T_START=$SECONDS
PAUSE_GOAL=5

MIRROR_ISCSI=1
MIRROR_POOL_SIZE=128MiB
mirror_cluster "${FAILOVER_MIRROR_TOML:-$TEST_MIRROR_TOML}"

VOL=f  # for vol() (mirror_lib.sh)
mirrored_volume f $((16 * 1024 * 1024))

# failover VICTIM: the client writes for 12 s; VICTIM is killed after 4 s.
failover() {
  local victim=$1 rc=0
  PYTHONPATH=$here $PY "$here/multipath_failover.py" "$HOST" "${ISCSI[n1]}" "${ISCSI[n2]}" iqn.2026-11.io.duplex:f 12 \
    >"$work/client-$victim.json" 2>"$work/client-$victim.err" &
  local client=$!
  pids+=("$client")
  sleep 4
  kill_node "$victim"
  wait "$client" || rc=$?
  local out
  out=$(cat "$work/client-$victim.json")
  echo "  client: $out"
  if [ "$rc" != 0 ] || [ -z "$out" ]; then
    bad "the client failed: $(tail -3 "$work/client-$victim.err")"
    return
  fi
  local pause errors lost acked
  pause=$(field "$out" max_pause)
  errors=$(field "$out" surfaced_errors)
  lost=$(field "$out" lost)
  acked=$(field "$out" acked)
  if [ "$errors" = 0 ]; then ok "$victim killed: no error reached the application ($(field "$out" path_failures) I/O(s) retried on the other path)"; else bad "$victim killed: $errors error(s) reached the application: $(field "$out" first_error)"; fi
  if $PY -c "import sys; sys.exit(0 if float('$pause') <= $PAUSE_GOAL else 1)"; then
    ok "$victim killed: longest pause between acknowledged writes ${pause} s (goal <= $PAUSE_GOAL s)"
  else
    bad "$victim killed: a pause of ${pause} s (goal <= $PAUSE_GOAL s)"
  fi
  if [ "$lost" = 0 ] && [ "$acked" -gt 100 ]; then ok "$victim killed: all $acked acknowledged writes read back"; else bad "$victim killed: $lost of $acked acknowledged writes lost: $(field "$out" bad_blocks)"; fi
  echo "$victim pause=$pause errors=$errors retried=$(field "$out" path_failures) acked=$acked lost=$lost" >>"$work/summary"
}

echo "# n1 (owner, optimized path) killed under load"
failover n1
API=${APIS[n2]}
start_node n1
if until_vol 60 f "$IN_SYNC and d['insync']['owner']=='n1'"; then ok "n1 back in sync and owner"; else bad "n1 not back: $(vol "d['insync']")"; fi
API=${APIS[n1]}
echo "# n2 (non-optimized path) killed under load"
failover n2
echo "summary:"
cat "$work/summary"
finish_mirror_test n1
