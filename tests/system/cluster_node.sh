#!/usr/bin/env bash
# duplexd as a cluster member, against a real etcd (etcd-server) on loopback:
#   1. with [cluster] etcd set, the node's key /duplex/v1/nodes/<name> appears, bound to a lease,
#      with where the node serves;
#   2. a clean stop (SIGTERM) removes it at once (the lease is revoked before the front-ends close);
#   3. a crash (SIGKILL) leaves it until the lease expires, then it is gone: nobody may take a dead
#      node's key for a live one.
# Free ports chosen here, every process started here stopped by its pid.
#   DUPLEXD=path/to/duplexd tests/system/cluster_node.sh
set -euo pipefail
DUPLEXD=${DUPLEXD:-duplexd}
HOST=127.0.0.17
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
work_dir duplex-cluster
NBD_PORT=$(free_port)
start_etcd
healthy() { ETCDCTL_API=3 etcdctl --endpoints="$ETCD" --command-timeout=1s endpoint health >/dev/null 2>&1; }
for _ in $(seq 100); do healthy && break; sleep 0.1; done
healthy || { echo "FAIL - etcd did not start"; tail "$work/etcd.log"; exit 1; }

key=/duplex/v1/nodes/n1
get() { ETCDCTL_API=3 etcdctl --endpoints="$ETCD" get "$key" --print-value-only; }
wait_for() {  # wait_for SECONDS present|absent
  local deadline=$((SECONDS + $1))
  while [ $SECONDS -le $deadline ]; do
    local v; v=$(get)
    if [ "$2" = present ] && [ -n "$v" ]; then return 0; fi
    if [ "$2" = absent ] && [ -z "$v" ]; then return 0; fi
    sleep 0.1
  done
  return 1
}

cat >"$work/d.toml" <<TOML
state_dir = "$work/state"
[node]
name = "n1"
site = "a"
[listen]
nbd = "$HOST:$NBD_PORT"
[cluster]
etcd = ["$ETCD"]
lease_ttl = "3s"
[[pool]]
name = "p"
path = "$work/p.pool"
create_size = "256MiB"
TOML
start() {
  "$DUPLEXD" --config "$work/d.toml" >>"$work/duplexd.log" 2>&1 &
  dpid=$!
  pids+=("$dpid")
  for _ in $(seq 100); do grep -q "event=ready" "$work/duplexd.log" && break; sleep 0.1; done
}

start
if wait_for 5 present; then ok "the node's key is there while it runs"; else bad "no key $key"; fi
v=$(get)
if echo "$v" | /usr/bin/python3 -c "import json,sys; d=json.load(sys.stdin); assert d['site']=='a' and d['nbd']==['$HOST:$NBD_PORT'], d"; then
  ok "it says where the node serves: $v"
else
  bad "unexpected value: $v"
fi
lease=$(ETCDCTL_API=3 etcdctl --endpoints="$ETCD" get "$key" -w json | /usr/bin/python3 -c "import json,sys; print(json.load(sys.stdin)['kvs'][0].get('lease',0))")
if [ "$lease" != 0 ]; then ok "it is bound to a lease"; else bad "the key has no lease"; fi
sleep 4  # longer than the TTL: the agent keeps it alive
if [ -n "$(get)" ]; then ok "kept alive past one TTL"; else bad "the key expired while the node ran"; fi

kill -TERM "$dpid"
t0=$(date +%s%N)
if wait "$dpid"; then ok "clean stop: exit 0"; else bad "clean stop: exit $?"; fi
if [ -z "$(get)" ]; then ok "clean stop: the key went at once ($(( ($(date +%s%N) - t0) / 1000000 )) ms)"; else bad "clean stop: the key is still there"; fi

: >"$work/duplexd.log"
start
wait_for 5 present || bad "no key after the restart"
kill -KILL "$dpid"
wait "$dpid" 2>/dev/null || true
if [ -n "$(get)" ]; then ok "crash: the key stays until the lease runs out"; else bad "crash: the key vanished at once (lease not used?)"; fi
if wait_for 6 absent; then ok "crash: the key is gone once the lease expired"; else bad "crash: the key outlived its lease"; fi

kill -TERM "$etcd_pid"
wait "$etcd_pid" 2>/dev/null || true
echo "$fails failed"
[ "$fails" -eq 0 ]
