#!/usr/bin/env bash
# Cluster-wide persistent reservations (docs/multipath.md "Persistent reservations"): a mirrored
# volume served over iSCSI by both nodes, host A logged in through n1 and host B through n2.
#   - live (tests/system/multipath_pr.py): every change made through one node is enforced and
#     reported through the other at once: REGISTER, RESERVE, conflicts for writes, the failover
#     cluster's PREEMPT after a host failure, REGISTER AND MOVE, RELEASE, registrants-only,
#     PREEMPT AND ABORT (the preempted host's write in flight through the other node is aborted:
#     never answered, 2F/00), LUN RESET (29/03 on the other node, and a write in flight through
#     either node aborted by a reset through the other), CLEAR, with their unit attentions;
#   - the state (without APTPL: in memory only) survives the loss of n1 (SIGKILL: n2 serves it),
#     n1's return (it gets the state from n2), then the loss of n2 (n1 serves it).
# Only 127.0.0.1, free ports; every process started here is stopped by its pid.
#   DUPLEXD=path/to/duplexd tests/system/multipath_pr.sh
set -euo pipefail
DUPLEXD=${DUPLEXD:-duplexd}
HOST=127.0.0.1
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"
# shellcheck source-path=SCRIPTDIR source=mirror_lib.sh
source "$here/mirror_lib.sh"
work_dir duplex-multipath-pr
T_START=$SECONDS

MIRROR_ISCSI=1
MIRROR_POOL_SIZE=128MiB
mirror_cluster "$TEST_MIRROR_TOML"

VOL=r  # for vol() (mirror_lib.sh)
mirrored_volume r $((16 * 1024 * 1024))
target=iqn.2026-11.io.duplex:r
pr() {  # PHASE
  local rc=0
  PYTHONPATH=$here $PY "$here/multipath_pr.py" "$HOST" "${ISCSI[n1]}" "${ISCSI[n2]}" "$target" "$1" || rc=$?
  fails=$((fails + rc))
}
pr live

echo "# n1 (the owner) is lost"
kill_node n1
API=${APIS[n2]}
# A write through n2 makes it decide (n1 unreachable: it removes n1 by CAS and orders alone).
$PY "$here/mirror_failures_io.py" op "$(nbd_uri n2 r)" write 0 --timeout 30 >/dev/null 2>&1 || true
if until_vol 30 r "d['insync']['members']==['n2']"; then ok "n2 alone in the set"; else bad "n2 not alone: $(vol "d['insync']")"; fi
pr after-n1-loss

echo "# n1 returns"
start_node n1
if until_vol 60 r "$IN_SYNC"; then ok "n1 back in sync"; else bad "n1 not back in sync"; fi
pr both

echo "# n2 is lost"
kill_node n2
API=${APIS[n1]}
$PY "$here/mirror_failures_io.py" op "$(nbd_uri n1 r)" write 0 --timeout 30 >/dev/null 2>&1 || true
if until_vol 30 r "d['insync']['members']==['n1']"; then ok "n1 alone in the set"; else bad "n1 not alone: $(vol "d['insync']")"; fi
pr after-n2-loss

finish_mirror_test n1
