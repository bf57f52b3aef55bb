#!/usr/bin/env bash
# Growing a mirrored volume (docs/mirror.md "Growing a mirrored volume") with a real etcd, two
# duplexd (n1 in the preferred site a, n2 in b; the mirror link through link_proxy.py) and real
# clients:
#   - both nodes up: `duplexctl volume grow` returns once both replicas serve the new size; an
#     iSCSI session through each node, open across the grow, hears 2A/09 and reads the new
#     capacity (tests/system/mirror_grow.py); iscsi-readcapacity16 and nbdinfo --size (new
#     connections) through both nodes say the new size; libnbd writes past the old end through
#     both nodes read back through both; no in-sync decision was needed;
#   - n2 stopped: a grow through the API takes n2 out of the in-sync set (as a write would) and
#     n1 serves the new size alone; `volume show` says n2 has not committed it; a write past the
#     old end through n1; n2 restarts, its node grows its replica, n1 grows n2's metadata before
#     the resync, which copies only what n2 missed (not the volume); n2 reads the new region;
#   - n2, then n1 (twice), killed (SIGKILL) in the middle of a grow over a slowed link, restarted:
#     both replicas end in sync at the new size, incremental resync, old and new data readable.
# Only 127.0.0.1, free ports; every process started here is stopped by its pid.
#   DUPLEXD=path/to/duplexd DUPLEXCTL=path/to/duplexctl tests/system/mirror_grow.sh
set -euo pipefail
DUPLEXD=${DUPLEXD:-duplexd}
DUPLEXCTL=${DUPLEXCTL:-duplexctl}
HOST=127.0.0.1
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"
# shellcheck source-path=SCRIPTDIR source=mirror_lib.sh
source "$here/mirror_lib.sh"
work_dir duplex-mirror-grow
T_START=$SECONDS
MiB=$((1024 * 1024))

MIRROR_ISCSI=1
MIRROR_POOL_SIZE=256MiB
mirror_cluster "$TEST_MIRROR_TOML"
VOL=m
target=iqn.2026-11.io.duplex:m
ctl() { "$DUPLEXCTL" --api "$API" --token "$TOKEN" "$@"; }
# nbdio N write|read OFFSET LENGTH SEED: a write of LENGTH bytes (+ flush) through node N's NBD
# export, or a read compared with what that write wrote; prints "ok" or the error.
nbdio() {
  $PY - "$(nbd_uri "$1" m)" "$2" "$3" "$4" "$5" <<'PYEOF' 2>&1
import sys
import nbd
uri, op, off, length, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
data = bytes((i * 7 + seed) & 0xFF for i in range(length))
h = nbd.NBD()
h.connect_uri(uri)
if op == "write":
    h.pwrite(data, off)
    h.flush()
    print("ok")
else:
    got = h.pread(length, off)
    print("ok" if got == data else f"differs at {next(i for i in range(length) if got[i] != data[i])}")
h.shutdown()
PYEOF
}
nbd_size() { nbdinfo --size "$(nbd_uri "$1" m)" 2>&1 || true; }
# until_nbd_size N BYTES: a new NBD connection to node N sees BYTES within 10 s (the export is
# published again once the mirror's report shows the grow); prints the size last seen.
until_nbd_size() {
  local s
  for _ in $(seq 50); do
    s=$(nbd_size "$1")
    [ "$s" = "$2" ] && break
    sleep 0.2
  done
  echo "$s"
}
rc16_size() { iscsi-readcapacity16 -s "iscsi://$HOST:${ISCSI[$1]}/$target/0" 2>&1 | tr -dc '0-9' || true; }

mirrored_volume m $((32 * MiB))
if [ "$(nbdio n1 write 0 65536 1)" = ok ]; then
  ok "64 KiB written through n1"
else
  bad "write through n1 failed"
fi
gen0=$(vol "d['insync']['generation']")

# --- 1. both nodes up and linked ---------------------------------------------------------------
rc=0
PYTHONPATH=$here $PY "$here/mirror_grow.py" "$HOST" "${ISCSI[n1]}" "${ISCSI[n2]}" "$target" \
  $((32 * MiB)) $((64 * MiB)) -- "$DUPLEXCTL" --api "$API" --token "$TOKEN" volume grow m 64MiB || rc=$?
fails=$((fails + rc))
if [ "$(vol "[r[n].get('size') for n in ('n1','n2')]")" = "[$((64 * MiB)), $((64 * MiB))]" ]; then
  ok "both replicas report 64 MiB served"
else
  bad "replica sizes after the grow: $(vol "[(n, r[n].get('size'), r[n].get('grow')) for n in r]")"
fi
for n in n1 n2; do
  s=$(until_nbd_size "$n" $((64 * MiB)))
  if [ "$s" = $((64 * MiB)) ]; then ok "nbdinfo --size through $n: $s"; else bad "nbdinfo --size through $n: $s"; fi
  s=$(rc16_size "$n")
  if [ "$s" = $((64 * MiB)) ]; then ok "iscsi-readcapacity16 -s through $n: $s"; else bad "iscsi-readcapacity16 through $n: $s"; fi
  if grep -q "event=mirror.grown volume=m node=$n .*to=$((64 * MiB))" "$work/$n.log"; then
    ok "$n logged event=mirror.grown to 64 MiB"
  else
    bad "$n: no event=mirror.grown"
  fi
done
r1=$(nbdio n1 write $((40 * MiB)) 65536 2)
r2=$(nbdio n2 write $((64 * MiB - 8192)) 8192 3)
if [ "$r1" = ok ] && [ "$r2" = ok ]; then ok "libnbd writes past the old end through n1 and through n2"; else bad "writes past the old end: $r1 / $r2"; fi
for n in n1 n2; do
  a=$(nbdio "$n" read $((40 * MiB)) 65536 2)
  b=$(nbdio "$n" read $((64 * MiB - 8192)) 8192 3)
  c=$(nbdio "$n" read 0 65536 1)
  if [ "$a $b $c" = "ok ok ok" ]; then ok "read back through $n (both new writes and the old data)"; else bad "read through $n: $a / $b / $c"; fi
done
if [ "$(vol "d['insync']['generation']")" = "$gen0" ]; then
  ok "the grow needed no in-sync decision (generation $gen0)"
else
  bad "the in-sync set changed during a grow with both nodes up: $(vol "d['insync']")"
fi

# --- 2. n2 away: n1 grows alone, n2 grows before its resync ------------------------------------
if stop_node n2; then ok "n2 stopped (SIGTERM)"; else bad "n2 exit status on SIGTERM"; fi
api PATCH "/v1/volumes/m?wait=false" "{\"size\": $((96 * MiB))}" >/dev/null
if until_vol 30 m "d['insync']['members']==['n1'] and r['n1'].get('size')==$((96 * MiB))"; then
  ok "n1 removed n2 from the in-sync set and serves 96 MiB alone: $(vol "d['insync']['reason']")"
else
  bad "n1 did not grow alone: $(vol "(d['insync'], r['n1'].get('size'), r['n1'].get('grow'))")"
fi
s=$(until_nbd_size n1 $((96 * MiB)))
if [ "$s" = $((96 * MiB)) ]; then ok "nbdinfo --size through n1: 96 MiB"; else bad "nbdinfo --size through n1: $s"; fi
shown=$(ctl volume show m 2>&1 || true)
if echo "$shown" | grep -q "n2: serves 64 MiB of 96 MiB: grow not committed yet"; then
  ok "duplexctl volume show m: n2 has not committed the grow"
else
  bad "volume show during the grow: $shown"
fi
r=$(nbdio n1 write $((90 * MiB)) 65536 4)
if [ "$r" = ok ]; then ok "a write past 64 MiB through n1 while n2 is away"; else bad "write through n1: $r"; fi
start_node n2
if until_vol 40 m "$IN_SYNC and r['n2'].get('size')==$((96 * MiB))"; then
  ok "n2 back: grown to 96 MiB, resynced, in the in-sync set"
else
  bad "n2 did not come back grown: $(vol "[(n, r[n].get('state'), r[n].get('size'), r[n].get('grow'), r[n].get('last_event')) for n in r]")"
fi
done_bytes=$(vol "r['n1'].get('resync_bytes_done', 0)")
if [ "$done_bytes" != "?" ] && [ "$done_bytes" -gt 0 ] && [ "$done_bytes" -lt $((16 * MiB)) ]; then
  ok "the resync copied $done_bytes bytes: what n2 missed, not the volume"
else
  bad "resync bytes copied: $done_bytes"
fi
a=$(nbdio n2 read $((90 * MiB)) 65536 4)
b=$(nbdio n2 read $((40 * MiB)) 65536 2)
if [ "$a $b" = "ok ok" ]; then ok "n2 reads the new region (written while it was away, and before)"; else bad "n2 reads: $a / $b"; fi
for n in n1 n2; do
  s=$(until_nbd_size "$n" $((96 * MiB)))
  if [ "$s" = $((96 * MiB)) ]; then ok "nbdinfo --size through $n: 96 MiB"; else bad "nbdinfo --size through $n: $s"; fi
done
if grep -q "event=mirror.grown volume=m node=n2 .*to=$((96 * MiB))" "$work/n2.log"; then
  ok "n2 logged its grow to 96 MiB (ordered by n1 before the resync)"
else
  bad "n2: no grow to 96 MiB in its log"
fi

# --- 3. a node killed in the middle of a grow ----------------------------------------------------
# The link is slowed (200 ms each way) so that the kill lands while the owner's `grow` is between
# the nodes: n2 killed after it may have grown but before n1 heard, n1 killed after n2 grew and
# before n1 committed. The killed node restarts at once. Either way both replicas must end at the
# new size, in sync, with every byte written before and the new region usable through both, and
# the crash must cost an incremental resync, not a full one.
# grow_kill NODE DELAY_S SIZE_MIB
grow_kill() {
  local node=$1 delay=$2 size=$(($3 * MiB)) before t
  before=$(grep -c "event=mirror.grow_requested volume=m node=n1 .*target=$size" "$work/n1.log" || true)
  proxy "delay 200" >/dev/null
  api PATCH "/v1/volumes/m?wait=false" "{\"size\": $size}" >/dev/null
  for _ in $(seq 200); do
    [ "$(grep -c "event=mirror.grow_requested volume=m node=n1 .*target=$size" "$work/n1.log" || true)" -gt "$before" ] && break
    sleep 0.01
  done
  sleep "$delay"
  kill_node "$node"
  t=$(now)
  # Where the kill landed, for the report: which replicas had committed the new size by then.
  local at="" n
  for n in n1 n2; do
    grep -q "event=mirror.grown volume=m node=$n .*to=$size" "$work/$n.log" && at+=" $n"
  done
  echo "# $node killed with${at:- neither} grown to $3 MiB"
  proxy "delay 0" >/dev/null
  start_node "$node"
  if until_vol 60 m "$IN_SYNC and all(r[n].get('size')==$size for n in ('n1','n2'))"; then
    ok "$node killed ${delay}s into a grow to $3 MiB: both replicas serve it, in sync, $(since "$t") s after the kill"
  else
    bad "$node killed into a grow: $(vol "[(n, r[n].get('state'), r[n].get('size'), r[n].get('grow'), r[n].get('last_event')) for n in r]")"
  fi
  local copied
  copied=$(vol "max(r[n].get('resync_bytes_done', 0) for n in r)")
  # What may differ is what the other node missed plus, for a crashed owner, its activity log's
  # extents (4 MiB each): far less than the volume.
  if [ "$copied" != "?" ] && [ "$copied" -lt $((size / 2)) ]; then
    ok "$node killed into a grow: the resync copied $copied bytes of $size, not the volume"
  else
    bad "$node killed into a grow: the resync copied $copied bytes"
  fi
  local a b c d
  for n in n1 n2; do
    s=$(until_nbd_size "$n" "$size")
    [ "$s" = "$size" ] || bad "nbdinfo --size through $n after $node was killed into a grow: $s"
  done
  r1=$(nbdio n1 write $((size - 131072)) 65536 $(($3 + 1)))
  r2=$(nbdio n2 write $((size - 65536)) 65536 $(($3 + 2)))
  [ "$r1 $r2" = "ok ok" ] || bad "writes at the new end through n1 / n2: $r1 / $r2"
  for n in n1 n2; do
    a=$(nbdio "$n" read 0 65536 1)
    b=$(nbdio "$n" read $((90 * MiB)) 65536 4)
    c=$(nbdio "$n" read $((size - 131072)) 65536 $(($3 + 1)))
    d=$(nbdio "$n" read $((size - 65536)) 65536 $(($3 + 2)))
    if [ "$a $b $c $d" = "ok ok ok ok" ]; then
      ok "$node killed into a grow: $n reads the old data and both new writes"
    else
      bad "$node killed into a grow: reads through $n: $a / $b / $c / $d"
    fi
  done
}
grow_kill n2 0.3 128   # n2 has grown, its answer is on the way
grow_kill n1 0.35 160  # n2 has grown, n1 has not committed
grow_kill n1 0.05 192  # the grow has not reached n2

finish_mirror_test n2 n1
