#!/usr/bin/env bash
# One LUN, two paths (docs/multipath.md): a mirrored volume served over iSCSI by both nodes of a
# two-node cluster (n1 in the preferred site a, n2 in b; the mirror link through link_proxy.py),
# one session through each portal, kept open throughout (tests/system/multipath_identity.py):
#   - identity: VPD 0x80 serial, VPD 0x83 NAA and the capacity are equal through both nodes; the
#     relative target port and target port group differ;
#   - ALUA: REPORT TARGET PORT GROUPS through either node shows n1 active/optimized (preferred),
#     n2 active/non-optimized;
#   - fence: the link cut, n1 removes n2 from the in-sync set: n2 answers 02/04/0C (target port
#     unavailable) at once after a 2A/06 unit attention, its RTPG says so, n1's session hears
#     2A/06 and goes on writing;
#   - heal: n2 is resynced, serves again after 2A/06, reads what n1 wrote meanwhile;
#   - the preferred node drained (planned maintenance): 2A/06 on both sessions, n2 active/optimized,
#     n1 02/04/0C; resumed: n1 active/optimized again after 2A/06, reads what n2 wrote meanwhile;
#   - delete: both sessions get 05/25/00 (LOGICAL UNIT NOT SUPPORTED) and INQUIRY says no LU.
# Only 127.0.0.1, free ports; every process started here is stopped by its pid.
#   DUPLEXD=path/to/duplexd tests/system/multipath_identity.sh
set -euo pipefail
DUPLEXD=${DUPLEXD:-duplexd}
HOST=127.0.0.1
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"
# shellcheck source-path=SCRIPTDIR source=mirror_lib.sh
source "$here/mirror_lib.sh"
work_dir duplex-multipath
T_START=$SECONDS

MIRROR_ISCSI=1
MIRROR_POOL_SIZE=128MiB
mirror_cluster "$TEST_MIRROR_TOML"

api POST /v1/volumes "{\"name\": \"m\", \"size\": $((32 * 1024 * 1024)), \"replicas\": 2, \"preferred_site\": \"a\"}" >/dev/null
if until_vol 20 m "$IN_SYNC"; then ok "mirrored volume m in sync on n1 and n2"; else bad "m not in sync"; fi
target=iqn.2026-11.io.duplex:m
for n in n1 n2; do
  # libiscsi's own reading of the identity page, as a second opinion on the Python initiator's.
  if out=$(iscsi-inq -e 1 -c 131 "iscsi://$HOST:${ISCSI[$n]}/$target/0" 2>&1) && echo "$out" | grep -aqi "naa"; then
    echo "$out" >"$work/inq83.$n"
    echo "$out" | grep -a -i -A2 "Type:(3) NAA" | grep -a -iv "type" >"$work/naa.$n"
  else
    bad "iscsi-inq -e 1 -c 131 through $n: $out"
  fi
done
if [ -s "$work/naa.n1" ] && cmp -s "$work/naa.n1" "$work/naa.n2"; then
  ok "iscsi-inq (libiscsi) reads the same NAA designator through both nodes"
else
  bad "iscsi-inq NAA differs: $(od -An -c "$work/naa.n1" "$work/naa.n2" 2>&1 | tr -s ' \n' ' ')"
fi

rc=0
PYTHONPATH=$here $PY "$here/multipath_identity.py" "$HOST" "${ISCSI[n1]}" "${ISCSI[n2]}" "$target" \
  "$CONTROL_PORT" "$API" "$TOKEN" m || rc=$?
fails=$((fails + rc))

finish_mirror_test n2 n1
