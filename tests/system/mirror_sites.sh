#!/usr/bin/env bash
# The failure-table rows "whole site partition" and "loss of a whole site" (../shared/DESIGN.md;
# docs/mirror.md "Failures and their outcome") with a real 3-member etcd: ea in site a beside n1,
# eb in site b beside n2, ew the witness. n1 talks to ea only, n2 to eb and ew; ea's etcd peer
# traffic and the mirror link go through link_proxy.py (mirror_lib.sh, MIRROR_ETCD_MEMBERS=3).
# The volume prefers site a, the side that loses both times, so the rows show that the etcd
# majority beats the preference:
#   1. site partition: site a (n1 + ea) cut from site b and the witness while a client writes
#      through n2: n2 goes on after removing n1 (eb + ew are a majority); n1, the preferred owner,
#      cannot decide: its writes fail after freeze_timeout, none is acknowledged, its reads fail;
#      heal: ea rejoins, n1 is resynced incrementally, both serve the same data;
#   2. site loss: kill -9 of n1 and ea together during writes through n2: n2 goes on within a few
#      seconds, no acknowledged write lost; ea and n1 return: back in sync.
# Only 127.0.0.0/8 (etcd's peer proxies on a random 127.x.y.z), free ports; every process started
# here is stopped by its pid.
#   DUPLEXD=path/to/duplexd tests/system/mirror_sites.sh
set -euo pipefail
DUPLEXD=${DUPLEXD:-duplexd}
HOST=127.0.0.1
here=$(cd "$(dirname "$0")" && pwd)
unshare -m --propagation private true 2>/dev/null || { echo "SKIP - cannot unshare a mount namespace (needs root)"; exit 77; }
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"
# shellcheck source-path=SCRIPTDIR source=mirror_lib.sh
source "$here/mirror_lib.sh"
work_dir duplex-mirror-sites
IO="$PY $here/mirror_failures_io.py"
BS=4096
SIZE=$((64 * 1024 * 1024))
T_START=$SECONDS

MIRROR_ETCD_MEMBERS=3
mirror_cluster "$TEST_MIRROR_TOML"
FREEZE=8
# n1 is cut off in both rows: ask n2's API.
API=${APIS[n2]}

VOL=s  # for vol() (mirror_lib.sh)
op() { $IO op "$(nbd_uri "$1" s)" "$2" $(($3 * BS)) --timeout "${4:-20}" || true; }
# writer TAG START: tagged writes through n2 until $work/wTAG.stop exists (pid in $!).
writer() {
  $IO write "$(nbd_uri n2 s)" "$work/w$1.log" --start "$2" --count 512 --seconds 60 --pause 0.004 --stop "$work/w$1.stop" \
    --tag "$1" >"$work/w$1.out" 2>&1 &
  pids+=($!)
}
# writer_done TAG ROW PID: stops the writer, which must have seen no error.
writer_done() {
  touch "$work/w$1.stop"
  wait "$3" || true
  local s
  s=$(tail -1 "$work/w$1.out")
  if [ "$(field "$s" errors)" = 0 ] && [ "$(field "$s" acked)" -gt 0 ]; then
    ok "$2: the writer through n2 saw no error (longest wait for an acknowledgement $(field "$s" max_gap)s): $s"
  else
    bad "$2: the writer through n2 saw errors: $s"
  fi
}

if [ "$(ectl member list 2>/dev/null | wc -l)" = 3 ]; then ok "etcd: 3 members (ea, eb, ew)"; else bad "etcd members: $(ectl member list 2>&1)"; fi
api POST /v1/volumes "{\"name\": \"s\", \"size\": $SIZE, \"replicas\": 2, \"preferred_site\": \"a\"}" >/dev/null
if until_vol 60 s "$IN_SYNC and d['insync']['owner']=='n1'"; then
  ok "volume s ($SIZE bytes, preferred site a): both replicas in sync, n1 owns it"
else
  bad "volume s never in sync with n1 as owner"
  exit 1
fi
for n in n1 n2; do
  for _ in $(seq 100); do nbdinfo --size "$(nbd_uri $n s)" >/dev/null 2>&1 && break; sleep 0.1; done
done

# ---------------------------------------------------------------------------------------------
echo "# 1. site partition: site a (n1, the preferred owner, and etcd member ea) cut from site b and the witness"
gen=$(vol "d['insync']['generation']")
writer 1 0
w=$!
until_acks "$work/w1.log" 100 20 || bad "row 1: the writer through n2 did not start: $(cat "$work/w1.out")"
before=$(acks "$work/w1.log")
t0=$(now)
site_a cut
op n1 write 1000 40 >"$work/r1w" &
ow=$!
if until_acks "$work/w1.log" $((before + 50)) 30; then
  ok "row 1: writes through n2 go on $(since "$t0")s after the cut"
else
  bad "row 1: writes through n2 did not go on within 30 s of the cut"
fi
if until_vol 20 s "d['insync']['members']==['n2'] and d['insync']['generation']>$gen"; then
  ok "row 1: n2 removed n1 though n1 is in the preferred site (generation $(vol "d['insync']['generation']"): $(vol "d['insync']['reason']"))"
else
  bad "row 1: n1 not removed: $(vol "d['insync']")"
fi
wait "$ow" || true
r=$(cat "$work/r1w")
e=$(echo "$r" | awk '{print $2}')
if [ "${r%% *}" = error ] && $PY -c "import sys; sys.exit(0 if $FREEZE - 1 <= $e <= $FREEZE + 6 else 1)"; then
  ok "row 1: a write through n1 (no etcd majority) fails after ${e}s (freeze_timeout ${FREEZE}s): $r"
else
  bad "row 1: a write through n1: $r (must fail within the freeze bound, never be acknowledged alone)"
fi
r=$(op n1 read 1001 10)
if [ "${r%% *}" = error ]; then ok "row 1: n1 refuses reads too: $r"; else bad "row 1: n1 served a read alone: $r"; fi
if grep -q "event=mirror.freeze_timeout volume=s node=n1" "$work/n1.log"; then
  ok "row 1: n1 logged $(grep -o 'event=mirror.freeze_timeout volume=s node=n1.*' "$work/n1.log" | head -1 | cut -c1-200)"
else
  bad "row 1: no event=mirror.freeze_timeout on n1"
fi
site_a heal
if until_vol 60 s "$IN_SYNC"; then
  ok "row 1: healed: back in sync (generation $(vol "d['insync']['generation']"), owner $(vol "d['insync']['owner']"))"
else
  bad "row 1: not back in sync after the heal"
fi
writer_done 1 "row 1" "$w"
resync=$(grep "event=mirror.resync_start peer=n1 bytes=[0-9]* volume=s node=n2" "$work/n2.log" | tail -1 | grep -o "bytes=[0-9]*" | cut -d= -f2 || true)
if [ -n "$resync" ] && [ "$resync" -gt 0 ] && [ "$resync" -le $((SIZE / 8)) ]; then
  ok "row 1: incremental resync: n2 copied $resync bytes of $SIZE to n1"
else
  bad "row 1: resync not incremental: n2's resync_start bytes='$resync', volume $SIZE"
fi
for n in n1 n2; do
  if out=$($IO check "$(nbd_uri $n s)" "$work/w1.log" --tag 1 2>&1); then
    ok "row 1: no acknowledged write lost, read through $n: $out"
  else
    bad "row 1: read through $n: $out"
  fi
done
r1=$(op n1 write 1002 20)
r2=$(op n2 write 1003 20)
if [ "${r1%% *}" = ok ] && [ "${r2%% *}" = ok ]; then ok "row 1: both nodes serve writes again ($r1 / $r2)"; else bad "row 1: after the heal: n1 $r1, n2 $r2"; fi

# ---------------------------------------------------------------------------------------------
echo "# 2. site loss: kill -9 of n1 and etcd member ea together"
until_vol 30 s "$IN_SYNC" >/dev/null || bad "row 2: not in sync before the fault"
gen=$(vol "d['insync']['generation']")
writer 2 2048
w=$!
until_acks "$work/w2.log" 100 20 || bad "row 2: the writer through n2 did not start: $(cat "$work/w2.out")"
before=$(acks "$work/w2.log")
t0=$(now)
kill_node n1
kill_etcd_member a
if until_acks "$work/w2.log" $((before + 50)) 30; then
  resumed=$(since "$t0")
  if $PY -c "import sys; sys.exit(0 if $resumed <= 10 else 1)"; then
    ok "row 2: writes through n2 go on ${resumed}s after site a was lost"
  else
    bad "row 2: writes through n2 resumed only ${resumed}s after site a was lost"
  fi
else
  bad "row 2: writes through n2 did not go on within 30 s of the site loss"
fi
if until_vol 20 s "d['insync']['members']==['n2'] and d['insync']['generation']>$gen"; then
  ok "row 2: n2 removed n1 (generation $(vol "d['insync']['generation']"): $(vol "d['insync']['reason']"))"
else
  bad "row 2: n1 not removed: $(vol "d['insync']")"
fi
until_acks "$work/w2.log" $(($(acks "$work/w2.log") + 100)) 20 || true
writer_done 2 "row 2" "$w"
if out=$($IO check "$(nbd_uri n2 s)" "$work/w2.log" --tag 2 2>&1); then
  ok "row 2: no acknowledged write lost, read through n2: $out"
else
  bad "row 2: read through n2: $out"
fi
start_etcd_member a
start_node n1
if until_vol 60 s "$IN_SYNC"; then
  ok "row 2: site a returned: back in sync (owner $(vol "d['insync']['owner']"))"
else
  bad "row 2: not back in sync after site a returned"
fi
if out=$($IO check "$(nbd_uri n1 s)" "$work/w2.log" --tag 2 2>&1); then
  ok "row 2: n1 serves every write acknowledged while it was gone: $out"
else
  bad "row 2: read through n1: $out"
fi

finish_mirror_test n2 n1
