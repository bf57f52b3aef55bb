#!/usr/bin/env bash
# fio's libiscsi engine against duplexd with verify=crc32c (mixed block sizes, queue depth 16), and
# the same data checked across protocols: written through iSCSI, verified through NBD, and the
# reverse. Debian's fio has no libiscsi engine: ../shared/bench/build-fio.sh builds one from
# Debian's own fio source (cached in $FIO_TOOLS, default /var/tmp/duplex-tools).
# Loopback only, free ports chosen here, every process started here stopped by its pid.
#   DUPLEXD=path/to/duplexd tests/system/iscsi_fio_verify.sh
set -euo pipefail
DUPLEXD=${DUPLEXD:-duplexd}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HOST=127.0.0.16
free_port() { /usr/bin/python3 -c "import socket; s=socket.socket(); s.bind(('$HOST', 0)); print(s.getsockname()[1])"; }
NBD_PORT=$(free_port)
PORT=$(free_port)
while [ "$PORT" = "$NBD_PORT" ]; do PORT=$(free_port); done
work=$(mktemp -d /var/tmp/duplex-fio.XXXXXX)
pid=
cleanup() {
  if [ -n "$pid" ]; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

FIO=${FIO:-fio}
if ! "$FIO" --enghelp 2>/dev/null | grep -qw libiscsi; then
  FIO=$("$ROOT/../shared/bench/build-fio.sh" "${FIO_TOOLS:-/var/tmp/duplex-tools}" | tail -1)
fi
"$FIO" --enghelp | grep -qw libiscsi || { echo "FAIL - no fio with the libiscsi engine"; exit 1; }

cat >"$work/d.toml" <<TOML
state_dir = "$work/state"
[listen]
nbd = "$HOST:$NBD_PORT"
[iscsi]
listen = ["$HOST:$PORT"]
[[pool]]
name = "p"
path = "$work/p.pool"
create_size = "2GiB"
[[volume]]
pool = "p"
name = "disk"
size = "1GiB"
TOML
"$DUPLEXD" --config "$work/d.toml" >"$work/duplexd.log" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q "event=ready" "$work/duplexd.log" && break; sleep 0.1; done
grep -q "event=ready" "$work/duplexd.log" || { echo "FAIL - duplexd did not start"; cat "$work/duplexd.log"; exit 1; }

ISCSI="iscsi\\://$HOST\\:$PORT/iqn.2026-11.io.duplex\\:disk/0"
cd "$work"  # fio leaves its verify state files in the current directory
NBD="nbd://$HOST:$NBD_PORT/disk"
fails=0
run() {  # run WHAT fio-args...: fio must finish with err=0 on every job
  local what=$1; shift
  if "$FIO" --output-format=normal "$@" >"$work/fio.out" 2>&1 && ! grep -q "err= *[1-9]" "$work/fio.out" &&
    ! grep -q "verify: bad" "$work/fio.out"; then
    echo "ok - $what"
  else
    echo "FAIL - $what"; tail -20 "$work/fio.out"; fails=$((fails + 1))
  fi
}
# 1. libiscsi engine: random writes of 4 KiB..256 KiB at QD 16 over the first 256 MiB, then every
#    block read back and its crc32c header checked.
run "fio libiscsi randwrite 4k-256k qd16 verify=crc32c" --name=mixed --ioengine=libiscsi --filename="$ISCSI" \
  --rw=randwrite --bsrange=4k-256k --iodepth=16 --offset=0 --size=256m --verify=crc32c --verify_fatal=1 \
  --do_verify=1
# 2. written through iSCSI, verified through NBD (same layout: fixed 64 KiB blocks, same seed).
run "fio libiscsi write at 256 MiB" --name=x --ioengine=libiscsi --filename="$ISCSI" --rw=randwrite --bs=64k \
  --iodepth=8 --offset=256m --size=256m --verify=crc32c --do_verify=0
run "the same blocks verified through NBD" --name=x --ioengine=nbd --uri="$NBD" --rw=randwrite --bs=64k \
  --offset=256m --size=256m --verify=crc32c --verify_only=1 --verify_fatal=1
# 3. and the reverse: written through NBD, verified through iSCSI.
run "fio nbd write at 512 MiB" --name=y --ioengine=nbd --uri="$NBD" --rw=randwrite --bs=64k --iodepth=8 \
  --offset=512m --size=256m --verify=crc32c --do_verify=0
run "the same blocks verified through iSCSI" --name=y --ioengine=libiscsi --filename="$ISCSI" --rw=randwrite \
  --bs=64k --offset=512m --size=256m --verify=crc32c --verify_only=1 --verify_fatal=1
kill -TERM "$pid"
wait "$pid" && echo "ok - duplexd stopped cleanly" || { echo "FAIL - duplexd exit $?"; fails=$((fails + 1)); }
pid=
echo "$fails failed"
[ "$fails" -eq 0 ]
