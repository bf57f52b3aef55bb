#!/usr/bin/env bash
# Real iSCSI clients (libiscsi's iscsi-ls/iscsi-inq/iscsi-readcapacity16, qemu-img and qemu-io over
# qemu's libiscsi driver) against duplexd, with NBD (libnbd) as the second path to the same volume:
#   1. one target per export: SendTargets lists the volume and its snapshots; INQUIRY standard and
#      VPD 0x80/0x83/0xb0 (serial = volume UUID, NAA designator); READ CAPACITY(16);
#      4 MiB random written through iSCSI read back through NBD, and the reverse; a snapshot LUN
#      reads its data and refuses writes; restart keeps the data.
#   2. configured targets: three LUNs in one target; one target over two pools on two event loops;
#      an ACL (default none, one initiator read-write, one read-only); CHAP (no credentials, wrong
#      user or secret refused, right secret accepted).
#   3. startup errors: two exports mapping to the same IQN.
# Loopback only, free ports chosen here, every process started here stopped by its pid.
#   DUPLEXD=path/to/duplexd tests/system/iscsi_clients.sh
set -euo pipefail
DUPLEXD=${DUPLEXD:-duplexd}
HOST=127.0.0.14
free_port() { /usr/bin/python3 -c "import socket; s=socket.socket(); s.bind(('$HOST', 0)); print(s.getsockname()[1])"; }
NBD_PORT=${ISCSI_TEST_NBD_PORT:-$(free_port)}
PORT=${ISCSI_TEST_PORT:-$(free_port)}
while [ "$PORT" = "$NBD_PORT" ]; do PORT=$(free_port); done
work=$(mktemp -d /var/tmp/duplex-iscsi.XXXXXX)
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
# check WHAT CMD...: CMD must succeed; its output goes to $work/last.out (shown on failure).
check() { local what=$1; shift; if "$@" >"$work/last.out" 2>&1; then ok "$what"; else bad "$what"; tail -15 "$work/last.out"; fi; }
# refuse WHAT CMD...: CMD must fail.
refuse() { local what=$1; shift; if "$@" >"$work/last.out" 2>&1; then bad "$what (it succeeded)"; tail -15 "$work/last.out"; else ok "$what"; fi; }
for tool in iscsi-ls iscsi-inq iscsi-readcapacity16 qemu-img qemu-io; do
  command -v "$tool" >/dev/null || { echo "iscsi_clients: $tool not found (scripts/install-deps.sh)"; exit 1; }
done
qemu-img --help | grep -qw iscsi || { echo "iscsi_clients: qemu-img has no iscsi driver (qemu-block-extra)"; exit 1; }

BASE=iqn.2026-11.io.duplex
IQN=$BASE:disk
PORTAL=$HOST:$PORT
URL=iscsi://$PORTAL/$IQN/0
NBD=nbd://$HOST:$NBD_PORT/disk
MiB=1048576

# qemu --image-opts/--target-image-opts for a window of a LUN: iscsi_win TARGET LUN OFFSET SIZE [INITIATOR]
iscsi_win() {
  local opts="driver=raw,offset=$3,size=$4,file.driver=iscsi,file.transport=tcp,file.portal=$PORTAL,file.target=$1,file.lun=$2"
  [ -n "${5:-}" ] && opts+=",file.initiator-name=$5"
  printf '%s' "$opts"
}
# NBD pread/pwrite with python3-libnbd: nbd_get URI OFFSET LENGTH OUT / nbd_put URI OFFSET FILE
nbd_get() {
  /usr/bin/python3 -c 'import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
open(sys.argv[4], "wb").write(h.pread(int(sys.argv[3]), int(sys.argv[2]))); h.shutdown()' "$@"
}
nbd_put() {
  /usr/bin/python3 -c 'import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
h.pwrite(open(sys.argv[3], "rb").read(), int(sys.argv[2])); h.flush(); h.shutdown()' "$@"
}

config_head() {
  cat <<TOML
state_dir = "$work/state"
[node]
name = "n1"
site = "a"
[listen]
nbd = "$HOST:$NBD_PORT"
[[pool]]
name = "p1"
path = "$work/p1.pool"
create_size = "1GiB"
[[volume]]
pool = "p1"
name = "disk"
size = "256MiB"
TOML
}
config_head >"$work/auto.toml"
cat >>"$work/auto.toml" <<TOML
[iscsi]
listen = ["$PORTAL"]
nop_interval = "1s"
TOML

start() {  # start CONFIG [ARGS...]: waits for the daemon's own event=ready line
  local cfg=$1; shift
  for p in "$PORT" "$NBD_PORT"; do
    if (exec 3<>"/dev/tcp/$HOST/$p") 2>/dev/null; then
      echo "iscsi_clients: $HOST:$p is already in use by another process" >&2
      return 1
    fi
  done
  local ready_before
  ready_before=$(grep -c event=ready "$work/duplexd.log" 2>/dev/null || true)
  setsid "$DUPLEXD" --config "$cfg" "$@" >"$work/out.log" 2>>"$work/duplexd.log" &
  daemon=$!
  pids+=("$daemon")
  for _ in $(seq 400); do
    if [ "$(grep -c event=ready "$work/duplexd.log" 2>/dev/null || true)" -gt "${ready_before:-0}" ]; then return 0; fi
    kill -0 "$daemon" 2>/dev/null || { tail -20 "$work/duplexd.log"; return 1; }
    sleep 0.05
  done
  echo "iscsi_clients: duplexd did not log event=ready" >&2
  return 1
}
stop() {
  kill -TERM "$daemon"
  local rc=0
  wait "$daemon" || rc=$?
  return $rc
}

# --- 1. one target per export ------------------------------------------------------------------
start "$work/auto.toml" --snapshot disk@base
grep -q "event=ready .*iscsi=$PORTAL" "$work/duplexd.log" && ok "event=ready names the portal" ||
  bad "event=ready names the portal: $(grep event=ready "$work/duplexd.log")"
grep -qx "iSCSI $URL" "$work/out.log" && ok "duplexd prints the iSCSI URI" || bad "duplexd prints $URL: $(cat "$work/out.log")"
check "iscsi-ls -s lists the targets" iscsi-ls -s "iscsi://$PORTAL"
cp "$work/last.out" "$work/ls.out"
grep -q "Target:$IQN " "$work/ls.out" && ok "iscsi-ls: volume target $IQN" || { bad "iscsi-ls: volume target"; cat "$work/ls.out"; }
grep -q "Target:$IQN:base " "$work/ls.out" && ok "iscsi-ls: snapshot target $IQN:base" || { bad "iscsi-ls: snapshot target"; cat "$work/ls.out"; }
grep -q "Portal:$PORTAL,1" "$work/ls.out" && ok "iscsi-ls: portal $PORTAL with TPGT 1" || { bad "iscsi-ls: portal,tpgt"; cat "$work/ls.out"; }
grep -q "Lun:0 .*Type:DIRECT_ACCESS" "$work/ls.out" && ok "iscsi-ls -s: LUN 0 is a disk" || { bad "iscsi-ls -s: LUN 0"; cat "$work/ls.out"; }

# The volume UUID (nbdinfo shows it in the export description): serial = its 32 hex digits.
uuid=$(nbdinfo --json "$NBD" | /usr/bin/python3 -c 'import json, re, sys
print(re.search(r"\(([0-9a-f-]{36})\)", json.load(sys.stdin)["exports"][0]["description"]).group(1))')
serial=${uuid//-/}
check "iscsi-inq standard" iscsi-inq "$URL"
grep -q "DUPLEX" "$work/last.out" && grep -q "VIRTUAL-DISK" "$work/last.out" && ok "INQUIRY: vendor DUPLEX, product VIRTUAL-DISK" ||
  { bad "INQUIRY vendor/product"; cat "$work/last.out"; }
check "iscsi-inq VPD 0x80" iscsi-inq -e 1 -c 128 "$URL"
grep -qi "$serial" "$work/last.out" && ok "VPD 0x80: serial = volume UUID ($serial)" || { bad "VPD 0x80 serial $serial"; cat "$work/last.out"; }
check "iscsi-inq VPD 0x83" iscsi-inq -e 1 -c 131 "$URL"
grep -q "NAA" "$work/last.out" && ok "VPD 0x83: NAA designator" || { bad "VPD 0x83 NAA"; cat "$work/last.out"; }
grep -qi "$IQN,t,0x0001" "$work/last.out" && ok "VPD 0x83: SCSI target port name $IQN,t,0x0001" ||
  { bad "VPD 0x83 target port name"; cat "$work/last.out"; }
check "iscsi-inq VPD 0xb0" iscsi-inq -e 1 -c 176 "$URL"
grep -qi "block limits\|transfer length" "$work/last.out" && ok "VPD 0xb0: block limits" || { bad "VPD 0xb0"; cat "$work/last.out"; }
check "iscsi-readcapacity16" iscsi-readcapacity16 -s "$URL"
[ "$(tr -d '[:space:]' <"$work/last.out")" = "$((256 * MiB))" ] && ok "READ CAPACITY(16): 256 MiB" ||
  bad "READ CAPACITY(16) size: $(cat "$work/last.out")"
check "iscsi-readcapacity16 of the snapshot" iscsi-readcapacity16 -s "iscsi://$PORTAL/$IQN:base/0"

# iSCSI -> NBD: 4 MiB random at 8 MiB through qemu-img (libiscsi), read back through libnbd.
head -c $((4 * MiB)) /dev/urandom >"$work/a.raw"
check "qemu-img convert 4 MiB -> iscsi:// (offset 8 MiB)" qemu-img convert -n -f raw "$work/a.raw" \
  --target-image-opts "$(iscsi_win "$IQN" 0 $((8 * MiB)) $((4 * MiB)))"
check "read back through NBD" nbd_get "$NBD" $((8 * MiB)) $((4 * MiB)) "$work/a.back"
check "iSCSI write = NBD read (cmp)" cmp "$work/a.raw" "$work/a.back"
# NBD -> iSCSI: 4 MiB random at 20 MiB + 512 through libnbd, read back through qemu-img (libiscsi).
head -c $((4 * MiB)) /dev/urandom >"$work/b.raw"
check "NBD write 4 MiB (offset 20 MiB + 512)" nbd_put "$NBD" $((20 * MiB + 512)) "$work/b.raw"
check "qemu-img convert iscsi:// -> file" qemu-img convert -O raw \
  --image-opts "$(iscsi_win "$IQN" 0 $((20 * MiB + 512)) $((4 * MiB)))" "$work/b.back"
check "NBD write = iSCSI read (cmp)" cmp "$work/b.raw" "$work/b.back"
check "qemu-io over iSCSI: write/read patterns, zero, discard, flush" sh -c "qemu-io -f raw \
  -c 'write -P 0xa5 40M 1M' -c 'read -P 0xa5 40M 1M' -c 'write -z 41M 64k' -c 'read -P 0 41M 64k' \
  -c 'discard 42M 1M' -c 'read -P 0 42M 1M' -c 'flush' '$URL' | tee '$work/qio.log' && ! grep -qi 'fail\|error' '$work/qio.log'"

# The snapshot taken at the first start is empty; its LUN reads zeroes and refuses writes.
SNAP_URL=iscsi://$PORTAL/$IQN:base/0
check "snapshot LUN reads (zeroes)" qemu-io -f raw -r -c 'read -P 0 8M 4M' "$SNAP_URL"
refuse "snapshot LUN refuses a write (qemu-io)" sh -c "qemu-io -f raw -c 'write -P 0x11 0 4k' '$SNAP_URL' 2>&1 | tee /dev/stderr | grep -q '^wrote'"
check "snapshot unchanged after the refused write" qemu-io -f raw -r -c 'read -P 0 0 4k' "$SNAP_URL"
check "SIGTERM: clean exit 0" stop
grep -q 'event=shutdown phase=done' "$work/duplexd.log" && ok "shutdown done" || bad "shutdown done"

# Restart with a snapshot of the written data: its target appears and reads the data.
start "$work/auto.toml" --snapshot disk@after
check "iscsi-ls after restart" iscsi-ls "iscsi://$PORTAL"
grep -q "Target:$IQN:after " "$work/last.out" && ok "new snapshot target $IQN:after" || { bad "snapshot target after restart"; cat "$work/last.out"; }
check "snapshot LUN reads the data written through iSCSI" qemu-img convert -O raw \
  --image-opts "$(iscsi_win "$IQN:after" 0 $((8 * MiB)) $((4 * MiB)))" "$work/a.snap"
check "snapshot data = what was written (cmp)" cmp "$work/a.raw" "$work/a.snap"
check "volume data survives restart (iSCSI read, cmp)" sh -c "qemu-img convert -O raw \
  --image-opts '$(iscsi_win "$IQN" 0 $((20 * MiB + 512)) $((4 * MiB)))' '$work/b.again' && cmp '$work/b.raw' '$work/b.again'"
check "SIGTERM" stop

# --- 2. configured targets: LUNs, ACL, CHAP ----------------------------------------------------
T_LUNS=iqn.2026-11.io.duplex.test:luns
T_ACL=iqn.2026-11.io.duplex.test:acl
T_CHAP=iqn.2026-11.io.duplex.test:chap
I_RW=iqn.2026-11.io.duplex.test:host-rw
I_RO=iqn.2026-11.io.duplex.test:host-ro
I_NO=iqn.2026-11.io.duplex.test:stranger
SECRET=chap-secret-0123
T_TWO=iqn.2026-11.io.duplex.test:two-loops
config_head >"$work/targets.toml"
cat >>"$work/targets.toml" <<TOML
[daemon]
loops = 2
[[pool]]
name = "p2"
path = "$work/p2.pool"
create_size = "1GiB"
[[volume]]
pool = "p2"
name = "other"
size = "64MiB"
[iscsi]
listen = ["$PORTAL"]
[[iscsi.target]]
name = "$T_LUNS"
luns = ["disk", "disk@base", "disk@after"]
alias = "three luns"
[[iscsi.target]]
name = "$T_TWO"
luns = ["other", "disk"]
[[iscsi.target]]
name = "$T_ACL"
luns = ["disk"]
default_access = "none"
[[iscsi.target.acl]]
initiator = "$I_RW"
access = "read-write"
[[iscsi.target.acl]]
initiator = "$I_RO"
access = "read-only"
[[iscsi.target]]
name = "$T_CHAP"
luns = ["disk"]
chap_user = "alice"
chap_secret = "$SECRET"
TOML
start "$work/targets.toml"
# (Not -s: iscsi-ls logs in to every target with the discovery credentials, and the CHAP one refuses.)
check "iscsi-ls (configured targets)" iscsi-ls -i "$I_RW" "iscsi://$PORTAL"
cp "$work/last.out" "$work/ls2.out"
grep -q "Target:$IQN " "$work/ls2.out" && bad "configured targets only: the automatic target is gone" || ok "configured targets only"
for t in "$T_LUNS" "$T_ACL" "$T_CHAP"; do
  grep -q "Target:$t " "$work/ls2.out" && ok "iscsi-ls lists $t" || { bad "iscsi-ls lists $t"; cat "$work/ls2.out"; }
done
check "LUN 0 of three: capacity 256 MiB" sh -c "[ \"\$(iscsi-readcapacity16 -s 'iscsi://$PORTAL/$T_LUNS/0')\" = $((256 * MiB)) ]"
check "LUN 1 (snapshot base) capacity" iscsi-readcapacity16 -s "iscsi://$PORTAL/$T_LUNS/1"
check "LUN 2 reads the snapshot 'after' data" sh -c "qemu-img convert -O raw \
  --image-opts '$(iscsi_win "$T_LUNS" 2 $((8 * MiB)) $((4 * MiB)))' '$work/a.lun2' && cmp '$work/a.raw' '$work/a.lun2'"
refuse "LUN 1 (snapshot) refuses writes" sh -c "qemu-io -f raw -c 'write -P 0x11 0 4k' 'iscsi://$PORTAL/$T_LUNS/1' 2>&1 | grep -q '^wrote'"

# One target, LUNs in two pools on two event loops (the session hops to each LUN's loop).
grep -q "event=ready .*loops=2" "$work/duplexd.log" && ok "two event loops" || bad "two event loops: $(grep event=ready "$work/duplexd.log" | tail -1)"
head -c $((2 * MiB)) /dev/urandom >"$work/c.raw"
check "write LUN 0 (pool p2, loop 1) through iSCSI" qemu-img convert -n -f raw "$work/c.raw" \
  --target-image-opts "$(iscsi_win "$T_TWO" 0 $MiB $((2 * MiB)))"
check "read it back through NBD (export other)" nbd_get "nbd://$HOST:$NBD_PORT/other" $MiB $((2 * MiB)) "$work/c.back"
check "LUN on the other loop: iSCSI write = NBD read (cmp)" cmp "$work/c.raw" "$work/c.back"
check "LUN 1 (pool p1, loop 0) of the same target reads the volume" sh -c "qemu-img convert -O raw \
  --image-opts '$(iscsi_win "$T_TWO" 1 $((20 * MiB + 512)) $((4 * MiB)))' '$work/b.two' && cmp '$work/b.raw' '$work/b.two'"

# ACL: default none, one initiator read-write, one read-only.
iscsi-ls -i "$I_NO" "iscsi://$PORTAL" >"$work/ls.no" 2>&1 || true
grep -q "Target:$T_ACL " "$work/ls.no" && bad "SendTargets hides the ACL target from an unlisted initiator" ||
  ok "SendTargets hides the ACL target from an unlisted initiator"
grep -q "Target:$T_ACL " "$work/ls2.out" && ok "SendTargets shows the ACL target to a listed initiator" ||
  bad "SendTargets shows the ACL target to a listed initiator"
refuse "unlisted initiator: login refused (iscsi-inq)" iscsi-inq -i "$I_NO" "iscsi://$PORTAL/$T_ACL/0"
grep -qi "authoriz\|not allowed\|0202\|login failed" "$work/last.out" || echo "# (iscsi-inq said: $(tr '\n' ' ' <"$work/last.out"))"
check "read-write initiator: iscsi-inq" iscsi-inq -i "$I_RW" "iscsi://$PORTAL/$T_ACL/0"
check "read-write initiator writes (qemu-io)" sh -c "qemu-io --image-opts \
  -c 'write -P 0x5c 60M 64k' -c 'read -P 0x5c 60M 64k' \
  'driver=iscsi,transport=tcp,portal=$PORTAL,target=$T_ACL,lun=0,initiator-name=$I_RW' | tee /dev/stderr | grep -q '^wrote'"
check "read-only initiator: iscsi-inq" iscsi-inq -i "$I_RO" "iscsi://$PORTAL/$T_ACL/0"
check "read-only initiator reads what the read-write one wrote" qemu-io -r --image-opts -c 'read -P 0x5c 60M 64k' \
  "driver=iscsi,transport=tcp,portal=$PORTAL,target=$T_ACL,lun=0,initiator-name=$I_RO"
refuse "read-only initiator cannot write" sh -c "qemu-io --image-opts -c 'write -P 0x66 60M 4k' \
  'driver=iscsi,transport=tcp,portal=$PORTAL,target=$T_ACL,lun=0,initiator-name=$I_RO' 2>&1 | tee /dev/stderr | grep -q '^wrote'"
check "data unchanged after the refused write" qemu-io -r --image-opts -c 'read -P 0x5c 60M 64k' \
  "driver=iscsi,transport=tcp,portal=$PORTAL,target=$T_ACL,lun=0,initiator-name=$I_RW"

# CHAP.
refuse "CHAP target: login without credentials refused" iscsi-inq "iscsi://$PORTAL/$T_CHAP/0"
refuse "CHAP target: wrong secret refused" iscsi-inq "iscsi://alice%wrong-secret-99@$PORTAL/$T_CHAP/0"
refuse "CHAP target: wrong user refused" iscsi-inq "iscsi://mallory%$SECRET@$PORTAL/$T_CHAP/0"
check "CHAP target: right user and secret accepted" iscsi-inq "iscsi://alice%$SECRET@$PORTAL/$T_CHAP/0"
check "CHAP target: qemu-img reads with the secret" qemu-img convert -O raw \
  --image-opts "driver=raw,offset=$((8 * MiB)),size=$((4 * MiB)),file.driver=iscsi,file.transport=tcp,file.portal=$PORTAL,file.target=$T_CHAP,file.lun=0,file.user=alice,file.password=$SECRET" \
  "$work/a.chap"
check "CHAP target data (cmp)" cmp "$work/a.raw" "$work/a.chap"
check "SIGTERM" stop
! grep -q "level=error" "$work/duplexd.log" && ok "no error events in the daemon log" ||
  { bad "error events in the daemon log"; grep "level=error" "$work/duplexd.log" | head; }

# --- 3. startup errors -------------------------------------------------------------------------
expect_fail() {  # what rc output pattern: non-zero exit, last line names the cause
  local what=$1 rc=$2 out=$3 pat=$4 last
  last=$(printf '%s\n' "$out" | tail -1)
  if [ "$rc" -ne 0 ] && printf '%s' "$last" | grep -q -- "$pat"; then ok "$what: exit $rc: $last"; else bad "$what: exit $rc: $out"; fi
}
sed "s#$work/p1.pool#$work/p3.pool#" "$work/auto.toml" >"$work/dup.toml"
printf '[[volume]]\nname = "Disk"\nsize = "1MiB"\n' >>"$work/dup.toml"
set +e; out=$("$DUPLEXD" --config "$work/dup.toml" 2>&1); rc=$?; set -e
expect_fail "two exports on one IQN" "$rc" "$out" "exports '[Dd]isk' and '[Dd]isk' both map to target $BASE:disk"
sed 's#^\[\[iscsi.target\]\]$#[[iscsi.target]]\nnmae = "x"#' "$work/targets.toml" >"$work/badkey.toml"
set +e; out=$("$DUPLEXD" --config "$work/badkey.toml" 2>&1); rc=$?; set -e
expect_fail "unknown key in [[iscsi.target]]" "$rc" "$out" "unknown key 'nmae' in \[\[iscsi.target\]\] #1"
sed 's#"disk@after"#"disk@nope"#' "$work/targets.toml" >"$work/nolun.toml"
set +e; out=$("$DUPLEXD" --config "$work/nolun.toml" 2>&1); rc=$?; set -e
expect_fail "a LUN that is not an export" "$rc" "$out" "LUN 2 'disk@nope' is not an export"

echo "iscsi_clients: $fails failures"
[ "$fails" -eq 0 ]
