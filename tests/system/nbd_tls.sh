#!/usr/bin/env bash
# NBD over TLS 1.3 (OpenSSL) with libnbd/GnuTLS clients: X.509 certificates and PSK, TLS required
# (plain clients refused), and two event loops (a TLS connection to a volume on the other loop, a
# plain connection migrated to the other loop). Every process started here is stopped by its pid.
set -euo pipefail
DUPLEXD=${DUPLEXD:-duplexd}
HOST=127.0.0.13
PORT=${NBD_TLS_PORT:-10821}
work=$(mktemp -d /var/tmp/duplex-tls.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  if [ -n "${KEEP_LOGS:-}" ]; then cp "$work/duplexd.log" "$KEEP_LOGS" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
fails=0
ok() { echo "ok - $*"; }
bad() { echo "FAIL - $*"; fails=$((fails + 1)); }
check() { local what=$1; shift; if "$@" >"$work/last.out" 2>&1; then ok "$what"; else bad "$what"; tail -15 "$work/last.out"; fi; }

# Certificates: a CA, a server certificate for $HOST, the CA in a directory for GnuTLS clients.
cd "$work"
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca-cert.pem -days 2 -subj "/CN=duplex test CA" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout server-key.pem -out server.csr -subj "/CN=$HOST" 2>/dev/null
printf 'subjectAltName=IP:%s\n' "$HOST" >ext.cnf
openssl x509 -req -in server.csr -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial -out server-cert.pem -days 2 \
  -extfile ext.cnf 2>/dev/null
mkdir -p client && cp ca-cert.pem client/
echo "alice:$(openssl rand -hex 32)" >keys.psk
echo "alice:$(openssl rand -hex 32)" >wrong.psk

base() {
  cat <<TOML
[daemon]
loops = 2
[listen]
nbd = "$HOST:$PORT"
[[pool]]
name = "p1"
path = "$work/p1.pool"
create_size = "1GiB"
[[pool]]
name = "p2"
path = "$work/p2.pool"
create_size = "1GiB"
[[volume]]
pool = "p1"
name = "v1"
size = "256MiB"
[[volume]]
pool = "p2"
name = "v2"
size = "256MiB"
TOML
}
{ base; printf '[tls]\ncert = "%s"\nkey = "%s"\nrequire = true\n' "$work/server-cert.pem" "$work/server-key.pem"; } >cert.toml
{ base; printf '[tls]\npsk = "%s"\nrequire = true\n' "$work/keys.psk"; } >psk.toml
base >plain.toml

start() {
  setsid "$DUPLEXD" --config "$1" >>"$work/out.log" 2>>"$work/duplexd.log" &
  daemon=$!
  pids+=("$daemon")
  for _ in $(seq 200); do
    if grep -q "event=ready" "$work/duplexd.log" 2>/dev/null && \
       [ "$(grep -c event=ready "$work/duplexd.log")" -ge "$2" ]; then return 0; fi
    kill -0 "$daemon" 2>/dev/null || { cat "$work/duplexd.log"; return 1; }
    sleep 0.05
  done
  return 1
}
stop() { kill -TERM "$daemon"; local rc=0; wait "$daemon" || rc=$?; return $rc; }

head -c 64M /dev/urandom >src.img
sum_src=$(sha256sum <src.img | cut -d' ' -f1)
roundtrip() {  # uri
  rm -f back.img
  nbdcopy src.img "$1" && nbdcopy "$1" back.img && [ "$(head -c 64M back.img | sha256sum | cut -d' ' -f1)" = "$sum_src" ]
}

# --- certificates ---
start cert.toml 1
CERT="tls-certificates=$work/client"
check "nbdinfo over TLS (certificates): TLS true" sh -c "nbdinfo --json 'nbds://$HOST:$PORT/v1?$CERT' | grep -q '\"TLS\": true'"
check "plain client refused when TLS is required" sh -c "! nbdinfo 'nbd://$HOST:$PORT/v1' 2>/dev/null"
check "TLS round trip, volume on this loop" roundtrip "nbds://$HOST:$PORT/v1?$CERT"
check "TLS round trip, volume on the other loop (proxied)" roundtrip "nbds://$HOST:$PORT/v2?$CERT"
# fio's engine refuses URI file parameters: the CA goes where libnbd looks by default ($HOME/.pki/libnbd).
mkdir -p "$work/home/.pki/libnbd" && cp ca-cert.pem "$work/home/.pki/libnbd/"
check "TLS fio verify, 2 connections" env HOME="$work/home" fio --name=t --ioengine=nbd --uri="nbds://$HOST:$PORT/v2" \
  --rw=randwrite --bs=4k --size=32M --offset_increment=64M --numjobs=2 --iodepth=8 --verify=crc32c \
  --verify_fatal=1 --verify_state_save=0 --directory="$work"
check "SIGTERM exits 0" stop

# --- PSK ---
start psk.toml 2
check "nbdinfo over TLS (PSK)" nbdinfo "nbds://alice@$HOST:$PORT/v1?tls-psk-file=$work/keys.psk"
check "PSK round trip" roundtrip "nbds://alice@$HOST:$PORT/v2?tls-psk-file=$work/keys.psk"
check "wrong PSK refused" sh -c "! nbdinfo 'nbds://alice@$HOST:$PORT/v1?tls-psk-file=$work/wrong.psk' 2>/dev/null"
check "SIGTERM exits 0" stop

# --- plain, two loops: the socket moves to the volume's loop ---
start plain.toml 3
check "plain round trip, volume on loop 1 (migrated socket)" roundtrip "nbd://$HOST:$PORT/v2"
check "plain round trip, volume on loop 0" roundtrip "nbd://$HOST:$PORT/v1"
check "log shows loop=1 for v2" grep -q "export=v2 .*loop=1" "$work/duplexd.log"
check "SIGTERM exits 0" stop

echo "nbd_tls: $fails failures"
[ "$fails" -eq 0 ]
