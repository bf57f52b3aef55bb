# shellcheck shell=bash
# Shared by the mirror system tests (source after lib.sh, with HOST set and work_dir called):
# a two-node cluster on loopback - n1 in site a (the preferred site, and the API), n2 in site b,
# one etcd - with n2's mirror port behind tests/support/link_proxy.py, so that tests can cut and
# heal the replication link. Every process started is added to `pids` (stopped on exit).
#
#   mirror_cluster "[mirror] settings (TOML lines, optional)"   starts etcd, the proxy, n1 and n2
#   start_node N / stop_node N (SIGTERM, waits) / kill_node N (SIGKILL, as a crash)
#   proxy cut|heal|blackhole|status      the link (answers "ok" or the status line)
#   api METHOD PATH [BODY]               the REST API with the token, at $API (n1's; APIS[n2] is n2's)
#   kill_etcd / restart_etcd             SIGKILL the etcd member / start it again (same ports, data)
# With MIRROR_ETCD_PROXY=1 (set before mirror_cluster) n2 reaches etcd through a second
# link_proxy.py, so that a test can cut n2 off from the witness: etcd_proxy cut|heal|blackhole|status.
# With MIRROR_ISCSI=1 each node also serves iSCSI, on $HOST:${ISCSI[n1]} and $HOST:${ISCSI[n2]}.
#   until_vol SECONDS VOL 'python expr'  polls GET /v1/volumes/VOL; d = the volume, r = replicas by node
#   nbd_uri N VOL                        the volume's NBD export on node N
# Needs DUPLEXD; PY is Debian's python3 (it has libnbd's module).
PY=/usr/bin/python3
MIRROR_PROXY=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../support/link_proxy.py
TOKEN=mirror-test-token
declare -A NBD MIRROR DPID APIS ISCSI
# MIRROR_KEEP_LOGS=DIR keeps the daemons' and the proxy's logs (debugging).
cleanup_hook() { if [ -n "${MIRROR_KEEP_LOGS:-}" ]; then mkdir -p "$MIRROR_KEEP_LOGS" && cp "$work"/*.log "$work"/*.jsonl "$MIRROR_KEEP_LOGS"/ 2>/dev/null; fi; }
ectl() { ETCDCTL_API=3 etcdctl --endpoints="$ETCD" --command-timeout=2s "$@"; }

mirror_cluster() {
  local mirror_toml=${1:-}
  start_etcd
  for _ in $(seq 100); do ectl endpoint health >/dev/null 2>&1 && break; sleep 0.1; done
  ectl endpoint health >/dev/null 2>&1 || { echo "FAIL - etcd did not start"; tail "$work/etcd.log"; exit 1; }
  echo "$TOKEN" >"$work/token"
  API_PORT=$(free_port)
  API=http://$HOST:$API_PORT
  APIS[n1]=$API
  APIS[n2]=http://$HOST:$(free_port)
  for n in n1 n2; do
    NBD[$n]=$(free_port)
    MIRROR[$n]=$(free_port)
    ISCSI[$n]=$(free_port)
  done
  PROXY_PORT=$(free_port)
  CONTROL_PORT=$(free_port)
  # n1 (whose name sorts first) dials n2 through the proxy.
  $PY "$MIRROR_PROXY" --listen "$HOST:$PROXY_PORT" --target "$HOST:${MIRROR[n2]}" --control "$HOST:$CONTROL_PORT" \
    >"$work/proxy.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do grep -q ready "$work/proxy.log" && break; sleep 0.05; done
  grep -q ready "$work/proxy.log" || { echo "FAIL - proxy did not start"; cat "$work/proxy.log"; exit 1; }
  local n2_etcd=$ETCD
  if [ -n "${MIRROR_ETCD_PROXY:-}" ]; then
    ETCD_PROXY_PORT=$(free_port)
    ETCD_CONTROL_PORT=$(free_port)
    $PY "$MIRROR_PROXY" --listen "$HOST:$ETCD_PROXY_PORT" --target "${ETCD#http://}" --control "$HOST:$ETCD_CONTROL_PORT" \
      >"$work/etcd-proxy.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do grep -q ready "$work/etcd-proxy.log" && break; sleep 0.05; done
    grep -q ready "$work/etcd-proxy.log" || { echo "FAIL - etcd proxy did not start"; cat "$work/etcd-proxy.log"; exit 1; }
    n2_etcd=http://$HOST:$ETCD_PROXY_PORT
  fi
  mkdir -p "$work/n1" "$work/n2"
  _mirror_config n1 a "$(printf '[api]\nlisten = "%s:%s"\ntoken_file = "%s/token"' "$HOST" "$API_PORT" "$work")" "$mirror_toml"
  _mirror_config n2 b "$(printf '[api]\nlisten = "%s"\ntoken_file = "%s/token"' "${APIS[n2]#http://}" "$work")" "$mirror_toml" \
    "mirror_advertise = \"$HOST:$PROXY_PORT\"" "$n2_etcd"
  start_node n1
  start_node n2
}

_mirror_config() {  # NODE SITE EXTRA_SECTIONS MIRROR_TOML [EXTRA_CLUSTER_LINE [ETCD_URL]]
  cat >"$work/$1.toml" <<TOML
state_dir = "$work/$1/state"
[node]
name = "$1"
site = "$2"
[listen]
nbd = "$HOST:${NBD[$1]}"
$(if [ -n "${MIRROR_ISCSI:-}" ]; then printf '[iscsi]\nlisten = ["%s:%s"]' "$HOST" "${ISCSI[$1]}"; fi)
[cluster]
etcd = ["${6:-$ETCD}"]
lease_ttl = "5s"
address = "$HOST"
mirror_listen = "$HOST:${MIRROR[$1]}"
${5:-}
$3
$4
[[pool]]
name = "p"
path = "$work/$1/p.pool"
create_size = "${MIRROR_POOL_SIZE:-512MiB}"
TOML
}

start_node() {
  echo "--- start $(date +%T.%N)" >>"$work/$1.log"
  DUPLEX_RECONCILE_PERIOD_MS=1000 "$DUPLEXD" --config "$work/$1.toml" >>"$work/$1.log" 2>&1 &
  DPID[$1]=$!
  pids+=("${DPID[$1]}")
  local i
  for i in $(seq 150); do
    [ "$(grep -c "event=ready" "$work/$1.log")" -ge "$(grep -c -- "--- start" "$work/$1.log")" ] && return 0
    sleep 0.1
  done
  echo "FAIL - $1 did not start"
  tail "$work/$1.log"
  exit 1
}
stop_node() {
  kill -TERM "${DPID[$1]}" 2>/dev/null || true
  for _ in $(seq 150); do kill -0 "${DPID[$1]}" 2>/dev/null || break; sleep 0.1; done
  wait "${DPID[$1]}" 2>/dev/null
}
kill_node() {
  kill -KILL "${DPID[$1]}" 2>/dev/null || true
  wait "${DPID[$1]}" 2>/dev/null || true
}

proxy() { _proxy_control "$CONTROL_PORT" "$1"; }
etcd_proxy() { _proxy_control "$ETCD_CONTROL_PORT" "$1"; }
_proxy_control() {  # PORT COMMAND
  $PY - "$HOST" "$1" "$2" <<'PYEOF'
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.sendall((sys.argv[3] + "\n").encode())
print(s.makefile("r").readline().strip())
PYEOF
}

kill_etcd() {
  kill -KILL "$etcd_pid" 2>/dev/null || true
  wait "$etcd_pid" 2>/dev/null || true
}
restart_etcd() {
  start_etcd
  for _ in $(seq 100); do ectl endpoint health >/dev/null 2>&1 && break; sleep 0.1; done
  ectl endpoint health >/dev/null 2>&1 || { echo "FAIL - etcd did not restart"; tail "$work/etcd.log"; exit 1; }
}

api() {
  curl -sS -X "$1" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    ${3:+--data "$3"} "$API$2"
}
until_vol() {
  local deadline=$((SECONDS + $1)) out
  while [ $SECONDS -le $deadline ]; do
    if out=$(api GET "/v1/volumes/$2" 2>/dev/null) && echo "$out" | $PY -c "
import json, sys
d = json.load(sys.stdin)
r = {x['node']: x for x in d.get('replicas', [])}
sys.exit(0 if ($3) else 1)" 2>/dev/null; then
      return 0
    fi
    sleep 0.25
  done
  echo "  last: $(api GET "/v1/volumes/$2" 2>&1 | head -c 3000)"
  return 1
}
# Both replicas members of the in-sync set, in-sync, and linked.
IN_SYNC="sorted(d['insync']['members'])==['n1','n2'] and all(r[n].get('state')=='in-sync' and r[n].get('link_up') for n in ('n1','n2'))"
nbd_uri() { echo "nbd://$HOST:${NBD[$1]}/$2"; }
