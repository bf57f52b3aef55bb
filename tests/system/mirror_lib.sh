# shellcheck shell=bash
# Shared by the mirror system tests (source after lib.sh, with HOST set and work_dir called):
# a two-node cluster on loopback - n1 in site a (the preferred site, and the API), n2 in site b,
# one etcd (three with MIRROR_ETCD_MEMBERS=3, below) - with n2's mirror port behind
# tests/support/link_proxy.py, so that tests can cut and heal the replication link. Every
# process started is added to `pids` (stopped on exit).
#
#   mirror_cluster "[mirror] settings (TOML lines, optional)"   starts etcd, the proxy, n1 and n2
#   start_node N / stop_node N (SIGTERM, waits) / kill_node N (SIGKILL, as a crash)
#   proxy cut|heal|blackhole|status      the link (answers "ok" or the status line)
#   api METHOD PATH [BODY]               the REST API with the token, at $API (n1's; APIS[n2] is n2's)
#   kill_etcd / restart_etcd             SIGKILL the etcd member / start it again (same ports, data)
# With MIRROR_DIRECT_LINK=1 (set before mirror_cluster; benchmarks) n1 dials n2's mirror port
# directly: no proxy forwards the link's bytes, and `proxy` cannot cut it.
# With MIRROR_ETCD_PROXY=1 (set before mirror_cluster) n2 reaches etcd through a second
# link_proxy.py, so that a test can cut n2 off from the witness: etcd_proxy cut|heal|blackhole|status.
# With MIRROR_ISCSI=1 each node also serves iSCSI, on $HOST:${ISCSI[n1]} and $HOST:${ISCSI[n2]}.
#   until_vol SECONDS VOL 'python expr'  polls GET /v1/volumes/VOL; d = the volume, r = replicas by node
#   nbd_uri N VOL                        the volume's NBD export on node N
# POOL_PATH[nX]=PATH (set before mirror_cluster) puts node nX's pool there instead of $work/nX/p.pool.
# With MIRROR_ETCD_MEMBERS=3 (set before mirror_cluster) etcd has three members on HOST: ea in site a,
# eb in site b, ew the witness (a third site). n1 talks to ea only, n2 to eb and ew. Every byte of
# etcd peer traffic between ea and the others goes through link_proxy.py instances (each member
# resolves the others' peer names through its own /etc/hosts, bind-mounted in a private mount
# namespace, so ea reaches eb and ew through proxies while eb and ew talk directly), so that:
#   site_a cut|heal|blackhole            cuts site a (n1's mirror link and ea's peer traffic) off
#   kill_etcd_member a|b|w / start_etcd_member a|b|w   (SIGKILL / start again, same ports and data)
# The daemons re-read the catalogue every second (MIRROR_RECONCILE_PERIOD_MS, default 1000;
# the product's default is 30000), so a test never waits long for a missed watch event.
# Needs DUPLEXD; PY is Debian's python3 (it has libnbd's module).
PY=/usr/bin/python3
MIRROR_PROXY=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../support/link_proxy.py
TOKEN=mirror-test-token
declare -A NBD MIRROR DPID APIS ISCSI POOL_PATH ETCD_LIST ECLIENT EPEER EPID ECTL
# MIRROR_KEEP_LOGS=DIR keeps the daemons' and the proxy's logs (debugging).
cleanup_hook() { if [ -n "${MIRROR_KEEP_LOGS:-}" ]; then mkdir -p "$MIRROR_KEEP_LOGS" && cp "$work"/*.log "$work"/*.jsonl "$MIRROR_KEEP_LOGS"/ 2>/dev/null; fi; }
ectl() { ETCDCTL_API=3 etcdctl --endpoints="$ETCD" --command-timeout=2s "$@"; }

mirror_cluster() {
  local mirror_toml=${1:-}
  if [ "${MIRROR_ETCD_MEMBERS:-1}" = 3 ]; then
    _etcd3_start
  else
    start_etcd
  fi
  for _ in $(seq 100); do ectl endpoint health >/dev/null 2>&1 && break; sleep 0.1; done
  ectl endpoint health >/dev/null 2>&1 || { echo "FAIL - etcd did not start"; tail "$work"/etcd*.log; exit 1; }
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
  local advertise="mirror_advertise = \"$HOST:$PROXY_PORT\""
  if [ -n "${MIRROR_DIRECT_LINK:-}" ]; then
    # Benchmarks: n1 dials n2's own mirror port, no proxy in between (`proxy` cannot cut it).
    advertise=""
  else
    # n1 (whose name sorts first) dials n2 through the proxy.
    $PY "$MIRROR_PROXY" --listen "$HOST:$PROXY_PORT" --target "$HOST:${MIRROR[n2]}" --control "$HOST:$CONTROL_PORT" \
      >"$work/proxy.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do grep -q ready "$work/proxy.log" && break; sleep 0.05; done
    grep -q ready "$work/proxy.log" || { echo "FAIL - proxy did not start"; cat "$work/proxy.log"; exit 1; }
  fi
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
    "$advertise" "$n2_etcd"
  start_node n1
  start_node n2
}

_mirror_config() {  # NODE SITE EXTRA_SECTIONS MIRROR_TOML [EXTRA_CLUSTER_LINE [ETCD_URL]]
  local etcd_list="\"${6:-$ETCD}\""
  [ -n "${ETCD_LIST[$1]:-}" ] && etcd_list=${ETCD_LIST[$1]}
  cat >"$work/$1.toml" <<TOML
state_dir = "$work/$1/state"
[node]
name = "$1"
site = "$2"
[listen]
nbd = "$HOST:${NBD[$1]}"
$(if [ -n "${MIRROR_ISCSI:-}" ]; then printf '[iscsi]\nlisten = ["%s:%s"]' "$HOST" "${ISCSI[$1]}"; fi)
[cluster]
etcd = [$etcd_list]
lease_ttl = "5s"
address = "$HOST"
mirror_listen = "$HOST:${MIRROR[$1]}"
${5:-}
$3
$4
[[pool]]
name = "p"
path = "${POOL_PATH[$1]:-$work/$1/p.pool}"
create_size = "${MIRROR_POOL_SIZE:-512MiB}"
TOML
}

start_node() {
  echo "--- start $(date +%T.%N)" >>"$work/$1.log"
  DUPLEX_RECONCILE_PERIOD_MS=${MIRROR_RECONCILE_PERIOD_MS:-1000} "$DUPLEXD" --config "$work/$1.toml" >>"$work/$1.log" 2>&1 &
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
  local rc=0
  wait "${DPID[$1]}" 2>/dev/null || rc=$?
  # The status itself, for the failure message the caller prints (>128: killed by a signal).
  [ "$rc" = 0 ] || echo "note: $1 (pid ${DPID[$1]}) exited with status $rc on SIGTERM"
  return "$rc"
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

_etcd3_start() {
  local m net
  net=127.$((RANDOM % 200 + 20)).$((RANDOM % 250 + 1))
  declare -gA EPROXY_IP=([a]=$net.1 [b]=$net.2 [w]=$net.3)
  for m in a b w; do
    ECLIENT[$m]=$(free_port)
    EPEER[$m]=$(free_port)
  done
  ETCD=http://$HOST:${ECLIENT[a]},http://$HOST:${ECLIENT[b]},http://$HOST:${ECLIENT[w]}
  ETCD_LIST[n1]="\"http://$HOST:${ECLIENT[a]}\""
  ETCD_LIST[n2]="\"http://$HOST:${ECLIENT[b]}\", \"http://$HOST:${ECLIENT[w]}\""
  # The proxies: into ea (used by eb and ew), and from ea into eb and into ew; each listens on its
  # own address with the port of the member it stands for, the name resolving to it.
  for m in a b w; do
    ECTL[$m]=$(free_port)
    $PY "$MIRROR_PROXY" --listen "${EPROXY_IP[$m]}:${EPEER[$m]}" --target "$HOST:${EPEER[$m]}" \
      --control "$HOST:${ECTL[$m]}" >"$work/etcd-proxy-$m.log" 2>&1 &
    pids+=($!)
  done
  for m in a b w; do
    for _ in $(seq 100); do grep -q ready "$work/etcd-proxy-$m.log" && break; sleep 0.05; done
    grep -q ready "$work/etcd-proxy-$m.log" || { echo "FAIL - etcd proxy $m did not start"; cat "$work/etcd-proxy-$m.log"; exit 1; }
  done
  {
    echo "127.0.0.1 localhost"
    echo "$HOST etcd-a.duplex"
    echo "${EPROXY_IP[b]} etcd-b.duplex"
    echo "${EPROXY_IP[w]} etcd-w.duplex"
  } >"$work/hosts-a"
  {
    echo "127.0.0.1 localhost"
    echo "${EPROXY_IP[a]} etcd-a.duplex"
    echo "$HOST etcd-b.duplex"
    echo "$HOST etcd-w.duplex"
  } >"$work/hosts-b"
  cp "$work/hosts-b" "$work/hosts-w"
  for m in a b w; do start_etcd_member $m; done
  for _ in $(seq 150); do ectl endpoint health >/dev/null 2>&1 && break; sleep 0.1; done
}
start_etcd_member() {  # a|b|w
  local m=$1 initial="ea=http://etcd-a.duplex:${EPEER[a]},eb=http://etcd-b.duplex:${EPEER[b]},ew=http://etcd-w.duplex:${EPEER[w]}"
  # shellcheck disable=SC2016
  unshare -m --propagation private sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' "$work/hosts-$m" \
    etcd --name "e$m" --data-dir "$work/etcd-$m" --listen-client-urls "http://$HOST:${ECLIENT[$m]}" \
    --advertise-client-urls "http://$HOST:${ECLIENT[$m]}" --listen-peer-urls "http://$HOST:${EPEER[$m]}" \
    --initial-advertise-peer-urls "http://etcd-$m.duplex:${EPEER[$m]}" --initial-cluster "$initial" \
    --initial-cluster-state new --heartbeat-interval 100 --election-timeout 1000 --pre-vote >>"$work/etcd-$m.log" 2>&1 &
  EPID[$m]=$!
  pids+=("${EPID[$m]}")
}
kill_etcd_member() {
  kill -KILL "${EPID[$1]}" 2>/dev/null || true
  wait "${EPID[$1]}" 2>/dev/null || true
}
# site_a cut|heal|blackhole: every etcd peer connection of ea, then n1's mirror link (in that
# order: with the link cut first, n1 could still win a CAS through ea during the cut).
site_a() {
  local m
  for m in a b w; do _proxy_control "${ECTL[$m]}" "$1" >/dev/null; done
  proxy "$1" >/dev/null
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

# For the tests that write through libnbd while faults happen (mirror_failures_io.py logs each
# acknowledged write as a line starting with K):
#   vol 'python expr'         one look at the volume $VOL (d = the volume, r = replicas by node)
#   acks LOG                  how many writes the writer logging to LOG had acknowledged
#   until_acks LOG N SECONDS  waits until it has N
#   now / since T             a timestamp / the seconds since it (one decimal)
#   field JSON KEY            one key of a one-line JSON report
vol() {
  api GET "/v1/volumes/${VOL:?set VOL to the volume}" 2>/dev/null | $PY -c "
import json, sys
d = json.load(sys.stdin)
r = {x['node']: x for x in d.get('replicas', [])}
print($1)" 2>/dev/null || echo "?"
}
acks() {
  local c
  c=$(grep -c '^K' "$1" 2>/dev/null) || true
  echo "${c:-0}"
}
until_acks() {
  local deadline=$((SECONDS + $3))
  while [ $SECONDS -le $deadline ]; do
    [ "$(acks "$1")" -ge "$2" ] && return 0
    sleep 0.1
  done
  return 1
}
now() { date +%s.%N; }
since() { $PY -c "print(f'{$(now) - $1:.1f}')"; }
field() { echo "$1" | $PY -c "import json,sys; print(json.loads(sys.stdin.readline()).get('$2', '?'))" 2>/dev/null || echo "?"; }

# finish_mirror_test [NODE...]: stops the named nodes (SIGTERM, each a check), then ends the test:
# the time taken and, when a check failed, the daemons' log tails and exit status 1.
finish_mirror_test() {
  for n in "$@"; do
    if stop_node "$n"; then ok "$n stops cleanly"; else bad "$n exit status on SIGTERM"; fi
  done
  echo "took $((SECONDS - T_START)) s"
  if [ "$fails" -ne 0 ]; then
    for n in n1 n2; do echo "--- $n.log (tail)"; tail -n 60 "$work/$n.log"; done
    echo "$fails check(s) failed"
    exit 1
  fi
  echo "all checks passed"
}

# The mirror timings of the failure tests (a lost link noticed within 1 s, a write frozen at most
# 8 s, rather than the defaults' seconds), for mirror_cluster.
TEST_MIRROR_TOML=$(printf '[mirror]\nping_interval = "200ms"\nlink_timeout = "1s"\nreplicate_timeout = "1s"\nfreeze_timeout = "8s"\ntiebreak_delay = "1s"\nlease = "500ms"')
# mirrored_volume NAME BYTES: creates a mirrored volume preferring site a through the API, and
# checks that both replicas are in sync within 20 s.
mirrored_volume() {
  api POST /v1/volumes "{\"name\": \"$1\", \"size\": $2, \"replicas\": 2, \"preferred_site\": \"a\"}" >/dev/null
  if until_vol 20 "$1" "$IN_SYNC and d['insync']['owner']=='n1'"; then
    ok "mirrored volume $1 ($2 bytes) in sync on n1 and n2, n1 owns it"
  else
    bad "mirrored volume $1 not in sync: $(VOL=$1 vol "d.get('insync')")"
  fi
}
