#!/usr/bin/env bash
# A mirrored volume (replicas = 2) across two duplexd nodes on loopback, one etcd, the mirror link
# through tests/support/link_proxy.py (n1 dials n2, n2 advertises the proxy as its mirror port):
#   - written through n1's NBD export, read back through n2's, and the other way round;
#   - link cut: a write through n1 (the owner, preferred site a) still completes; the in-sync set
#     (and the volume's decisions) show n2 removed; n2 refuses I/O (an outdated replica never
#     serves);
#   - heal: n2 is resynced and in the in-sync set again (polled over the REST API) and reads what
#     n1 wrote during the cut; both daemons stop cleanly (metadata closed).
# Only 127.0.0.1; free ports; every process started here is stopped by its pid.
#   DUPLEXD=path/to/duplexd [DUPLEXCTL=path/to/duplexctl] tests/system/mirror_basic.sh
set -euo pipefail
DUPLEXD=${DUPLEXD:-duplexd}
PY=/usr/bin/python3
here=$(cd "$(dirname "$0")" && pwd)
PROXY=$here/../support/link_proxy.py
HOST=127.0.0.1
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
work_dir duplex-mirror
# MIRROR_KEEP_LOGS=DIR keeps the daemons' and the proxy's logs (debugging).
cleanup_hook() { if [ -n "${MIRROR_KEEP_LOGS:-}" ]; then mkdir -p "$MIRROR_KEEP_LOGS" && cp "$work"/*.log "$MIRROR_KEEP_LOGS"/; fi; }
start_etcd
ectl() { ETCDCTL_API=3 etcdctl --endpoints="$ETCD" --command-timeout=2s "$@"; }
for _ in $(seq 100); do ectl endpoint health >/dev/null 2>&1 && break; sleep 0.1; done
ectl endpoint health >/dev/null 2>&1 || { echo "FAIL - etcd did not start"; tail "$work/etcd.log"; exit 1; }
# nbdsh runs "python3" from PATH: Debian's, which has libnbd's module.
nbdsh() { PATH=/usr/bin:$PATH /usr/bin/nbdsh "$@"; }
# ... bounded: a frozen write must not hang the test
nbdsh_t() { PATH=/usr/bin:$PATH timeout 60 /usr/bin/nbdsh "$@"; }
MiB=$((1024 * 1024))

TOKEN=mirror-basic-token
echo "$TOKEN" >"$work/token"
API_PORT=$(free_port)
API=http://$HOST:$API_PORT
declare -A NBD MIRROR
for n in n1 n2; do
  NBD[$n]=$(free_port)
  MIRROR[$n]=$(free_port)
done
PROXY_PORT=$(free_port)
CONTROL_PORT=$(free_port)

# The proxy in front of n2's mirror port: n1 (whose name sorts first) dials n2 through it.
$PY "$PROXY" --listen "$HOST:$PROXY_PORT" --target "$HOST:${MIRROR[n2]}" --control "$HOST:$CONTROL_PORT" \
  >"$work/proxy.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q ready "$work/proxy.log" && break; sleep 0.05; done
grep -q ready "$work/proxy.log" || { echo "FAIL - proxy did not start"; cat "$work/proxy.log"; exit 1; }
proxy() {
  $PY - "$HOST" "$CONTROL_PORT" "$1" <<'PYEOF'
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.sendall((sys.argv[3] + "\n").encode())
print(s.makefile("r").readline().strip())
PYEOF
}

write_config() {  # NODE SITE EXTRA
  cat >"$work/$1.toml" <<TOML
state_dir = "$work/$1/state"
[node]
name = "$1"
site = "$2"
[listen]
nbd = "$HOST:${NBD[$1]}"
[cluster]
etcd = ["$ETCD"]
lease_ttl = "5s"
address = "$HOST"
mirror_listen = "$HOST:${MIRROR[$1]}"
$3
[[pool]]
name = "p"
path = "$work/$1/p.pool"
create_size = "256MiB"
TOML
}
mkdir -p "$work/n1" "$work/n2"
write_config n1 a "$(printf '[api]\nlisten = "%s:%s"\ntoken_file = "%s/token"' "$HOST" "$API_PORT" "$work")"
write_config n2 b "mirror_advertise = \"$HOST:$PROXY_PORT\""

declare -A DPID
start_node() {
  : >"$work/$1.log"
  DUPLEX_RECONCILE_PERIOD_MS=2000 "$DUPLEXD" --config "$work/$1.toml" >>"$work/$1.log" 2>&1 &
  DPID[$1]=$!
  pids+=("${DPID[$1]}")
  for _ in $(seq 100); do grep -q "event=ready" "$work/$1.log" && break; sleep 0.1; done
  grep -q "event=ready" "$work/$1.log" || { echo "FAIL - $1 did not start"; tail "$work/$1.log"; exit 1; }
}
stop_node() {  # clean stop by pid: SIGTERM, then wait
  kill -TERM "${DPID[$1]}" 2>/dev/null || true
  for _ in $(seq 150); do kill -0 "${DPID[$1]}" 2>/dev/null || break; sleep 0.1; done
  wait "${DPID[$1]}" 2>/dev/null
}
start_node n1
start_node n2
for _ in $(seq 50); do ectl get /duplex/v1/nodes/n2 --print-value-only | grep -q "\"mirror\":\"$HOST:$PROXY_PORT\"" && break; sleep 0.1; done
if ectl get /duplex/v1/nodes/n2 --print-value-only | grep -q "\"mirror\":\"$HOST:$PROXY_PORT\""; then
  ok "n2's node record advertises its mirror address (the proxy)"
else
  bad "n2's node record: $(ectl get /duplex/v1/nodes/n2 --print-value-only)"
fi

api() {  # METHOD PATH [BODY]
  curl -sS -X "$1" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    ${3:+--data "$3"} "$API$2"
}
show() { api GET /v1/volumes/m; }
# until SECONDS 'python expression on d (GET /v1/volumes/m) and r (replicas by node)'
until_show() {
  local deadline=$((SECONDS + $1)) out
  while [ $SECONDS -le $deadline ]; do
    if out=$(show 2>/dev/null) && echo "$out" | $PY -c "
import json, sys
d = json.load(sys.stdin)
r = {x['node']: x for x in d.get('replicas', [])}
sys.exit(0 if ($2) else 1)" 2>/dev/null; then
      return 0
    fi
    sleep 0.25
  done
  echo "  last: $(show 2>&1)"
  return 1
}

create=$(api POST /v1/volumes '{"name": "m", "size": 67108864, "replicas": 2, "preferred_site": "a"}' || true)
if until_show 30 "d['state']=='ready' and d['insync']['members']==['n1','n2'] and d['insync']['owner']=='n1' and all(r[n].get('state')=='in-sync' and r[n].get('link_up') for n in ('n1','n2'))"; then
  ok "replicas=2 volume m: ready, both replicas in-sync, link up, n1 owns it"
else
  bad "m did not become ready and in-sync: $create"
fi
if until_show 10 "r['n1'].get('role')=='owner' and r['n2'].get('role')=='peer' and r['n1'].get('insync_generation')==d['insync']['generation']"; then
  ok "the replica reports show role owner/peer and the in-sync generation"
else
  bad "replica roles/generation not reported"
fi
for n in n1 n2; do
  for _ in $(seq 50); do nbdinfo --size "nbd://$HOST:${NBD[$n]}/m" >/dev/null 2>&1 && break; sleep 0.2; done
done
if [ "$(nbdinfo --size "nbd://$HOST:${NBD[n2]}/m" 2>/dev/null)" = $((64 * MiB)) ]; then ok "both nodes export m"; else bad "m not exported by n2"; fi

# Both directions through the mirror.
head -c $((2 * MiB)) /dev/urandom >"$work/a"
head -c $((1 * MiB)) /dev/urandom >"$work/b"
nbdsh -u "nbd://$HOST:${NBD[n1]}/m" -c "h.pwrite(open('$work/a','rb').read(), 0); h.flush()"
nbdsh -u "nbd://$HOST:${NBD[n2]}/m" -c "import sys; sys.stdout.buffer.write(h.pread($((2 * MiB)), 0))" >"$work/a2" || true
if cmp -s "$work/a" "$work/a2"; then ok "written through n1, read back through n2"; else bad "n2 read other bytes than n1 wrote"; fi
nbdsh -u "nbd://$HOST:${NBD[n2]}/m" -c "h.pwrite(open('$work/b','rb').read(), $((8 * MiB))); h.flush()" || true
nbdsh -u "nbd://$HOST:${NBD[n1]}/m" -c "import sys; sys.stdout.buffer.write(h.pread($MiB, $((8 * MiB))))" >"$work/b1" || true
if cmp -s "$work/b" "$work/b1"; then ok "written through n2, read back through n1"; else bad "n1 read other bytes than n2 wrote"; fi
gen_before=$(show | $PY -c "import json,sys; print(json.load(sys.stdin)['insync']['generation'])")
if [ "$gen_before" = 1 ]; then
  ok "no decision while the link is up (in-sync generation still 1)"
else
  bad "the in-sync set changed while both nodes and the link were up: $(show | $PY -c "import json,sys; print([(x['generation'], x['members'], x['reason']) for x in json.load(sys.stdin)['decisions']])")"
fi

# Cut the link: the owner's write completes after it removed n2 from the in-sync set.
if [ "$(proxy cut)" = ok ]; then ok "link cut (proxy)"; else bad "proxy cut"; fi
head -c $MiB /dev/urandom >"$work/c"
if nbdsh_t -u "nbd://$HOST:${NBD[n1]}/m" -c "h.pwrite(open('$work/c','rb').read(), $((16 * MiB))); h.flush()" 2>"$work/cut-write.err"; then
  ok "with the link cut, a write through n1 (the owner) completes"
else
  bad "write through n1 during the cut failed: $(cat "$work/cut-write.err")"
fi
if until_show 20 "d['insync']['members']==['n1'] and d['insync']['generation']==$gen_before+1 and any(x['members']==['n1'] for x in d['decisions'])"; then
  ok "the in-sync set is {n1} at generation $((gen_before + 1)) and the decision is recorded"
else
  bad "n2 was not removed from the in-sync set"
fi
if nbdsh_t -u "nbd://$HOST:${NBD[n2]}/m" -c "h.pread(4096, $((16 * MiB)))" >/dev/null 2>&1; then
  bad "n2 served a read while outdated"
else
  ok "n2 refuses a read while outdated"
fi
if nbdsh_t -u "nbd://$HOST:${NBD[n2]}/m" -c "h.pwrite(b'\\x55' * 4096, $((20 * MiB))); h.flush()" >/dev/null 2>&1; then
  bad "n2 accepted a write while outdated"
else
  ok "n2 refuses a write while outdated"
fi

# An idle non-owner learns it was removed when it next needs the set (its first refused I/O).
if until_show 20 "r['n2'].get('state')=='outdated' and r['n2'].get('role')==''"; then ok "n2 reports outdated"; else bad "n2 does not report outdated"; fi

# Heal: n1 dials again, resyncs n2 (only what the cut made dirty) and adds it back.
if [ "$(proxy heal)" = ok ]; then ok "link healed (proxy)"; else bad "proxy heal"; fi
if until_show 60 "sorted(d['insync']['members'])==['n1','n2'] and all(r[n].get('state')=='in-sync' for n in ('n1','n2')) and r['n2'].get('insync_generation')==d['insync']['generation']"; then
  ok "after the heal n2 is resynced and in the in-sync set again"
else
  bad "n2 did not come back in sync"
fi
nbdsh -u "nbd://$HOST:${NBD[n2]}/m" -c "import sys; sys.stdout.buffer.write(h.pread($MiB, $((16 * MiB))))" >"$work/c2" 2>/dev/null || true
if cmp -s "$work/c" "$work/c2"; then ok "n2 reads what n1 wrote during the cut"; else bad "n2 does not have the cut-time write"; fi
nbdsh -u "nbd://$HOST:${NBD[n2]}/m" -c "import sys; sys.stdout.buffer.write(h.pread(4096, $((20 * MiB))))" >"$work/z" 2>/dev/null || true
if cmp -s "$work/z" <(head -c 4096 /dev/zero); then ok "the write n2 refused left nothing behind"; else bad "the refused write changed data"; fi

# n2 restarted cleanly: its metadata opens clean and it rejoins without a decision; after a kill -9
# it opens with crash recovery (its activity log marked dirty) and is back in step again.
gen_now=$(show | $PY -c "import json,sys; print(json.load(sys.stdin)['insync']['generation'])")
stop_node n2 || true
start_node n2
if until_show 30 "r['n2'].get('state')=='in-sync' and r['n2'].get('link_up') and d['insync']['generation']==$gen_now"; then
  ok "n2 restarted cleanly: back in step, no decision needed"
else
  bad "n2 did not come back in step after a clean restart"
fi
grep -q "event=mirror.meta_opened volume=m .*crashed=false" "$work/n2.log" && ok "... its metadata opened clean" || bad "n2's metadata did not open clean"
kill -KILL "${DPID[n2]}"
wait "${DPID[n2]}" 2>/dev/null || true
start_node n2
# A crashed replica may lack writes it had acknowledged, so it first leaves the set (a decision,
# "recovered from a crash") and rejoins after its resync (a second one): wait for both, not for a
# report written before the first.
if until_show 60 "r['n2'].get('state')=='in-sync' and r['n2'].get('link_up') and sorted(d['insync']['members'])==['n1','n2'] and d['insync']['generation']>=$gen_now+2"; then
  ok "n2 after kill -9 and restart: in the in-sync set and linked again"
else
  bad "n2 did not come back after kill -9"
fi
grep -q "event=mirror.meta_opened volume=m .*crashed=true" "$work/n2.log" && ok "... its metadata was recovered from the crash" || bad "n2's metadata not marked crashed"
nbdsh -u "nbd://$HOST:${NBD[n2]}/m" -c "import sys; sys.stdout.buffer.write(h.pread($MiB, $((16 * MiB))))" >"$work/c3" 2>/dev/null || true
if cmp -s "$work/c" "$work/c3"; then ok "n2 serves the same data after its restarts"; else bad "n2's data differs after its restarts"; fi

# duplexctl shows the same (when the test is given it).
if [ -n "${DUPLEXCTL:-}" ]; then
  shown=$("$DUPLEXCTL" --api "$API" --token "$TOKEN" volume show m 2>&1 || true)
  if echo "$shown" | grep -q "n2: mirror link up" && echo "$shown" | grep -q "owner n1"; then
    ok "duplexctl volume show m: the owner and each replica's mirror link"
  else
    bad "duplexctl volume show m: $shown"
  fi
fi

# A grow of the mirrored volume (system.mirror_grow has the rest): both replicas commit it, the
# export follows; a shrink is refused with the reason.
api PATCH "/v1/volumes/m?wait=false" '{"size": 134217728}' >/dev/null || true
if until_show 20 "all(r[n].get('state')=='in-sync' and r[n].get('size')==134217728 for n in ('n1','n2'))"; then
  ok "a grow of the mirrored volume is committed by both replicas"
else
  bad "grow of the mirrored volume not applied"
fi
for _ in $(seq 50); do [ "$(nbdinfo --size "nbd://$HOST:${NBD[n1]}/m" 2>/dev/null)" = $((128 * MiB)) ] && break; sleep 0.2; done
if [ "$(nbdinfo --size "nbd://$HOST:${NBD[n1]}/m" 2>/dev/null)" = $((128 * MiB)) ]; then ok "m's export is 128 MiB"; else bad "m's export did not follow the grow"; fi
shrink=$(api PATCH "/v1/volumes/m" '{"size": 67108864}' || true)
if echo "$shrink" | grep -q "volumes only grow"; then ok "a shrink is refused: volumes only grow"; else bad "shrink: $shrink"; fi

# A hello for an unknown volume is refused; junk on the mirror port does not hurt the daemon.
$PY - "$HOST" "${MIRROR[n1]}" <<'PYEOF' && ok "junk on the mirror port is dropped" || bad "mirror port junk"
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.sendall(b"\x00" * 200)
s.settimeout(5)
try:
    s.recv(100)
except (ConnectionResetError, socket.timeout):
    pass
PYEOF
if kill -0 "${DPID[n1]}" 2>/dev/null; then ok "n1 still runs after junk on its mirror port"; else bad "n1 died"; fi

# Idle, nothing is written to etcd: the periodic passes (every 2 s here) re-read everything but
# write only what changed (a put costs an fsync on every etcd member).
sleep 3
rev() { ectl endpoint status -w json | $PY -c "import json,sys; print(json.load(sys.stdin)[0]['Status']['header']['revision'])"; }
r0=$(rev)
sleep 5
r1=$(rev)
if [ -n "$r0" ] && [ "$r0" = "$r1" ]; then
  ok "an idle cluster writes nothing to etcd (revision $r0 over two periodic passes)"
else
  bad "idle cluster wrote to etcd: revision $r0 -> $r1"
  ectl get --prefix /duplex/v1/replicas --write-out=json | $PY -c "import json,sys; [print(k['key'], k['mod_revision']) for k in json.load(sys.stdin).get('kvs', [])]" || true
fi

for n in n2 n1; do
  if stop_node "$n"; then ok "$n stops cleanly"; else bad "$n exit status on SIGTERM"; fi
done
for n in n1 n2; do
  if grep -q "event=mirror.stopped volume=m" "$work/$n.log"; then ok "$n closed its mirror (metadata persisted)"; else bad "$n: no mirror.stopped"; fi
done

if [ "$fails" -ne 0 ]; then
  for n in n1 n2; do echo "--- $n.log (tail)"; tail -n 40 "$work/$n.log"; done
  echo "$fails check(s) failed"
  exit 1
fi
echo "all checks passed"
