#!/usr/bin/env bash
# Real NBD clients against duplexd: nbdinfo --json, nbdcopy 1 GiB round trip (SHA-256), qemu-img
# convert + compare, qemu-io write/read patterns, fio's nbd engine with verify=crc32c over several
# connections, and the daemon's startup errors. Every process started here is stopped by its pid.
#   DUPLEXD=path/to/duplexd tests/system/nbd_clients.sh
set -euo pipefail
DUPLEXD=${DUPLEXD:-duplexd}
HOST=127.0.0.12
PORT=${NBD_TEST_PORT:-10811}
work=$(mktemp -d /var/tmp/duplex-clients.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
fails=0
ok() { echo "ok - $*"; }
bad() { echo "FAIL - $*"; fails=$((fails + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }

cat > "$work/n1.toml" <<TOML
[node]
name = "n1"
site = "a"
[listen]
nbd = "$HOST:$PORT"
[[pool]]
name = "p1"
path = "$work/p1.pool"
create_size = "3GiB"
[[volume]]
name = "disk"
size = "1GiB"
TOML

start() {
  # Another server on our port (a second run of this test) would answer our clients and take our
  # writes: refuse to run rather than test someone else's daemon.
  if (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; then
    echo "nbd_clients: $HOST:$PORT is already in use by another process" >&2
    return 1
  fi
  local ready_before
  ready_before=$(grep -c event=ready "$work/duplexd.log" 2>/dev/null || true)
  setsid "$DUPLEXD" --config "$work/n1.toml" "$@" >>"$work/out.log" 2>>"$work/duplexd.log" &
  daemon=$!
  pids+=("$daemon")
  for _ in $(seq 200); do
    if [ "$(grep -c event=ready "$work/duplexd.log" 2>/dev/null || true)" -gt "${ready_before:-0}" ] &&
       nbdinfo --size "nbd://$HOST:$PORT/disk" >/dev/null 2>&1; then return 0; fi
    kill -0 "$daemon" 2>/dev/null || { cat "$work/duplexd.log"; return 1; }
    sleep 0.05
  done
  return 1
}
stop() {
  kill -TERM "$daemon"
  local rc=0
  wait "$daemon" || rc=$?
  return $rc
}

start
URI="nbd://$HOST:$PORT/disk"

# nbdinfo --json: size, flags, contexts
nbdinfo --json "$URI" >"$work/info.json"
check "nbdinfo --json: size 1 GiB, writable, multi-conn, base:allocation" /usr/bin/python3 - "$work/info.json" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))["exports"][0]
assert e["export-size"] == 1 << 30, e
assert e["can_multi_conn"] and e["can_flush"] and e["can_fua"] and e["can_trim"] and e["can_zero"]
assert not e["is_read_only"]
assert "base:allocation" in e["contexts"]
PY

# nbdcopy round trip of a 1 GiB image with equal SHA-256 (4 connections: multi-conn)
head -c 384M /dev/urandom >"$work/part"
{ cat "$work/part"; head -c 256M /dev/zero; cat "$work/part"; } | head -c 1G >"$work/src.img"
sum_src=$(sha256sum <"$work/src.img" | cut -d' ' -f1)
check "nbdcopy 1 GiB to duplex (-C 4 --flush)" nbdcopy -C 4 --flush "$work/src.img" "$URI"
check "nbdcopy 1 GiB back" nbdcopy "$URI" "$work/back.img"
sum_back=$(sha256sum <"$work/back.img" | cut -d' ' -f1)
check "nbdcopy round trip: equal SHA-256" test "$sum_src" = "$sum_back"
rm -f "$work/back.img"

# qemu-img convert and compare
check "qemu-img compare (image = export)" qemu-img compare -f raw -F raw "$work/src.img" "$URI"
head -c 64M /dev/urandom >"$work/q.raw"
check "qemu-img convert raw -> nbd" qemu-img convert -n -f raw -O raw "$work/q.raw" "$URI"
win="driver=raw,offset=0,size=67108864,file.driver=nbd,file.export=disk,file.server.type=inet,file.server.host=$HOST,file.server.port=$PORT"
check "qemu-img compare after convert (64 MiB window)" qemu-img compare --image-opts "driver=file,filename=$work/q.raw" "$win"
qemu-img map --output=json -f raw "$URI" >"$work/map.json" && ok "qemu-img map" || bad "qemu-img map"

# qemu-io patterns (write -P, read -P verifies), zero, discard
check "qemu-io write/read patterns" sh -c "qemu-io -f raw -c 'write -P 0xa5 1M 3M' -c 'write -P 0x3c 100M 512' \
  -c 'read -P 0xa5 1M 3M' -c 'read -P 0x3c 100M 512' -c 'write -z 200M 1M' -c 'read -P 0 200M 1M' \
  -c 'discard 300M 2M' -c 'read -P 0 300M 2M' -c 'flush' '$URI' | tee '$work/qio.log' | grep -q 'read 2097152'"
check "qemu-io reported no pattern mismatch" sh -c "! grep -qi 'pattern verification failed\\|error' '$work/qio.log'"

# fio's nbd engine, verify=crc32c, 4 jobs = 4 connections
check "fio nbd engine randwrite+verify crc32c, 4 connections" fio --name=v --ioengine=nbd --uri="$URI" \
  --rw=randwrite --bs=4k --size=256M --offset_increment=256M --numjobs=4 --iodepth=16 \
  --verify=crc32c --verify_fatal=1 --do_verify=1 --verify_state_save=0 --directory="$work" --group_reporting --output="$work/fio.txt"
check "fio: no verify errors" sh -c "grep -q 'err= 0' '$work/fio.txt'"

sum_before=$(nbdcopy "$URI" - | sha256sum | cut -d' ' -f1)
# Startup errors: one clear line, non-zero exit
set +e
out=$("$DUPLEXD" --config "$work/n1.toml" 2>&1); rc=$?
set -e
expect_fail() {  # what rc output pattern: non-zero exit, last line names the cause
  local what=$1 rc=$2 out=$3 pat=$4 last
  last=$(printf '%s\n' "$out" | tail -1)
  if [ "$rc" -ne 0 ] && printf '%s' "$last" | grep -q -- "$pat"; then ok "$what: exit $rc: $last"; else bad "$what: exit $rc: $out"; fi
}
expect_fail "second start on the same pool refused" "$rc" "$out" "in use by another process"
check "SIGTERM: clean exit 0" stop
grep -q 'event=pool.closed pool=p1' "$work/duplexd.log" && ok "pool closed on SIGTERM" || bad "pool closed on SIGTERM"

sed 's/^site = "a"/site = "a"\nsiet = "b"/' "$work/n1.toml" >"$work/badkey.toml"
set +e; out=$("$DUPLEXD" --config "$work/badkey.toml" 2>&1); rc=$?; set -e
expect_fail "unknown config key" "$rc" "$out" "unknown key 'siet'"
check "a config error is exactly one line" test "$(printf '%s\n' "$out" | wc -l)" -eq 1
sed "s#create_size = \"3GiB\"##; s#$work/p1.pool#$work/missing.pool#" "$work/n1.toml" >"$work/missing.toml"
set +e; out=$("$DUPLEXD" --config "$work/missing.toml" 2>&1); rc=$?; set -e
expect_fail "missing pool" "$rc" "$out" "does not exist"
# Port in use: a listener we start ourselves, stopped by pid.
/usr/bin/python3 -c "import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('$HOST', $PORT)); s.listen(); time.sleep(30)" &
blocker=$!; pids+=("$blocker"); sleep 0.3
set +e; out=$("$DUPLEXD" --config "$work/n1.toml" 2>&1); rc=$?; set -e
kill "$blocker"; wait "$blocker" 2>/dev/null || true
expect_fail "port in use" "$rc" "$out" "cannot listen on $HOST:$PORT"

# After restart the data is still there
start
sum_after=$(nbdcopy "$URI" - | sha256sum | cut -d' ' -f1)
check "data survives restart (SHA-256 of the whole export)" test "$sum_before" = "$sum_after"
check "SIGTERM again" stop

echo "nbd_clients: $fails failures"
[ "$fails" -eq 0 ]
