#!/usr/bin/env bash
# The mirror link with [mirror] tls = "on" (mutual certificates, each checked against the CA and,
# by the dialer, against the peer's node name), two duplexd nodes on loopback and one etcd:
#   - the mirrored volume comes up in-sync over TLS; written through n1, read back through n2;
#   - a plain connection to a mirror port is closed unanswered (logged: not TLS); a TLS client
#     with the right CA's certificate completes the handshake, one from another CA is refused;
#   - n2 restarted with a certificate from another CA: n1 refuses the link, and its replica
#     report says why (certificate verify failed) while the link stays down.
# Certificates are made here with openssl. Only 127.0.0.1; every process is stopped by its pid.
#   DUPLEXD=path/to/duplexd tests/system/mirror_tls.sh
set -euo pipefail
DUPLEXD=${DUPLEXD:-duplexd}
PY=/usr/bin/python3
HOST=127.0.0.1
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
work_dir duplex-mirror-tls
cleanup_hook() { if [ -n "${MIRROR_KEEP_LOGS:-}" ]; then mkdir -p "$MIRROR_KEEP_LOGS" && cp "$work"/*.log "$MIRROR_KEEP_LOGS"/; fi; }
start_etcd
ectl() { ETCDCTL_API=3 etcdctl --endpoints="$ETCD" --command-timeout=2s "$@"; }
for _ in $(seq 100); do ectl endpoint health >/dev/null 2>&1 && break; sleep 0.1; done
ectl endpoint health >/dev/null 2>&1 || { echo "FAIL - etcd did not start"; tail "$work/etcd.log"; exit 1; }
nbdsh() { PATH=/usr/bin:$PATH timeout 60 /usr/bin/nbdsh "$@"; }
MiB=$((1024 * 1024))

# A CA and n1, n2 signed by it (each named in its subjectAltName); "n2" again from a rogue CA.
pki=$work/pki
mkdir -p "$pki"
make_ca() { openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj "/CN=$1" \
  -keyout "$pki/$1.key" -out "$pki/$1.pem" 2>/dev/null; }
make_leaf() {  # FILE NAME CA
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$2" \
    -keyout "$pki/$1.key" -out "$pki/$1.csr" 2>/dev/null
  printf 'subjectAltName=DNS:%s\n' "$2" >"$pki/$1.ext"
  openssl x509 -req -in "$pki/$1.csr" -CA "$pki/$3.pem" -CAkey "$pki/$3.key" -CAcreateserial -days 2 \
    -extfile "$pki/$1.ext" -out "$pki/$1.pem" 2>/dev/null
}
make_ca ca && make_ca rogue-ca && make_leaf n1 n1 ca && make_leaf n2 n2 ca && make_leaf rogue n2 rogue-ca ||
  { echo "FAIL - openssl could not make the certificates"; exit 1; }

TOKEN=mirror-tls-token
echo "$TOKEN" >"$work/token"
API_PORT=$(free_port)
API=http://$HOST:$API_PORT
declare -A NBD MIRROR
for n in n1 n2; do
  NBD[$n]=$(free_port)
  MIRROR[$n]=$(free_port)
done

write_config() {  # NODE SITE CERT EXTRA
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
[mirror]
tls = "on"
tls_cert = "$pki/$3.pem"
tls_key = "$pki/$3.key"
tls_ca = "$pki/ca.pem"
tls_check_name = true
$4
[[pool]]
name = "p"
path = "$work/$1/p.pool"
create_size = "256MiB"
TOML
}
mkdir -p "$work/n1" "$work/n2"
write_config n1 a n1 "$(printf '[api]\nlisten = "%s:%s"\ntoken_file = "%s/token"' "$HOST" "$API_PORT" "$work")"
write_config n2 b n2 ""

declare -A DPID
start_node() {
  : >"$work/$1.log"
  DUPLEX_RECONCILE_PERIOD_MS=1000 "$DUPLEXD" --config "$work/$1.toml" >>"$work/$1.log" 2>&1 &
  DPID[$1]=$!
  pids+=("${DPID[$1]}")
  for _ in $(seq 100); do grep -q "event=ready" "$work/$1.log" && break; sleep 0.1; done
  grep -q "event=ready" "$work/$1.log" || { echo "FAIL - $1 did not start"; tail "$work/$1.log"; exit 1; }
}
stop_node() {
  kill -TERM "${DPID[$1]}" 2>/dev/null || true
  for _ in $(seq 150); do kill -0 "${DPID[$1]}" 2>/dev/null || break; sleep 0.1; done
  wait "${DPID[$1]}" 2>/dev/null
}
start_node n1
start_node n2
if grep -q "event=mirror.listen .*tls=on" "$work/n1.log" && grep -q "event=mirror.listen .*tls=on" "$work/n2.log"; then
  ok "both mirror listeners take TLS only"
else
  bad "mirror listeners not in TLS mode"
fi

api() {  # METHOD PATH [BODY]
  curl -sS -X "$1" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    ${3:+--data "$3"} "$API$2"
}
show() { api GET /v1/volumes/m; }
until_show() {  # SECONDS 'python expression on d and r (replicas by node)'
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
if until_show 30 "d['state']=='ready' and d['insync']['members']==['n1','n2'] and all(r[n].get('state')=='in-sync' and r[n].get('link_up') for n in ('n1','n2'))"; then
  ok "replicas=2 volume m: ready, both replicas in-sync, link up over TLS"
else
  bad "m did not become ready and in-sync: $create"
fi
for n in n1 n2; do
  for _ in $(seq 50); do nbdinfo --size "nbd://$HOST:${NBD[$n]}/m" >/dev/null 2>&1 && break; sleep 0.2; done
done
head -c $((2 * MiB)) /dev/urandom >"$work/a"
nbdsh -u "nbd://$HOST:${NBD[n1]}/m" -c "h.pwrite(open('$work/a','rb').read(), 0); h.flush()" || true
nbdsh -u "nbd://$HOST:${NBD[n2]}/m" -c "import sys; sys.stdout.buffer.write(h.pread($((2 * MiB)), 0))" >"$work/a2" || true
if cmp -s "$work/a" "$work/a2"; then ok "written through n1, read back through n2 (over the TLS link)"; else bad "n2 read other bytes than n1 wrote"; fi

# A plain peer: its hello gets no answer, the connection is closed, and n2 logs why.
$PY - "$HOST" "${MIRROR[n2]}" <<'PYEOF' && ok "a plain connection to n2's mirror port is closed unanswered" || bad "plain connection answered"
import socket, struct, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.sendall(struct.pack(">I", 0x44584D4C) + b"\x00" * 92)  # a mirror header's magic, then zeros
s.settimeout(5)
try:
    sys.exit(0 if s.recv(100) == b"" else 1)
except ConnectionResetError:
    sys.exit(0)
PYEOF
for _ in $(seq 20); do grep -q "event=mirror.greet_refused .*does not speak TLS" "$work/n2.log" && break; sleep 0.1; done
grep -q "event=mirror.greet_refused .*does not speak TLS" "$work/n2.log" && ok "... n2 logged: not TLS" || bad "n2 did not log the plain peer"
# openssl s_client: the CA's certificate gets through the handshake, the rogue CA's does not.
out=$(echo | timeout 10 openssl s_client -connect "$HOST:${MIRROR[n2]}" -cert "$pki/n1.pem" -key "$pki/n1.key" \
  -CAfile "$pki/ca.pem" -verify_hostname n2 -verify_return_error 2>&1 || true)
if echo "$out" | grep -q "Verify return code: 0 (ok)" && echo "$out" | grep -q "TLSv1.3"; then
  ok "openssl s_client with n1's certificate: TLS 1.3 with n2, n2's certificate verified"
else
  bad "s_client with the right certificate: $(echo "$out" | tail -5)"
fi
echo | timeout 10 openssl s_client -connect "$HOST:${MIRROR[n2]}" -cert "$pki/rogue.pem" -key "$pki/rogue.key" \
  -CAfile "$pki/ca.pem" >/dev/null 2>&1 || true
for _ in $(seq 20); do grep -q "event=mirror.greet_refused .*certificate verify failed" "$work/n2.log" && break; sleep 0.1; done
grep -q "event=mirror.greet_refused .*certificate verify failed" "$work/n2.log" && ok "a client certificate from another CA is refused by n2 (logged)" || bad "n2 did not refuse the rogue certificate"
if kill -0 "${DPID[n2]}" 2>/dev/null; then ok "n2 still runs"; else bad "n2 died"; fi

# n2 comes back with a certificate from another CA: n1 (the dialer) refuses it and says why.
stop_node n2 || true
write_config n2 b rogue ""
start_node n2
if until_show 30 "not r['n1'].get('link_up') and 'certificate verify failed' in r['n1'].get('last_event','')"; then
  ok "n2 with a rogue certificate: n1 keeps the link down, its replica report says why"
else
  bad "n1 does not show the refused certificate"
fi
grep -q "event=mirror.link_refused .*certificate verify failed" "$work/n1.log" && ok "... and n1 logged it" || bad "n1 did not log the refusal"
if nbdsh -u "nbd://$HOST:${NBD[n1]}/m" -c "h.pwrite(b'\\x11' * 4096, 0); h.flush()" >/dev/null 2>&1; then
  ok "n1 still serves writes (n2 left the in-sync set)"
else
  bad "n1 stopped serving"
fi

for n in n2 n1; do
  if stop_node "$n"; then ok "$n stops cleanly"; else bad "$n exit status on SIGTERM"; fi
done
if [ "$fails" -ne 0 ]; then
  echo "$fails check(s) failed"
  exit 1
fi
echo "all checks passed"
