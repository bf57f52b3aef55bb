#!/usr/bin/env bash
# The mirror's failure table (../shared/DESIGN.md "Failure scenarios"; docs/mirror.md "Failures and
# their outcome") with a real etcd, two real duplexd and real NBD clients (libnbd, through
# tests/system/mirror_failures_io.py), one section per row:
#   1. one node dies: kill -9 of n1 (the owner) during writes through n2: n2's I/O goes on within a
#      few seconds, no acknowledged write is lost; n1 returns: incremental resync, both in sync,
#      n1 serves the same data;
#   2. witness lost alone: etcd killed, reads and writes through both nodes go on (the nodes say
#      etcd is gone); a second failure (link cut) then stops writes on both nodes after
#      freeze_timeout, none goes on alone; etcd restarted and the link healed: back in sync, the
#      replicas agree;
#   3. rolling failure: n2 stopped, n1 writes alone (n2 removed by CAS), n1 killed, n2 started: n2
#      refuses reads and writes, the API and `duplexctl volume show` say it is outdated and who
#      holds the data; a promote without --accept-data-loss is refused naming what may be lost;
#      with it n2 serves (decision logged with may_lose and the reason); n1 returns, never serves
#      its stale data, is resynced from n2;
#   4. node isolated from everything: n2 cut from the link and from etcd (its etcd traffic goes
#      through a second link_proxy.py): n2's writes fail, its reads fail after its lease; n1 goes
#      on after removing n2; heal: back in sync;
#   5. site partition: the same with every byte silently dropped (blackhole) rather than reset,
#      etcd (the witness majority) on n1's side.
#   6. a slow peer (issue 7 item 3): 1.5 s of latency on the link, both nodes alive: n1 ejects n2
#      by timeout and goes on (no write waits longer than the bound), instead of stalling; the
#      latency gone, n2 is resynced and back.
#   In rows 4 and 5 n2, once its frozen write failed, is cut off: over iSCSI it answers NOT READY
#   04/0C at once and its RTPG shows its own group unavailable and n1's active/optimized.
# (Link cut with both nodes alive is in mirror_basic.sh.) Only 127.0.0.1, free ports; every
# process started here is stopped by its pid.
#   DUPLEXD=path/to/duplexd DUPLEXCTL=path/to/duplexctl tests/system/mirror_failures.sh
set -euo pipefail
DUPLEXD=${DUPLEXD:-duplexd}
HOST=127.0.0.1
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"
# shellcheck source-path=SCRIPTDIR source=mirror_lib.sh
source "$here/mirror_lib.sh"
work_dir duplex-mirror-fail
IO="$PY $here/mirror_failures_io.py"
BS=4096
SIZE=$((128 * 1024 * 1024))
T_START=$SECONDS

# n2 reaches etcd through a proxy (rows 4 and 5); short timings so that each fault is decided in
# seconds; resyncs capped at 2 MiB/s so that a returning node spends a moment outdated (row 3
# reads through it meanwhile).
MIRROR_ETCD_PROXY=1
MIRROR_ISCSI=1
mirror_cluster "$(printf '[mirror]\nping_interval = "200ms"\nlink_timeout = "1s"\nreplicate_timeout = "1s"\nfreeze_timeout = "8s"\ntiebreak_delay = "1s"\nlease = "500ms"\nresync_rate_max = "2MiB"\nresync_rate_min = "1MiB"')"
FREEZE=8

# vol PYEXPR: the expression on d (GET /v1/volumes/f) and r (replicas by node), printed.
VOL=f  # for vol() (mirror_lib.sh)
# op NODE read|write BLOCK [TIMEOUT]: one 4 KiB I/O through NODE's export, "ok S" / "error S msg".
op() { $IO op "$(nbd_uri "$1" f)" "$2" $(($3 * BS)) --timeout "${4:-20}" || true; }
# is_in_sync SECONDS: both replicas members, in-sync and linked.
is_in_sync() { until_vol "$1" f "$IN_SYNC"; }

api POST /v1/volumes "{\"name\": \"f\", \"size\": $SIZE, \"replicas\": 2, \"preferred_site\": \"a\"}" >/dev/null
if is_in_sync 60; then ok "volume f ($SIZE bytes): both replicas in sync, n1 owns it"; else bad "volume f never in sync"; exit 1; fi
for n in n1 n2; do
  for _ in $(seq 100); do nbdinfo --size "$(nbd_uri $n f)" >/dev/null 2>&1 && break; sleep 0.1; done
done

# ---------------------------------------------------------------------------------------------
echo "# 1. one node dies: kill -9 of n1 (the owner) while a client writes through n2"
API=${APIS[n2]}
w1=$work/w1.log
$IO write "$(nbd_uri n2 f)" "$w1" --start 0 --count 512 --seconds 120 --stop "$work/w1.stop" --tag 1 >"$work/w1.out" 2>&1 &
writer=$!
pids+=("$writer")
until_acks "$w1" 200 30 || bad "the writer through n2 did not start: $(cat "$work/w1.out")"
before=$(acks "$w1")
t_kill=$(now)
kill_node n1
if until_acks "$w1" $((before + 50)) 30; then
  resumed=$(since "$t_kill")
  if $PY -c "import sys; sys.exit(0 if $resumed <= 10 else 1)"; then
    ok "writes through n2 go on ${resumed}s after n1 was killed (50 more acknowledged)"
  else
    bad "writes through n2 resumed only ${resumed}s after n1 was killed"
  fi
else
  bad "writes through n2 did not resume within 30 s of n1's death ($(($(acks "$w1") - before)) acknowledged since)"
fi
until_acks "$w1" $(($(acks "$w1") + 100)) 20 || true
touch "$work/w1.stop"
wait "$writer" || true
sum1=$(tail -1 "$work/w1.out")
if [ "$(field "$sum1" errors)" = 0 ] && [ "$(field "$sum1" acked)" -gt 0 ]; then
  ok "the writer through n2 saw no error: $sum1"
else
  bad "the writer through n2 saw errors: $sum1"
fi
if until_vol 20 f "d['insync']['members']==['n2'] and r['n2'].get('role')=='owner'"; then
  ok "n2 removed n1 from the in-sync set (generation $(vol "d['insync']['generation']"): $(vol "d['insync']['reason']"))"
else
  bad "the in-sync set is not {n2}"
fi
if out=$($IO check "$(nbd_uri n2 f)" "$w1" --tag 1 2>&1); then
  ok "no acknowledged write lost, read back through n2: $out"
else
  bad "acknowledged writes lost through n2: $out"
fi
start_node n1
if is_in_sync 90; then ok "n1 returned: both replicas in sync again, owner $(vol "d['insync']['owner']")"; else bad "n1 not back in sync"; fi
resync=$(grep "event=mirror.resync_start peer=n1 bytes=[0-9]* volume=f node=n2" "$work/n2.log" | tail -1 | grep -o "bytes=[0-9]*" | cut -d= -f2 || true)
reported=$(vol "max(x.get('resync_bytes_total', 0) for x in d['replicas'])")
if [ -n "$resync" ] && [ "$resync" -gt 0 ] && [ "$resync" -le $((SIZE / 8)) ] &&
  [ "$reported" -gt 0 ] 2>/dev/null && [ "$reported" -le $((SIZE / 8)) ]; then
  ok "incremental resync: n2 copied $resync bytes of $SIZE (replica report resync_bytes_total $reported)"
else
  bad "resync not incremental: n2's resync_start bytes='$resync', reported resync_bytes_total $reported, volume $SIZE"
fi
if out=$($IO check "$(nbd_uri n1 f)" "$w1" --tag 1 2>&1); then
  ok "n1 serves again and holds every acknowledged write: $out"
else
  bad "n1 after its return: $out"
fi
# Both paths serve again as before the fault: a write through n1 (the owner again) is replicated
# to n2 at once, with no decision (a spurious "peer unreachable" CAS would remove n2 again).
g1=$(vol "d['insync']['generation']")
r=$(op n1 write 600 30)
g1b=$(vol "d['insync']['generation']")
if [ "${r%% *}" = ok ] && [ "$g1b" = "$g1" ]; then
  ok "a write through n1 after its return is replicated without a decision (generation stays $g1): $r"
else
  bad "a write through n1 after its return: $r; in-sync generation $g1 -> $g1b, last decision: $(vol "d['decisions'][-1]")"
fi

# ---------------------------------------------------------------------------------------------
echo "# 2. witness lost alone: etcd killed while both nodes are up"
API=${APIS[n1]}
is_in_sync 60 >/dev/null || bad "row 2: not in sync before the fault"
gen2=$(vol "d['insync']['generation']")
kill_etcd
$IO write "$(nbd_uri n1 f)" "$work/w2a.log" --start 2048 --count 128 --seconds 3 --tag 2 >"$work/w2a.out" 2>&1 &
wa=$!
$IO write "$(nbd_uri n2 f)" "$work/w2b.log" --start 2176 --count 128 --seconds 3 --tag 2 >"$work/w2b.out" 2>&1 &
wb=$!
pids+=("$wa" "$wb")
wait "$wa" || true
wait "$wb" || true
for n in a b; do
  s=$(tail -1 "$work/w2$n.out")
  if [ "$(field "$s" errors)" = 0 ] && [ "$(field "$s" acked)" -gt 0 ]; then
    ok "without etcd, writes through $([ $n = a ] && echo n1 || echo n2) go on: $s"
  else
    bad "without etcd, writes through $([ $n = a ] && echo n1 || echo n2): $s"
  fi
done
if out=$($IO check "$(nbd_uri n2 f)" "$work/w2a.log" --tag 2 2>&1) && out2=$($IO check "$(nbd_uri n1 f)" "$work/w2b.log" --tag 2 2>&1); then
  ok "without etcd, each node reads what was written through the other: $out / $out2"
else
  bad "without etcd, cross reads: $out ${out2:-}"
fi
health=""
for _ in $(seq 60); do
  health=$(curl -sS -H "Authorization: Bearer $TOKEN" "${APIS[n1]}/v1/health" 2>/dev/null || true)
  echo "$health" | grep -q '"etcd":false' && break
  sleep 0.25
done
metric=$(curl -sS -H "Authorization: Bearer $TOKEN" "${APIS[n1]}/metrics" 2>/dev/null | grep '^duplex_node_etcd_ok' || true)
if echo "$health" | grep -q '"etcd":false' && echo "$health" | grep -q degraded && [ "${metric##* }" = 0 ]; then
  ok "the alarm: n1's /v1/health says $health, /metrics $metric"
else
  bad "no alarm for the lost witness: health $health, metric '$metric'"
fi
# Past the node leases (each agent declares itself lost), I/O still goes on.
for n in n1 n2; do
  for _ in $(seq 100); do grep -q "event=cluster.lost" "$work/$n.log" && break; sleep 0.2; done
done
if grep -q "event=cluster.lost" "$work/n1.log" && grep -q "event=cluster.lost" "$work/n2.log"; then
  ok "both nodes declared their etcd lease lost"
else
  bad "no event=cluster.lost on both nodes"
fi
res=""
for n in n1 n2; do
  for what in write read; do
    r=$(op $n $what 2300 10)
    res+="$n $what: $r; "
  done
done
if [ "$(echo "$res" | grep -o 'error' | wc -l)" = 0 ]; then
  ok "after the nodes' leases lapsed, reads and writes through both still go on ($res)"
else
  bad "without etcd, I/O failed: $res"
fi

# A second failure while the witness is away: nobody may decide, so writes stop on both sides.
proxy cut >/dev/null
op n1 write 2400 40 >"$work/r2n1" &
o1=$!
op n2 write 2401 40 >"$work/r2n2" &
o2=$!
wait "$o1" "$o2" || true
r1=$(cat "$work/r2n1")
r2=$(cat "$work/r2n2")
e1=$(echo "$r1" | awk '{print $2}')
if [ "${r1%% *}" = error ] && $PY -c "import sys; sys.exit(0 if $e1 >= $FREEZE - 1 else 1)"; then
  ok "link cut with etcd down: a write through n1 (the owner) fails after ${e1}s (freeze_timeout ${FREEZE}s): $r1"
else
  bad "link cut with etcd down: a write through n1: $r1 (must fail after freeze_timeout ${FREEZE}s)"
fi
if [ "${r2%% *}" = error ]; then
  ok "link cut with etcd down: a write through n2 fails too ($r2)"
else
  bad "link cut with etcd down: n2 went on alone: $r2"
fi
r=$(op n2 read 2300 10)
if [ "${r%% *}" = error ]; then ok "... and n2 (no peer, no witness) refuses reads: $r"; else bad "n2 read with no peer and no witness: $r"; fi
restart_etcd
proxy heal >/dev/null
if is_in_sync 90; then
  ok "etcd restarted and link healed: back in sync (generation $(vol "d['insync']['generation']"), was $gen2)"
else
  bad "not back in sync after etcd's return and the heal"
fi
d1=$($IO digest "$(nbd_uri n1 f)" $((2400 * BS)) $((2 * BS)) 2>&1 || true)
d2=$($IO digest "$(nbd_uri n2 f)" $((2400 * BS)) $((2 * BS)) 2>&1 || true)
if [ "$d1" = "$d2" ] && [ ${#d1} = 64 ]; then
  ok "the replicas agree on the blocks whose writes failed"
else
  bad "the replicas differ where the writes failed: n1 $d1, n2 $d2"
fi

# ---------------------------------------------------------------------------------------------
echo "# 3. rolling failure: n2 stopped, n1 writes alone, n1 dies, n2 returns"
API=${APIS[n1]}
stop_node n2 || true
$IO write "$(nbd_uri n1 f)" "$work/w3a.log" --start 3072 --count 256 --seconds 2 --tag 3 >"$work/w3a.out" 2>&1 || true
s=$(tail -1 "$work/w3a.out")
if [ "$(field "$s" errors)" = 0 ] && until_vol 20 f "d['insync']['members']==['n1']"; then
  g3=$(vol "d['insync']['generation']")
  ok "n2 stopped: n1 writes alone ($s), n2 removed by CAS (generation $g3)"
else
  bad "n1 alone: $s, in-sync set $(vol "d['insync']")"
fi
kill_node n1
start_node n2
API=${APIS[n2]}
# n2 exports the volume (a client can connect) but answers no I/O.
for _ in $(seq 100); do nbdinfo --size "$(nbd_uri n2 f)" >/dev/null 2>&1 && break; sleep 0.1; done
r=$(op n2 read 3072 10)
w=$(op n2 write 3072 10)
if [ "${r%% *}" = error ] && [ "${w%% *}" = error ]; then
  ok "n2 (outdated) refuses reads ($r) and writes ($w)"
else
  bad "n2 served its stale replica: read $r, write $w"
fi
if until_vol 20 f "r['n2'].get('state')=='outdated' and r['n2'].get('member') is False and d['insync']['members']==['n1'] and not r['n1'].get('alive') and not d.get('paths')"; then
  ok "the API says why: n2 $(vol "r['n2']['state']"), in-sync set $(vol "d['insync']['members']") at generation $(vol "d['insync']['generation']"), n1 alive=$(vol "r['n1'].get('alive')"), no path"
else
  bad "the API does not show why n2 refuses"
fi
if [ -n "${DUPLEXCTL:-}" ]; then
  shown=$("$DUPLEXCTL" --api "$API" --token "$TOKEN" volume show f 2>&1 || true)
  if echo "$shown" | grep -Eq "^ *n2 .* no +outdated" && echo "$shown" | grep -q "members n1," &&
    echo "$shown" | grep -Eq "^ *n1 +[^ ]+ +no +owner +yes" && echo "$shown" | grep -q "paths: none"; then
    ok "duplexctl volume show f: n2 outdated and not in the set, the set is {n1}, n1 not alive, no path"
  else
    bad "duplexctl volume show f: $shown"
  fi
  if echo "$shown" | grep -q "n2 serves nothing: out of the in-sync set (generation [0-9]*; last in it at generation [0-9]*; outdated); the only in-sync replica is n1, unreachable; to serve from n2 anyway: duplexctl volume promote f --node n2 --accept-data-loss"; then
    ok "duplexctl volume show f says why: $(echo "$shown" | grep "n2 serves nothing" | sed 's/^ *//')"
  else
    bad "duplexctl volume show f does not say why n2 refuses: $shown"
  fi
  out=$("$DUPLEXCTL" --api "$API" --token "$TOKEN" volume promote f --node n2 2>&1) && rc=0 || rc=$?
  if [ "$rc" != 0 ] && echo "$out" | grep -q "writes acknowledged by n1 after generation" && echo "$out" | grep -q accept_data_loss; then
    ok "promote without --accept-data-loss refused (exit $rc): $out"
  else
    bad "promote without --accept-data-loss (exit $rc): $out"
  fi
  out=$("$DUPLEXCTL" --api "$API" --token "$TOKEN" volume promote f --node n2 --accept-data-loss \
    --reason "n1 lost for good (system test)" 2>&1) && rc=0 || rc=$?
  if [ "$rc" = 0 ] && echo "$out" | grep -q "may have lost: writes acknowledged by n1"; then
    ok "promote --accept-data-loss: $(echo "$out" | tr '\n' ' ')"
  else
    bad "promote --accept-data-loss (exit $rc): $out"
  fi
else
  out=$(api POST /v1/volumes/f/promote '{"node": "n2"}' 2>&1 || true)
  if echo "$out" | grep -q "writes acknowledged by n1 after generation"; then ok "promote without accept_data_loss refused: $out"; else bad "promote without accept_data_loss: $out"; fi
  api POST /v1/volumes/f/promote '{"node": "n2", "accept_data_loss": true, "reason": "n1 lost for good (system test)"}' >/dev/null || true
fi
if until_vol 20 f "d['insync']['members']==['n2'] and d['decisions'][-1]['decided_by']=='api' and d['decisions'][-1]['may_lose'] and 'n1 lost for good' in d['decisions'][-1]['reason']"; then
  ok "the override is in decisions: $(vol "d['decisions'][-1]")"
else
  bad "the promote is not in decisions: $(vol "d['decisions'][-1:]")"
fi
if grep -q 'event=api.promote volume=f node=n2 .*may_lose="writes acknowledged by n1' "$work/n2.log"; then
  ok "logged: $(grep -o 'event=api.promote volume=f.*' "$work/n2.log" | tail -1)"
else
  bad "no event=api.promote logged"
fi
w=""
for _ in $(seq 40); do
  w=$(op n2 write 3072 10)
  [ "${w%% *}" = ok ] && break
  sleep 0.5
done
if [ "${w%% *}" = ok ]; then ok "after the promote n2 serves writes ($w)"; else bad "n2 does not serve after the promote: $w"; fi
if grep -q "event=mirror.promoted volume=f node=n2" "$work/n2.log"; then
  ok "n2's mirror logged event=mirror.promoted"
else
  bad "no event=mirror.promoted on n2"
fi
$IO write "$(nbd_uri n2 f)" "$work/w3b.log" --start 3072 --count 256 --seconds 2 --tag 33 >"$work/w3b.out" 2>&1 || true
s=$(tail -1 "$work/w3b.out")
if [ "$(field "$s" errors)" = 0 ] && [ "$(field "$s" acked)" -gt 0 ]; then ok "writes through n2 over the blocks n1 wrote alone: $s"; else bad "writes through n2 after the promote: $s"; fi
# n1 returns with its stale blocks (tag 3): it must never serve them, only n2's (tag 33) once resynced.
start_node n1
stale=0
refused=0
served=0
deadline=$((SECONDS + 90))
while [ $SECONDS -le $deadline ]; do
  out=$($IO check "$(nbd_uri n1 f)" "$work/w3b.log" --tag 33 2>&1) && rc=0 || rc=$?
  case $rc in
    0) served=$((served + 1)) ;;
    2) refused=$((refused + 1)) ;;
    *) stale=$((stale + 1)); echo "  stale read through n1: $out" ;;
  esac
  until_vol 0 f "$IN_SYNC" >/dev/null && break
done
if [ "$stale" = 0 ]; then
  ok "n1 never served its stale data while it returned (reads refused $refused times, current data $served times)"
else
  bad "n1 served stale data $stale times"
fi
if is_in_sync 90; then ok "n1 resynced from n2: both in sync, owner $(vol "d['insync']['owner']")"; else bad "n1 not back in sync after the promote"; fi
if out=$($IO check "$(nbd_uri n1 f)" "$work/w3b.log" --tag 33 2>&1); then ok "n1 serves n2's data: $out"; else bad "n1 after resync: $out"; fi

# ---------------------------------------------------------------------------------------------
# isolate MODE ROW TAG: n2 cut from the link and from etcd (cut = resets, blackhole = silence).
isolate() {
  local mode=$1 row=$2 tag=$3 start=$((4096 + ($3 % 10) * 512))
  API=${APIS[n1]}
  is_in_sync 60 >/dev/null || bad "$row: not in sync before the fault"
  local gen
  gen=$(vol "d['insync']['generation']")
  proxy "$mode" >/dev/null
  etcd_proxy "$mode" >/dev/null
  local t0
  t0=$(now)
  op n2 write $((start + 300)) 40 >"$work/r$tag" &
  local ow=$!
  $IO write "$(nbd_uri n1 f)" "$work/w$tag.log" --start "$start" --count 256 --seconds 4 --tag "$tag" >"$work/w$tag.out" 2>&1 || true
  local s
  s=$(tail -1 "$work/w$tag.out")
  if [ "$(field "$s" errors)" = 0 ] && [ "$(field "$s" acked)" -gt 0 ]; then
    ok "$row: n1 goes on (max write latency $(field "$s" max_latency)s): $s"
  else
    bad "$row: writes through n1: $s"
  fi
  if until_vol 20 f "d['insync']['members']==['n1'] and d['insync']['generation']>$gen"; then
    ok "$row: n1 removed n2 ($(vol "d['insync']['reason']"))"
  else
    bad "$row: n2 not removed from the in-sync set"
  fi
  # Reads: none may be served from n2's replica once its lease ran out; they fail once n2 gave up
  # deciding (freeze_timeout), as its writes do.
  local r="" issued="" deadline=$((SECONDS + 60))
  while [ $SECONDS -le $deadline ]; do
    issued=$(since "$t0")
    r=$(op n2 read $((start + 301)) 30)
    [ "${r%% *}" = error ] && break
    sleep 0.25
  done
  if [ "${r%% *}" = error ] && [ "${r#error * }" != "no answer before the deadline" ]; then
    ok "$row: n2 refuses reads: a read issued ${issued}s after the fault ended in: $r (lease 0.5s, freeze_timeout ${FREEZE}s)"
  else
    bad "$row: n2's reads after its lease: $r"
  fi
  wait "$ow" || true
  local w
  w=$(cat "$work/r$tag")
  if [ "${w%% *}" = error ]; then ok "$row: a write through n2 fails: $w"; else bad "$row: n2 acknowledged a write alone: $w"; fi
  # Cut off now: a path error at once over iSCSI, and its own port group unavailable.
  local probe
  probe=$(PYTHONPATH=$here $PY "$here/alua_probe.py" "$HOST" "${ISCSI[n2]}" iqn.2026-11.io.duplex:f 2>&1 || true)
  if [ "$(field "$probe" tur)" = "[2, 4, 12]" ] && [ "$(field "$probe" groups)" = "{'1': 0, '2': 3}" ] &&
    $PY -c "import sys; sys.exit(0 if float(sys.argv[1]) < 2 else 1)" "$(field "$probe" seconds)"; then
    ok "$row: n2 is cut off: TEST UNIT READY through its iSCSI port is NOT READY 04/0C after $(field "$probe" seconds)s, RTPG shows its group unavailable and n1's optimized ($probe)"
  else
    bad "$row: n2 over iSCSI while cut off: $probe"
  fi
  proxy heal >/dev/null
  etcd_proxy heal >/dev/null
  if is_in_sync 90; then ok "$row: healed: back in sync"; else bad "$row: not back in sync after the heal"; fi
  local out
  if out=$($IO check "$(nbd_uri n2 f)" "$work/w$tag.log" --tag "$tag" 2>&1); then
    ok "$row: n2 holds what n1 wrote meanwhile: $out"
  else
    bad "$row: n2 after the heal: $out"
  fi
}
echo "# 4. node isolated from everything: n2 cut from the link and from etcd"
isolate cut "row 4" 4
echo "# 5. site partition (silent): n2's side loses the link and etcd (the witness majority stays with n1)"
isolate blackhole "row 5" 5

# ---------------------------------------------------------------------------------------------
echo "# 6. a slow peer: 1.5 s of latency on the mirror link (replicate_timeout and link_timeout 1 s)"
API=${APIS[n1]}
is_in_sync 60 >/dev/null || bad "row 6: not in sync before the fault"
gen=$(vol "d['insync']['generation']")
proxy "delay 1500" >/dev/null
$IO write "$(nbd_uri n1 f)" "$work/w6.log" --start 7168 --count 256 --seconds 5 --tag 6 >"$work/w6.out" 2>&1 || true
s=$(tail -1 "$work/w6.out")
# The bound: a replicate times out (1 s), the owner removes n2 by CAS at once, then waits out n2's
# read lease (0.5 s): well under 4 s, against a stall for as long as the link stays slow.
if [ "$(field "$s" errors)" = 0 ] && [ "$(field "$s" acked)" -gt 100 ] &&
  $PY -c "import sys; sys.exit(0 if float(sys.argv[1]) < 4 else 1)" "$(field "$s" max_latency)"; then
  ok "row 6: n1 ejects the slow n2 and goes on: longest write $(field "$s" max_latency)s, $(field "$s" acked) acknowledged, no error"
else
  bad "row 6: writes through n1 with a slow peer: $s"
fi
if until_vol 20 f "d['insync']['members']==['n1'] and d['insync']['generation']>$gen"; then
  ok "row 6: n2 removed from the set: $(vol "d['insync']['reason']")"
else
  bad "row 6: the slow n2 is still in the set: $(vol "d['insync']")"
fi
proxy "delay 0" >/dev/null
if is_in_sync 90; then ok "row 6: the latency gone, n2 is resynced and back in the set"; else bad "row 6: not back in sync"; fi
if out=$($IO check "$(nbd_uri n2 f)" "$work/w6.log" --tag 6 2>&1); then
  ok "row 6: n2 holds what n1 wrote while it was slow: $out"
else
  bad "row 6: n2 after the slow link: $out"
fi

finish_mirror_test n2 n1
