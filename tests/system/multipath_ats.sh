#!/usr/bin/env bash
# Cluster-wide COMPARE AND WRITE (docs/multipath.md "ATS"): a mirrored volume served over iSCSI by
# both nodes; two hosts run a VMware-ATS-style lock loop on one block, host 1 through n1 (the
# owner) and host 2 through n2 (which forwards to it), for ATS_SECONDS (default 8) seconds
# (tests/system/multipath_ats.py): each count is won by exactly one host, no win is lost, both
# nodes read the same record; then the online verify finds the replicas equal. Also: both nodes'
# NBD exports of the volume advertise multi-conn (docs/nbd.md).
# Only 127.0.0.1, free ports; every process started here is stopped by its pid.
#   DUPLEXD=path/to/duplexd tests/system/multipath_ats.sh
set -euo pipefail
DUPLEXD=${DUPLEXD:-duplexd}
HOST=127.0.0.1
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"
# shellcheck source-path=SCRIPTDIR source=mirror_lib.sh
source "$here/mirror_lib.sh"
work_dir duplex-multipath-ats
T_START=$SECONDS

MIRROR_ISCSI=1
MIRROR_POOL_SIZE=128MiB
mirror_cluster "$TEST_MIRROR_TOML"

mirrored_volume a $((16 * 1024 * 1024))

rc=0
PYTHONPATH=$here $PY "$here/multipath_ats.py" "$HOST" "${ISCSI[n1]}" "${ISCSI[n2]}" iqn.2026-11.io.duplex:a \
  "${ATS_SECONDS:-8}" || rc=$?
fails=$((fails + rc))

# NBD multi-conn across nodes (docs/nbd.md): both exports advertise it, since a flush through
# either node flushes both replicas.
for n in n1 n2; do
  if nbdinfo --can multi-conn "$(nbd_uri "$n" a)" 2>/dev/null; then
    ok "the NBD export of a on $n advertises multi-conn"
  else
    bad "the NBD export of a on $n does not advertise multi-conn: $(nbdinfo --json "$(nbd_uri "$n" a)" 2>&1 | grep -i multi)"
  fi
done

VOL=a  # for vol() (mirror_lib.sh)
req=$(api POST /v1/volumes/a/verify '{}' | $PY -c "import json,sys; print(json.load(sys.stdin)['verify_request'])" || echo 0)
if until_vol 60 a "any(x.get('role')=='owner' and x.get('verify_request')==$req and x.get('verify_state')=='done' and x.get('verify_checked',0)>=d['size'] and x.get('verify_mismatches')==0 for x in d['replicas'])"; then
  ok "online verify: the replicas are equal after the lock loop"
else
  bad "online verify did not find the replicas equal: $(vol "d['replicas']")"
fi
if [ "$(vol "d['insync']['generation']")" = 1 ]; then
  ok "no in-sync set change during the test (generation 1)"
else
  bad "the in-sync set changed: $(vol "d['insync']")"
fi

finish_mirror_test n2 n1
