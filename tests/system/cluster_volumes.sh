#!/usr/bin/env bash
# duplexd applying the volume catalogue, against a real etcd on loopback. Intents are written with
# catalogue-tool (cluster::Catalogue, as the API will); the node creates, grows, snapshots, exports
# and deletes in its pool and reports under replicas/. Checked with real clients (nbdinfo, nbdsh,
# iscsi-ls): the report is in-sync and the volume ready; its size, data, growth and snapshot are
# served over NBD; its iSCSI targets appear; an export record hides it from NBD; a kill -9 and a
# restart serve it again with its data; with etcd frozen past the node's lease, no volume can be
# created but NBD and iSCSI I/O on v1 go on (no quorum stops decisions, not I/O); a clone of a
# snapshot is served with the snapshot's data and the catalogue's uuid; snapshot and volume deletes remove the exports and every key.
#   DUPLEXD=path/to/duplexd CATALOGUE_TOOL=path/to/catalogue-tool tests/system/cluster_volumes.sh
set -euo pipefail
DUPLEXD=${DUPLEXD:-duplexd}
TOOL=${CATALOGUE_TOOL:-catalogue-tool}
HOST=127.0.0.18
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
work_dir duplex-cvol
NBD_PORT=$(free_port)
ISCSI_PORT=$(free_port)
start_etcd
ectl() { ETCDCTL_API=3 etcdctl --endpoints="$ETCD" --command-timeout=2s "$@"; }
for _ in $(seq 100); do ectl endpoint health >/dev/null 2>&1 && break; sleep 0.1; done
ectl endpoint health >/dev/null 2>&1 || { echo "FAIL - etcd did not start"; tail "$work/etcd.log"; exit 1; }

cat >"$work/d.toml" <<TOML
state_dir = "$work/state"
[node]
name = "n1"
site = "a"
[listen]
nbd = "$HOST:$NBD_PORT"
[iscsi]
listen = ["$HOST:$ISCSI_PORT"]
[cluster]
etcd = ["$ETCD"]
lease_ttl = "3s"
[[pool]]
name = "p"
path = "$work/p.pool"
create_size = "512MiB"
TOML
start() {
  : >"$work/duplexd.log"
  DUPLEX_RECONCILE_PERIOD_MS=2000 "$DUPLEXD" --config "$work/d.toml" >>"$work/duplexd.log" 2>&1 &
  dpid=$!
  pids+=("$dpid")
  for _ in $(seq 100); do grep -q "event=ready" "$work/duplexd.log" && break; sleep 0.1; done
}
# until SECONDS 'python expression on d (the show JSON)'
until_show() {
  local deadline=$((SECONDS + $1)) out
  while [ $SECONDS -le $deadline ]; do
    if out=$("$TOOL" "$ETCD" show v1 2>/dev/null) &&
      echo "$out" | /usr/bin/python3 -c "import json,sys; d=json.load(sys.stdin); sys.exit(0 if ($2) else 1)"; then
      return 0
    fi
    sleep 0.2
  done
  echo "  last: $("$TOOL" "$ETCD" show v1 2>&1)"
  return 1
}
size_of() { nbdinfo --size "nbd://$HOST:$NBD_PORT/$1" 2>/dev/null; }
until_size() {  # until_size EXPORT BYTES|none
  for _ in $(seq 50); do
    local s; s=$(size_of "$1" || echo none)
    [ "$s" = "$2" ] && return 0
    sleep 0.2
  done
  return 1
}
MiB=$((1024 * 1024))
# nbdsh runs "python3" from PATH: Debian's, which has libnbd's module.
nbdsh() { PATH=/usr/bin:$PATH /usr/bin/nbdsh "$@"; }

start
for _ in $(seq 50); do [ -n "$(ectl get /duplex/v1/pools/n1/p --print-value-only)" ] && break; sleep 0.1; done
if [ -n "$(ectl get /duplex/v1/pools/n1/p --print-value-only)" ]; then ok "the node reports its pool"; else bad "no pools/n1/p"; fi
if ectl get /duplex/v1/nodes/n1 --print-value-only | grep -q '"base_iqn"'; then ok "the node key has base_iqn, address, version"; else bad "node key: $(ectl get /duplex/v1/nodes/n1 --print-value-only)"; fi

uuid=$("$TOOL" "$ETCD" create v1 $((64 * MiB)))
if until_show 10 "d['state']=='ready' and d['reports']['n1']['state']=='in-sync' and d['reports']['n1']['generation']==d['generation']"; then
  ok "created: the replica reports in-sync and the volume is ready"
else
  bad "v1 did not become ready"
fi
if until_size v1 $((64 * MiB)); then ok "nbdinfo shows v1 with 64 MiB"; else bad "v1 over NBD: $(size_of v1 || echo none)"; fi
head -c $((3 * MiB)) /dev/urandom >"$work/data"
nbdsh -u "nbd://$HOST:$NBD_PORT/v1" -c "h.pwrite(open('$work/data','rb').read(), $MiB); h.flush()"
nbdsh -u "nbd://$HOST:$NBD_PORT/v1" -c "import sys; sys.stdout.buffer.write(h.pread($((3 * MiB)), $MiB))" >"$work/back"
if cmp -s "$work/data" "$work/back"; then ok "data written over NBD reads back"; else bad "data differs"; fi

"$TOOL" "$ETCD" grow v1 $((128 * MiB))
if until_size v1 $((128 * MiB)); then ok "grown: nbdinfo shows 128 MiB"; else bad "after grow: $(size_of v1 || echo none)"; fi
if until_show 10 "d['reports']['n1']['generation']==d['generation'] and d['reports']['n1']['size']==$((128 * MiB))"; then
  ok "the report follows the grow (generation, size)"
else
  bad "the report did not follow the grow"
fi

"$TOOL" "$ETCD" snapshot v1 s1
if until_show 10 "d.get('snapshots',{}).get('s1')=='ready'"; then ok "snapshot s1 is ready"; else bad "s1 not ready"; fi
if until_size v1@s1 $((128 * MiB)); then ok "v1@s1 is exported over NBD"; else bad "no v1@s1 export"; fi
nbdsh -u "nbd://$HOST:$NBD_PORT/v1" -c "h.pwrite(b'\\xee' * 4096, $MiB); h.flush()"
nbdsh -u "nbd://$HOST:$NBD_PORT/v1@s1" -c "import sys; sys.stdout.buffer.write(h.pread($((3 * MiB)), $MiB))" >"$work/snap"
if cmp -s "$work/data" "$work/snap"; then ok "the snapshot keeps the data from before the later write"; else bad "snapshot content differs"; fi
if nbdsh -u "nbd://$HOST:$NBD_PORT/v1@s1" -c "h.pwrite(b'x' * 512, 0)" 2>/dev/null; then bad "v1@s1 accepted a write"; else ok "v1@s1 is read-only"; fi

ls_out=$(iscsi-ls -s "iscsi://$HOST:$ISCSI_PORT" 2>&1 || true)
if echo "$ls_out" | grep -q "iqn.2026-11.io.duplex:v1\b" && echo "$ls_out" | grep -q "iqn.2026-11.io.duplex:v1:s1"; then
  ok "iscsi-ls lists the volume's and the snapshot's targets"
else
  bad "iscsi-ls: $ls_out"
fi

"$TOOL" "$ETCD" export v1 0 1 read-write
if until_size v1 none; then ok "export nbd=false hides v1 from NBD"; else bad "v1 still over NBD"; fi
if iscsi-ls -s "iscsi://$HOST:$ISCSI_PORT" 2>&1 | grep -q "io.duplex:v1\b"; then ok "... and keeps it on iSCSI"; else bad "v1 gone from iSCSI"; fi
"$TOOL" "$ETCD" export v1 1 1 none "iqn.2026-11.io.test:allowed=read-write"
if until_size v1 $((128 * MiB)); then ok "nbd=true serves it again"; else bad "v1 not back on NBD"; fi
if iscsi-ls -s "iscsi://$HOST:$ISCSI_PORT" 2>&1 | grep -q "io.duplex:v1\b"; then bad "default_access=none still shows v1 to an unknown initiator"; else ok "default_access=none hides the target from an unlisted initiator"; fi
if iscsi-ls -i iqn.2026-11.io.test:allowed -s "iscsi://$HOST:$ISCSI_PORT" 2>&1 | grep -q "io.duplex:v1\b"; then ok "... and the ACL'd initiator sees it"; else bad "the ACL'd initiator does not see v1"; fi

# A clone of the snapshot: placed on the snapshot's node, with the snapshot's data, its own uuid.
cuuid=$("$TOOL" "$ETCD" create c1 0 v1@s1)
for _ in $(seq 50); do "$TOOL" "$ETCD" show c1 2>/dev/null | grep -q '"state":"ready"' && break; sleep 0.2; done
if "$TOOL" "$ETCD" show c1 | grep -q '"state":"ready"'; then ok "clone c1 of v1@s1 is ready"; else bad "c1: $("$TOOL" "$ETCD" show c1 2>&1)"; fi
if until_size c1 $((128 * MiB)); then ok "c1 is exported"; else bad "no c1 export"; fi
nbdsh -u "nbd://$HOST:$NBD_PORT/c1" -c "import sys; sys.stdout.buffer.write(h.pread($((3 * MiB)), $MiB))" >"$work/clone"
if cmp -s "$work/data" "$work/clone"; then ok "the clone holds the snapshot's data"; else bad "clone content differs"; fi
if iscsi-inq -e 1 -c 128 "iscsi://$HOST:$ISCSI_PORT/iqn.2026-11.io.duplex:c1/0" 2>/dev/null | grep -qi "${cuuid//-/}"; then
  ok "the clone's VPD serial is the catalogue's uuid"
else
  bad "c1's serial is not $cuuid: $(iscsi-inq -e 1 -c 128 "iscsi://$HOST:$ISCSI_PORT/iqn.2026-11.io.duplex:c1/0" 2>&1 | tr '\n' ' ')"
fi
"$TOOL" "$ETCD" delete c1
if until_size c1 none; then ok "c1 deleted"; else bad "c1 still exported"; fi
"$TOOL" "$ETCD" delete-snapshot v1 s1
if until_size v1@s1 none; then ok "snapshot delete removes v1@s1"; else bad "v1@s1 still exported"; fi
for _ in $(seq 50); do [ -z "$(ectl get /duplex/v1/snapshots/v1/s1 --print-value-only)" ] && break; sleep 0.2; done
if [ -z "$(ectl get /duplex/v1/snapshots/v1/s1 --print-value-only)" ]; then ok "... and its key once the replica no longer lists it"; else bad "snapshots/v1/s1 left"; fi

kill -KILL "$dpid"
wait "$dpid" 2>/dev/null || true
# Fail closed: restarted while etcd does not answer (frozen), the node must not serve the
# catalogue's volumes at all, since it cannot know their current access and ACLs.
kill -STOP "$etcd_pid"
start
if grep -q "event=ready" "$work/duplexd.log" && [ "$(size_of v1 || echo none)" = none ] &&
  ! iscsi-ls "iscsi://$HOST:$ISCSI_PORT" 2>/dev/null | grep -q ':v1'; then
  ok "restarted without etcd: v1 is not served (fail closed) over NBD or iSCSI"
else
  bad "restarted without etcd, v1 is served before its export record was read"
fi
kill -CONT "$etcd_pid"
if until_size v1 $((128 * MiB)); then ok "after kill -9 and restart v1 is served again"; else bad "v1 not served after restart"; fi
nbdsh -u "nbd://$HOST:$NBD_PORT/v1" -c "import sys; sys.stdout.buffer.write(h.pread($((3 * MiB)), $MiB))" >"$work/back2" 2>/dev/null || true
head -c 4096 /dev/zero | tr '\0' '\356' >"$work/ee"
{ cat "$work/ee"; tail -c +4097 "$work/data"; } >"$work/expect"
if cmp -s "$work/expect" "$work/back2"; then ok "with its data"; else bad "data differs after the restart"; fi
if [ "$(ectl get /duplex/v1/volumes/v1 --print-value-only | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["uuid"])')" = "$uuid" ]; then
  ok "same uuid"
else
  bad "uuid changed"
fi

# etcd without quorum (frozen: it neither answers nor refuses) stops decisions, not I/O that needs
# none. The freeze outlasts the node's lease (3 s), so the node also declares itself lost; its
# sessions, and new ones, still read and write v1, while a new volume cannot be decided.
nbdsh -u "nbd://$HOST:$NBD_PORT/v1" -c "h.pwrite(b'\\x11' * 8192, $((8 * MiB))); h.flush()"
kill -STOP "$etcd_pid"
frozen_at=$SECONDS
if timeout 20 "$TOOL" "$ETCD" create v9 $((64 * MiB)) >/dev/null 2>&1; then
  bad "a volume was created while etcd answered nothing"
else
  ok "no quorum: creating a volume does not complete"
fi
while [ $((SECONDS - frozen_at)) -lt 5 ]; do sleep 0.5; done
if grep -q "event=cluster.lost node=n1" "$work/duplexd.log"; then ok "the node declared its lease lost"; else bad "no cluster.lost in the log"; fi
if nbdsh -u "nbd://$HOST:$NBD_PORT/v1" -c "
import sys
h.pwrite(b'\\x22' * 65536, $((9 * MiB)), nbd.CMD_FLAG_FUA)
h.pwrite(b'\\x33' * 4096, $((8 * MiB)) + 4096)
h.flush()
a = h.pread(8192, $((8 * MiB)))
b = h.pread(65536, $((9 * MiB)))
sys.exit(0 if a == b'\\x11' * 4096 + b'\\x33' * 4096 and b == b'\\x22' * 65536 else 1)
" 2>"$work/nbd-frozen.err"; then
  ok "etcd frozen past the lease: new NBD sessions write, flush and read v1"
else
  bad "I/O on v1 failed while etcd was frozen: $(cat "$work/nbd-frozen.err")"
fi
if iscsi-inq -i iqn.2026-11.io.test:allowed "iscsi://$HOST:$ISCSI_PORT/iqn.2026-11.io.duplex:v1/0" >/dev/null 2>&1; then
  ok "... and the iSCSI target still logs in the allowed initiator and answers INQUIRY"
else
  bad "iSCSI v1 did not answer while etcd was frozen"
fi
kill -CONT "$etcd_pid"
if nbdsh -u "nbd://$HOST:$NBD_PORT/v1" -c "import sys; sys.exit(0 if h.pread(4096, $((8 * MiB)) + 4096) == b'\\x33' * 4096 else 1)"; then
  ok "after etcd thaws the writes made without it are there"
else
  bad "writes made while etcd was frozen are gone"
fi

"$TOOL" "$ETCD" delete v1
if until_size v1 none; then ok "delete removes the NBD export"; else bad "v1 still exported after delete"; fi
gone=0
for _ in $(seq 50); do
  [ -z "$(ectl get /duplex/v1/ --prefix --keys-only | grep -E '/(volumes|snapshots|replicas|exports)/v1(/|$)' || true)" ] && gone=1 && break
  sleep 0.2
done
if [ $gone = 1 ]; then ok "delete removes every key of v1"; else bad "keys left: $(ectl get /duplex/v1/ --prefix --keys-only)"; fi
if grep -q "event=reconciler.deleted volume=v1" "$work/duplexd.log"; then ok "the pool object is removed"; else bad "no reconciler.deleted in the log"; fi
if grep -qi "terminate\|segfault\|assert" "$work/duplexd.log"; then bad "duplexd log shows a crash"; fi

kill -TERM "$dpid"
if wait "$dpid"; then ok "clean stop: exit 0"; else bad "clean stop: exit $?"; fi
[ "$fails" -eq 0 ] || { echo "--- duplexd log"; tail -40 "$work/duplexd.log"; }
echo "$fails failed"
[ "$fails" -eq 0 ]
