#!/usr/bin/env bash
# The failure-table row "pool/disk failure on one node" (../shared/DESIGN.md; docs/mirror.md
# "Failures and their outcome") with a real disk fault: one node's pool is a file served by
# nbdkit through its error filter and mounted with nbdfuse, so that while $work/disk-fail exists
# every read, write and flush of that pool fails with EIO (the daemon opens it O_DIRECT through
# io_uring, as a real disk). The failing node is n1, the owner (default), or with DISK_NODE=n2 the
# other node. Real etcd, two real duplexd, libnbd clients writing through both nodes:
#   - the fault: the failing node leaves the in-sync set by a logged decision naming the disk
#     error; its replica is `failed` and not a member in the API and `duplexctl volume show`;
#   - the writers through both nodes go on with no error; writes through the failing node are
#     forwarded to its peer; no acknowledged write is lost; both nodes read the same data;
#   - the peer does not take the failed replica back (the set stays {peer});
#   - recovery: the disk works again (the fault file removed) and the node restarts: the peer
#     copies the whole volume to it (an inconsistent replica is never trusted for an incremental
#     resync), and both are in the set again.
# Only 127.0.0.1, free ports; every process started here is stopped by its pid.
#   DUPLEXD=path/to/duplexd DUPLEXCTL=path/to/duplexctl [DISK_NODE=n2] tests/system/mirror_disk.sh
set -euo pipefail
# DISK_NODE=n2: the disk of n2 (not the owner) fails instead of n1's (the owner).
D=${DISK_NODE:-n1}
case $D in n1) P=n2 ;; n2) P=n1 ;; *) echo "DISK_NODE must be n1 or n2"; exit 2 ;; esac
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
work_dir duplex-mirror-disk
IO="$PY $here/mirror_failures_io.py"
BS=4096
SIZE=$((32 * 1024 * 1024))
T_START=$SECONDS
FUSE=$work/${D}/fuse
# The daemons hold the FUSE file open: stop them and unmount before nbdfuse is killed, else the
# work directory cannot be removed.
cleanup_hook() {
  if [ -n "${MIRROR_KEEP_LOGS:-}" ]; then mkdir -p "$MIRROR_KEEP_LOGS" && cp "$work"/*.log "$work"/*.jsonl "$MIRROR_KEEP_LOGS"/ 2>/dev/null; fi
  for n in ${D} ${P}; do [ -n "${DPID[$n]:-}" ] && kill_node "$n"; done
  if mountpoint -q "$FUSE" 2>/dev/null; then umount "$FUSE" 2>/dev/null || umount -l "$FUSE" 2>/dev/null; fi
  return 0
}

# ${D}'s pool: created by duplexd on a plain file first (a pool must be formatted), then that file is
# served by nbdkit and ${D} uses it through FUSE.
mkdir -p "$work/${D}" "$work/fmt" "$FUSE"
cat >"$work/fmt.toml" <<TOML
state_dir = "$work/fmt"
[listen]
nbd = "$HOST:$(free_port)"
[[pool]]
name = "p"
path = "$work/${D}/disk.img"
create_size = "256MiB"
TOML
"$DUPLEXD" --config "$work/fmt.toml" >"$work/fmt.log" 2>&1 &
fmt_pid=$!
pids+=("$fmt_pid")
for _ in $(seq 100); do grep -q "event=ready" "$work/fmt.log" && break; sleep 0.1; done
kill -TERM "$fmt_pid" 2>/dev/null || true
wait "$fmt_pid" || { echo "FAIL - formatting ${D}'s pool: $(tail -5 "$work/fmt.log")"; exit 1; }
# nbdkit exits on SIGHUP: its own session.
setsid nbdkit -f -U "$work/${D}.sock" --filter=error file "$work/${D}/disk.img" \
  error-rate=100% error-file="$work/disk-fail" error=EIO </dev/null >"$work/nbdkit.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -S "$work/${D}.sock" ] && break; sleep 0.05; done
nbdfuse "$FUSE" --unix "$work/${D}.sock" </dev/null >"$work/nbdfuse.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -f "$FUSE/nbd" ] && break; sleep 0.05; done
[ -f "$FUSE/nbd" ] || { echo "FAIL - nbdfuse did not mount: $(cat "$work/nbdfuse.log")"; exit 1; }
POOL_PATH[${D}]=$FUSE/nbd

mirror_cluster "$TEST_MIRROR_TOML"

VOL=d  # for vol() (mirror_lib.sh)
# writer NODE TAG START SECONDS: tagged writes through NODE's export, in the background (pid in $!).
writer() {
  $IO write "$(nbd_uri "$1" d)" "$work/w$2.log" --start "$3" --count 256 --seconds "$4" --pause 0.004 --stop "$work/w$2.stop" \
    --tag "$2" >"$work/w$2.out" 2>&1 &
  pids+=($!)
}

api POST /v1/volumes "{\"name\": \"d\", \"size\": $SIZE, \"replicas\": 2, \"preferred_site\": \"a\"}" >/dev/null
if until_vol 60 d "$IN_SYNC and d['insync']['owner']=='n1'"; then
  ok "volume d ($SIZE bytes): in sync, n1 owns it; ${D}'s pool is on nbdkit + nbdfuse"
else
  bad "volume d never in sync"
  exit 1
fi
for n in ${D} ${P}; do
  for _ in $(seq 100); do nbdinfo --size "$(nbd_uri "$n" d)" >/dev/null 2>&1 && break; sleep 0.1; done
done
gen0=$(vol "d['insync']['generation']")

echo "# disk failure on ${D} while clients write through both nodes"
writer "${D}" 1 0 60
w1=$!
writer ${P} 2 512 60
w2=$!
until_acks "$work/w1.log" 100 20 || bad "the writer through ${D} did not start: $(cat "$work/w1.out")"
until_acks "$work/w2.log" 100 20 || bad "the writer through ${P} did not start: $(cat "$work/w2.out")"
touch "$work/disk-fail"
if until_vol 20 d "d['insync']['members']==['${P}'] and d['insync']['generation']>$gen0"; then
  gen1=$(vol "d['insync']['generation']")
  ok "${D} left the in-sync set: generation $gen1, reason: $(vol "d['insync']['reason']")"
else
  bad "${D} still in the in-sync set after its disk failed: $(vol "d['insync']")"
fi
a1=$(acks "$work/w1.log")
a2=$(acks "$work/w2.log")
e1=$(grep -c '^E' "$work/w1.log" || true)
e2=$(grep -c '^E' "$work/w2.log" || true)
reason=$(vol "d['insync']['reason']")
if echo "$reason" | grep -q "${D}: local replica failed" && echo "$reason" | grep -qi "input/output error"; then
  ok "the decision names the disk error"
else
  bad "the decision does not name the disk error: $reason"
fi
if grep -q "event=mirror.local_error volume=d node=${D} error=\".*[Ii]nput/output error" "$work/${D}.log"; then
  ok "${D} logged: $(grep -o "event=mirror.local_error volume=d node=${D}.*" "$work/${D}.log" | head -1)"
else
  bad "no event=mirror.local_error naming the I/O error in ${D}'s log"
fi
if grep -q "injecting EIO" "$work/nbdkit.log"; then
  ok "nbdkit failed ${D}'s disk requests ($(grep -c "injecting EIO" "$work/nbdkit.log") injected errors)"
else
  bad "nbdkit injected no error: the fault did not reach the disk"
fi
# The decision is made: writes through both nodes go on for a few seconds more, none may fail.
until_acks "$work/w1.log" $((a1 + 200)) 20 || true
until_acks "$work/w2.log" $((a2 + 200)) 20 || true
touch "$work/w1.stop" "$work/w2.stop"
wait "$w1" "$w2" || true
for t in 1 2; do
  s=$(tail -1 "$work/w$t.out")
  n=$([ $t = 1 ] && echo "${D}" || echo ${P})
  eb=$([ $t = 1 ] && echo "$e1" || echo "$e2")
  ab=$([ $t = 1 ] && echo "$a1" || echo "$a2")
  ea=$(grep -c '^E' "$work/w$t.log" || true)
  if [ "$ea" = "$eb" ] && [ "$(acks "$work/w$t.log")" -gt $((ab + 100)) ]; then
    ok "writes through $n go on after the decision: $(($(acks "$work/w$t.log") - ab)) more acknowledged, no error since ($s)"
  else
    bad "writes through $n after the decision: $((ea - eb)) errors since, $(($(acks "$work/w$t.log") - ab)) acknowledged ($s)"
  fi
  if [ "$eb" = 0 ]; then
    ok "the writer through $n saw no error at all, even while the disk failed"
  else
    echo "  note: the writer through $n saw $eb error(s) before the decision: $(field "$s" first_error)"
  fi
done
for n in ${D} ${P}; do
  if out=$($IO check "$(nbd_uri "$n" d)" "$work/w1.log" --tag 1 2>&1) && out2=$($IO check "$(nbd_uri "$n" d)" "$work/w2.log" --tag 2 2>&1); then
    ok "no acknowledged write lost, read through $n: $out / $out2"
  else
    bad "read through $n: $out ${out2:-}"
  fi
done
d1=$($IO digest "$(nbd_uri "${D}" d)" 0 $((1024 * BS)) 2>&1 || true)
d2=$($IO digest "$(nbd_uri ${P} d)" 0 $((1024 * BS)) 2>&1 || true)
if [ "$d1" = "$d2" ] && [ ${#d1} = 64 ]; then ok "${D} and ${P} read the same 4 MiB"; else bad "${D} reads $d1, ${P} reads $d2"; fi
# ${P} must not take the failed replica back (a resync from its bitmap would copy nothing).
if [ "$(vol "d['insync']['generation']")" = "${gen1:-?}" ] && [ "$(vol "d['insync']['members']")" = "['${P}']" ]; then
  ok "the set stayed {${P}} at generation $gen1 while the clients wrote (the failed replica was not taken back)"
else
  bad "the set changed again after ${D} left: $(vol "d['insync']"), decisions $(vol "len(d['decisions'])")"
fi
if until_vol 10 d "r['${D}'].get('member') is False and r['${D}'].get('state')=='failed' and r['${P}'].get('role')=='owner'"; then
  ok "the API: ${D} state $(vol "r['${D}']['state']") member=$(vol "r['${D}']['member']"), ${P} $(vol "r['${P}']['role']"); last decision: $(vol "d['decisions'][-1]")"
else
  bad "the API does not show ${D}'s replica out: $(vol "d['replicas']")"
fi
if [ -n "${DUPLEXCTL:-}" ]; then
  shown=$("$DUPLEXCTL" --api "$API" --token "$TOKEN" volume show d 2>&1 || true)
  if echo "$shown" | grep -Eq "^ *${D} .* no +failed" && echo "$shown" | grep -q "members ${P},"; then
    ok "duplexctl volume show d: ${D} not a member ($(echo "$shown" | grep -E "^ *${D} " | tr -s ' '))"
  else
    bad "duplexctl volume show d: $shown"
  fi
fi

# Recovery: the disk works again (or was replaced by one holding the pool) and ${D} restarts; its
# hello says its replica is inconsistent, so ${P} copies the whole volume.
echo "# recovery: ${D}'s disk works again, ${D} restarts"
rm -f "$work/disk-fail"
stop_node "${D}" || bad "${D}'s exit status on SIGTERM after its disk failed"
start_node "${D}"
if until_vol 60 d "$IN_SYNC"; then
  ok "${D} resynced and back in the set: generation $(vol "d['insync']['generation']"), owner $(vol "d['insync']['owner']")"
else
  bad "${D} not back in sync after its disk recovered"
fi
full=$(grep -o "event=mirror.resync_start peer=${D} bytes=[0-9]* volume=d" "$work/${P}.log" | tail -1 | grep -o "bytes=[0-9]*" | cut -d= -f2 || true)
if [ "${full:-0}" = "$SIZE" ]; then
  ok "a full resync: ${P} copied $full bytes of $SIZE"
else
  bad "the resync of the inconsistent replica copied '${full:-}' bytes, not the whole $SIZE"
fi
for n in ${D} ${P}; do
  if out=$($IO check "$(nbd_uri "$n" d)" "$work/w1.log" --tag 1 2>&1) && out2=$($IO check "$(nbd_uri "$n" d)" "$work/w2.log" --tag 2 2>&1); then
    ok "after recovery $n serves every acknowledged write: $out / $out2"
  else
    bad "after recovery, read through $n: $out ${out2:-}"
  fi
done
d1=$($IO digest "$(nbd_uri "${D}" d)" 0 $SIZE 2>&1 || true)
d2=$($IO digest "$(nbd_uri ${P} d)" 0 $SIZE 2>&1 || true)
if [ "$d1" = "$d2" ] && [ ${#d1} = 64 ]; then ok "after recovery ${D} and ${P} read the same $SIZE bytes"; else bad "after recovery ${D} reads $d1, ${P} $d2"; fi

for n in ${P} ${D}; do
  if stop_node "$n"; then ok "$n stops cleanly"; else bad "$n exit status on SIGTERM"; fi
done
echo "took $((SECONDS - T_START)) s"
if [ "$fails" -ne 0 ]; then
  for n in ${D} ${P}; do echo "--- $n.log (tail)"; tail -n 60 "$work/$n.log"; done
  echo "$fails check(s) failed"
  exit 1
fi
echo "all checks passed"
