#!/usr/bin/env bash
# The demo cluster and the scripting contract (DESIGN.md "Quick start"), end to end with real
# processes: `duplexctl demo up` starts etcd and two duplexd nodes and writes endpoints.json; data
# written over NBD through the demo volume's owner reads back over NBD and iSCSI; duplexctl drives
# volumes and snapshots through the REST API, with the exit codes docs/cli.md promises; a node killed
# with SIGKILL comes back with the endpoints' `restart` argv and its data; `demo down` stops every pid.
#
# Its own directory, base address 127.0.0.41 and a free etcd port: it never meets a running demo
# (127.0.0.11). Every process started here is stopped by pid at the end.
#   DUPLEXD=.../duplexd DUPLEXCTL=.../duplexctl tests/system/demo_cluster.sh
set -euo pipefail
DUPLEXD=${DUPLEXD:?set DUPLEXD to the duplexd binary}
DUPLEXCTL=${DUPLEXCTL:?set DUPLEXCTL to the duplexctl binary}
export DUPLEXD
PY=/usr/bin/python3
BASE=127.0.0.41
MiB=1048576
for tool in qemu-img iscsi-inq etcd; do
  command -v "$tool" >/dev/null || { echo "demo_cluster: $tool not found (scripts/install-deps.sh)"; exit 1; }
done
$PY -c 'import nbd' || { echo "demo_cluster: python3-libnbd missing"; exit 1; }

# Two consecutive free ports on 127.0.0.1 (etcd's client port and its peer port next to it).
free_pair() {
  $PY - <<'PYEOF'
import socket
for _ in range(200):
    a = socket.socket(); a.bind(("127.0.0.1", 0)); p = a.getsockname()[1]
    b = socket.socket()
    try:
        b.bind(("127.0.0.1", p + 1)); print(p); break
    except OSError:
        pass
    finally:
        a.close(); b.close()
PYEOF
}
ETCD_PORT=$(free_pair)
work=$(mktemp -d /var/tmp/duplex-demo-test.XXXXXX)
DIR=$work/demo
pids=()  # every pid this test saw started (demo processes and the restarted node)
cleanup() {
  "$DUPLEXCTL" demo down --dir "$DIR" >/dev/null 2>&1 || true
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
fails=0
ok() { echo "ok - $*"; }
bad() { echo "FAIL - $*"; fails=$((fails + 1)); }
# check DESCRIPTION CMD...: passes when CMD exits 0 (its output kept in $work/last.out).
check() {
  local what=$1; shift
  if "$@" >"$work/last.out" 2>&1; then ok "$what"; else bad "$what (exit $?)"; sed 's/^/#   /' "$work/last.out"; fi
}
ctl() { "$DUPLEXCTL" --dir "$DIR" "$@"; }
ep() { $PY -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$DIR/endpoints.json" "$1"; }
nbd_get() {
  $PY -c 'import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
open(sys.argv[4], "wb").write(h.pread(int(sys.argv[3]), int(sys.argv[2]))); h.shutdown()' "$@"
}
nbd_put() {
  $PY -c 'import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
h.pwrite(open(sys.argv[3], "rb").read(), int(sys.argv[2])); h.flush(); h.shutdown()' "$@"
}

# --- demo up ----------------------------------------------------------------------------------------
t0=$SECONDS
if "$DUPLEXCTL" demo up --dir "$DIR" --nodes 2 --size 256MiB --pool-size 2GiB --base-address $BASE \
  --etcd-port "$ETCD_PORT" --lease-ttl 3s >"$work/up.out" 2>"$work/up.err"; then
  ok "demo up: 2 nodes and etcd in $((SECONDS - t0)) s"
else
  bad "demo up failed (exit $?)"
  sed 's/^/#   /' "$work/up.err" "$work/up.out"
  for f in "$DIR"/*.log; do echo "# --- $f"; tail -5 "$f" | sed 's/^/#   /'; done
  echo "$fails failed"
  exit 1
fi
for p in $(ep "' '.join(str(n['pid']) for n in d['nodes'])") $(ep "d['etcd_process']['pid']"); do pids+=("$p"); done
grep -q "nbd://$BASE:10809/demo" "$work/up.out" && ok "it prints the NBD URI" || bad "no NBD URI in the output"
grep -q "duplexctl demo down --dir $DIR" "$work/up.out" && ok "it prints how to stop" || bad "no stop command printed"

# --- endpoints.json: the scripting contract -------------------------------------------------------
if $PY - "$DIR/endpoints.json" "$ETCD_PORT" "$BASE" <<'PYEOF'
import json, os, sys
d = json.load(open(sys.argv[1]))
port, base = sys.argv[2], sys.argv[3]
assert d["etcd"] == [f"http://127.0.0.1:{port}"], d["etcd"]
assert isinstance(d["token"], str) and len(d["token"]) == 64, "token"
assert d["volume"] == "demo"
assert len(d["nodes"]) == 2
prefix = base.rsplit(".", 1)[0]
last = int(base.rsplit(".", 1)[1])
for k, n in enumerate(d["nodes"]):
    for key in ("name", "site", "pid", "address", "api", "nbd", "iscsi", "restart"):
        assert key in n, f"node {k} lacks {key}"
    addr = f"{prefix}.{last + k}"
    assert n["name"] == f"n{k + 1}" and n["site"] == "ab"[k % 2], n
    assert n["address"] == addr and n["api"] == f"http://{addr}:7480", n
    assert n["nbd"] == f"nbd://{addr}:10809/demo", n["nbd"]
    assert n["iscsi"].startswith(f"iscsi://{addr}:3260/iqn.") and n["iscsi"].endswith(":demo/0"), n["iscsi"]
    assert isinstance(n["restart"], list) and n["restart"][1:] == ["--config", os.path.join(os.path.dirname(sys.argv[1]), n["name"] + ".toml")], n["restart"]
    os.kill(n["pid"], 0)
assert d["owner"] in ("n1", "n2"), d["owner"]
PYEOF
then ok "endpoints.json has every required key, with live pids"; else bad "endpoints.json is not the contract's shape"; fi
mode=$(stat -c %a "$DIR/token")
[ "$mode" = 600 ] && ok "token file is 0600" || bad "token file mode $mode"

"$DUPLEXCTL" demo up --dir "$DIR" --base-address $BASE --etcd-port "$ETCD_PORT" >/dev/null 2>"$work/again.err" && rc=0 || rc=$?
if [ "$rc" -eq 1 ] && grep -q "already running" "$work/again.err"; then ok "a second demo up on the running DIR: exit 1, 'already running'"
else bad "second demo up: exit $rc: $(cat "$work/again.err")"; fi
check "demo status: everything running" "$DUPLEXCTL" demo status --dir "$DIR"

# --- data through the owner: NBD write, NBD and iSCSI read ------------------------------------------
OWNER=$(ep "d['owner']")
OWNER_NBD=$(ep "[n for n in d['nodes'] if n['name'] == d['owner']][0]['nbd']")
OWNER_ISCSI=$(ep "[n for n in d['nodes'] if n['name'] == d['owner']][0]['iscsi']")
OWNER_API=$(ep "[n for n in d['nodes'] if n['name'] == d['owner']][0]['api']")
# One sample of the owner's /metrics: metric NAME with exactly these LABELS (0 when absent).
metric() {
  ctl --api "$OWNER_API" metrics 2>/dev/null | $PY -c '
import sys
want = sys.argv[1]
v = 0
for line in sys.stdin:
    if line.startswith(want + " "):
        v = float(line.split()[-1])
print(int(v))' "$1"
}
w0=$(metric 'duplex_volume_bytes_total{volume="demo",op="write"}')
ops0=$(metric 'duplex_volume_ops_total{volume="demo",op="write"}')
head -c $((4 * MiB)) /dev/urandom >"$work/pattern"
check "NBD write of 4 MiB at 8 MiB + 512 through the owner $OWNER" nbd_put "$OWNER_NBD" $((8 * MiB + 512)) "$work/pattern"
check "NBD read back" nbd_get "$OWNER_NBD" $((8 * MiB + 512)) $((4 * MiB)) "$work/back.nbd"
check "NBD read = written" cmp "$work/pattern" "$work/back.nbd"
w1=$(metric 'duplex_volume_bytes_total{volume="demo",op="write"}')
ops1=$(metric 'duplex_volume_ops_total{volume="demo",op="write"}')
r1=$(metric 'duplex_volume_bytes_total{volume="demo",op="read"}')
wc1=$(metric 'duplex_volume_latency_seconds_count{volume="demo",op="write"}')
if [ $((w1 - w0)) -ge $((4 * MiB)) ] && [ "$ops1" -gt "$ops0" ] && [ "$r1" -ge $((4 * MiB)) ] && [ "$wc1" -ge "$((ops1 - ops0))" ]; then
  ok "/metrics counters moved: write bytes +$((w1 - w0)), write ops +$((ops1 - ops0)), read bytes $r1"
else bad "/metrics counters did not move as expected: write bytes $w0 -> $w1, ops $ops0 -> $ops1, read $r1, latency count $wc1"; fi
[ "$(metric "duplex_replica_state{volume=\"demo\",node=\"$OWNER\",state=\"in-sync\"}")" = 1 ] &&
  ok "/metrics: the owner's replica of demo is in-sync" || bad "/metrics: replica state of demo is not in-sync"
[ "$(metric "duplex_node_lease_ok{node=\"$OWNER\"}")" = 1 ] && ok "/metrics: node lease ok" || bad "/metrics: lease not ok"
portal=${OWNER_ISCSI#iscsi://}; portal=${portal%%/*}
iqn=${OWNER_ISCSI#iscsi://*/}; iqn=${iqn%/0}
check "iscsi-inq on the owner's LUN" iscsi-inq "$OWNER_ISCSI"
check "iSCSI read (qemu-img convert over libiscsi)" qemu-img convert -O raw --image-opts \
  "driver=raw,offset=$((8 * MiB + 512)),size=$((4 * MiB)),file.driver=iscsi,file.transport=tcp,file.portal=$portal,file.target=$iqn,file.lun=0" \
  "$work/back.iscsi"
check "iSCSI read = written" cmp "$work/pattern" "$work/back.iscsi"

# --- duplexctl against the API ------------------------------------------------------------------------
check "volume create t1 64MiB" ctl volume create t1 --size 64MiB --replicas 1
check "volume list shows t1" sh -c "'$DUPLEXCTL' --dir '$DIR' volume list | grep -q '^t1 '"
check "volume grow t1 to 128MiB" ctl volume grow t1 --size 128MiB
ctl --json volume show t1 >"$work/t1.json" 2>"$work/t1.err" || true
if $PY - "$work/t1.json" <<'PYEOF'
import json, sys
v = json.load(open(sys.argv[1]))
assert v["name"] == "t1" and v["size"] == 128 * 1048576, (v.get("name"), v.get("size"))
assert v["replicas"], "no replicas"
for r in v["replicas"]:
    for key in ("node", "state", "generation", "dirty_bytes", "resync_progress"):
        assert key in r, f"replica lacks {key}"
PYEOF
then ok "volume show --json: size grown, replicas with node/state/generation/dirty/resync"
else bad "volume show --json: $(head -c 400 "$work/t1.json") $(cat "$work/t1.err")"; fi
check "human volume show t1" sh -c "'$DUPLEXCTL' --dir '$DIR' volume show t1 | grep -q '^replicas:'"
check "snapshot create t1@s1" ctl snapshot create t1@s1
check "snapshot list t1 has s1" sh -c "'$DUPLEXCTL' --dir '$DIR' --json snapshot list t1 | $PY -c 'import json,sys; assert [s for s in json.load(sys.stdin) if s[\"name\"] == \"s1\"]'"
check "snapshot delete t1 s1" ctl snapshot delete t1 s1
check "snapshot list t1: s1 gone" sh -c "'$DUPLEXCTL' --dir '$DIR' --json snapshot list t1 | $PY -c 'import json,sys; assert not [s for s in json.load(sys.stdin) if s[\"name\"] == \"s1\"]'"
check "volume delete t1 --yes" ctl volume delete t1 --yes

ctl volume show t1 >"$work/nf.out" 2>"$work/nf.err" && rc=0 || rc=$?
if [ "$rc" -eq 1 ] && [ "$(wc -l <"$work/nf.err")" -eq 1 ] && grep -q "^duplexctl: .*t1.*(404 not_found)$" "$work/nf.err"; then
  ok "unknown volume: exit 1, one line: $(cat "$work/nf.err")"
else bad "unknown volume: exit $rc, stderr: $(cat "$work/nf.err")"; fi
ctl volume create t2 >/dev/null 2>&1 && rc=0 || rc=$?
[ "$rc" -eq 2 ] && ok "missing --size: exit 2" || bad "missing --size: exit $rc"
ctl volume frobnicate >/dev/null 2>&1 && rc=0 || rc=$?
[ "$rc" -eq 2 ] && ok "unknown command: exit 2" || bad "unknown command: exit $rc"
"$DUPLEXCTL" --api http://127.0.0.1:1 volume list >/dev/null 2>"$work/unreach.err" && rc=0 || rc=$?
[ "$rc" -eq 1 ] && [ "$(wc -l <"$work/unreach.err")" -eq 1 ] && ok "unreachable API: exit 1, one line" || bad "unreachable API: exit $rc"

# --- kill -9 the owner, restart it with endpoints.json's argv: the data is still there ---------------
OWNER_PID=$(ep "[n for n in d['nodes'] if n['name'] == d['owner']][0]['pid']")
mapfile -t RESTART < <(ep "'\n'.join([n for n in d['nodes'] if n['name'] == d['owner']][0]['restart'])")
OWNER_API=$(ep "[n for n in d['nodes'] if n['name'] == d['owner']][0]['api']")
kill -KILL "$OWNER_PID"
for _ in $(seq 50); do kill -0 "$OWNER_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$OWNER_PID" 2>/dev/null && bad "owner $OWNER survived SIGKILL" || ok "owner $OWNER killed (SIGKILL)"
"${RESTART[@]}" >>"$DIR/$OWNER.log.restart" 2>&1 </dev/null &
NEW_PID=$!
pids+=("$NEW_PID")
up=0
for _ in $(seq 300); do
  if "$DUPLEXCTL" --dir "$DIR" --api "$OWNER_API" node show "$OWNER" >/dev/null 2>&1 &&
    ctl --json volume show demo 2>/dev/null | $PY -c "import json,sys; v=json.load(sys.stdin); assert v['state']=='ready' and any(p['node']=='$OWNER' for p in v['paths'])" 2>/dev/null; then
    up=1; break
  fi
  sleep 0.1
done
[ "$up" -eq 1 ] && ok "restarted $OWNER with the restart argv: healthy, serving demo again" || bad "restarted $OWNER is not serving demo"
check "NBD read after the restart" nbd_get "$OWNER_NBD" $((8 * MiB + 512)) $((4 * MiB)) "$work/back2.nbd"
check "data survived kill -9 and restart" cmp "$work/pattern" "$work/back2.nbd"

# --- demo down: every pid gone ---------------------------------------------------------------------
check "demo down" "$DUPLEXCTL" demo down --dir "$DIR"
alive=""
for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && [ "$(awk '{print $3}' /proc/"$p"/stat 2>/dev/null)" != Z ] && alive+=" $p"; done
wait "$NEW_PID" 2>/dev/null || true
[ -z "$alive" ] && ok "every pid is gone after demo down (${#pids[@]} processes)" || bad "still running after demo down:$alive"
[ -d "$DIR/n1" ] && [ -f "$DIR/token" ] && ok "demo down keeps the data" || bad "demo down removed data"
check "demo down --purge removes DIR" sh -c "'$DUPLEXCTL' demo down --dir '$DIR' --purge && [ ! -e '$DIR' ]"

echo "$fails failed"
[ "$fails" -eq 0 ]
