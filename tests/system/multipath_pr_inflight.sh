#!/usr/bin/env bash
# PREEMPT AND ABORT and LOGICAL UNIT RESET against a command that is executing on the other node
# (docs/multipath.md "Persistent reservations across nodes"). n1's pool is a file served by
# nbdkit through its pause filter and mounted with nbdfuse (the daemon opens it O_DIRECT through
# io_uring, as a real disk), so the test can hold every I/O of n1's disk at will. Host A writes
# through n2; the write is forwarded to the owner n1 and waits there for the paused disk. Host B,
# through n1, then resets the LU, and later preempts and aborts A (tests/system/multipath_pr.py,
# phase "executing"): neither is answered before A's write is over (n2 aborts it when the change
# is installed there and answers n1 only once it has ended); A's write is never answered; A hears
# 29/03, then 2A/05 and 2F/00.
# Only 127.0.0.1, free ports; every process started here is stopped by its pid.
#   DUPLEXD=path/to/duplexd tests/system/multipath_pr_inflight.sh
set -euo pipefail
DUPLEXD=${DUPLEXD:-duplexd}
HOST=127.0.0.1
here=$(cd "$(dirname "$0")" && pwd)
for tool in nbdkit nbdfuse; do
  command -v "$tool" >/dev/null || { echo "SKIP - $tool not installed (scripts/install-deps.sh)"; exit 77; }
done
[ -c /dev/fuse ] || { echo "SKIP - no /dev/fuse"; exit 77; }
if [ "$(id -u)" != 0 ] && ! command -v fusermount3 >/dev/null; then echo "SKIP - FUSE mounts need root or fusermount3"; exit 77; fi
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"
# shellcheck source-path=SCRIPTDIR source=mirror_lib.sh
source "$here/mirror_lib.sh"
work_dir duplex-multipath-pr-inflight
T_START=$SECONDS
FUSE=$work/n1/fuse
PAUSE=$work/pause.sock
# The daemons hold the FUSE file open: stop them (and let the disk go) before nbdfuse is killed,
# else the work directory cannot be removed.
cleanup_hook() {
  if [ -n "${MIRROR_KEEP_LOGS:-}" ]; then mkdir -p "$MIRROR_KEEP_LOGS" && cp "$work"/*.log "$MIRROR_KEEP_LOGS"/ 2>/dev/null; fi
  [ -S "$PAUSE" ] && $PY -c "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b'r')" "$PAUSE" 2>/dev/null
  for n in n1 n2; do [ -n "${DPID[$n]:-}" ] && kill_node "$n"; done
  if mountpoint -q "$FUSE" 2>/dev/null; then umount "$FUSE" 2>/dev/null || umount -l "$FUSE" 2>/dev/null; fi
  return 0
}

# n1's pool: formatted by duplexd on a plain file first, then served by nbdkit (pause filter)
# and used by n1 through FUSE.
mkdir -p "$work/n1" "$work/fmt" "$FUSE"
cat >"$work/fmt.toml" <<TOML
state_dir = "$work/fmt"
[listen]
nbd = "$HOST:$(free_port)"
[[pool]]
name = "p"
path = "$work/n1/disk.img"
create_size = "128MiB"
TOML
"$DUPLEXD" --config "$work/fmt.toml" >"$work/fmt.log" 2>&1 &
fmt_pid=$!
pids+=("$fmt_pid")
for _ in $(seq 100); do grep -q "event=ready" "$work/fmt.log" && break; sleep 0.1; done
kill -TERM "$fmt_pid" 2>/dev/null || true
wait "$fmt_pid" || { echo "FAIL - formatting n1's pool: $(tail -5 "$work/fmt.log")"; exit 1; }
# nbdkit exits on SIGHUP: its own session.
setsid nbdkit -f -U "$work/n1.sock" --filter=pause file "$work/n1/disk.img" pause-control="$PAUSE" \
  </dev/null >"$work/nbdkit.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -S "$work/n1.sock" ] && [ -S "$PAUSE" ] && break; sleep 0.05; done
nbdfuse "$FUSE" --unix "$work/n1.sock" </dev/null >"$work/nbdfuse.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -f "$FUSE/nbd" ] && break; sleep 0.05; done
[ -f "$FUSE/nbd" ] || { echo "FAIL - nbdfuse did not mount: $(cat "$work/nbdfuse.log")"; exit 1; }
POOL_PATH[n1]=$FUSE/nbd

MIRROR_ISCSI=1
mirror_cluster "$TEST_MIRROR_TOML"
VOL=r  # for vol() (mirror_lib.sh)
mirrored_volume r $((16 * 1024 * 1024))
rc=0
PYTHONPATH=$here $PY "$here/multipath_pr.py" "$HOST" "${ISCSI[n1]}" "${ISCSI[n2]}" iqn.2026-11.io.duplex:r executing \
  "$PAUSE" || rc=$?
fails=$((fails + rc))
# Holding n1's disk is no failure of n1: both stay in the set.
if until_vol 10 r "$IN_SYNC"; then ok "both replicas still in sync"; else bad "replicas not in sync: $(vol "d['insync']")"; fi
finish_mirror_test n1 n2
