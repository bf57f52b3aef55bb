#!/usr/bin/env bash
# The failure table's "planned maintenance" row (../shared/DESIGN.md; docs/mirror.md "Planned maintenance"):
# drain a node, upgrade it, return it: no outage, no full resync. With a real etcd, two real
# duplexd and a libnbd client writing (tests/system/mirror_failures_io.py) through n2 the whole
# time:
#   drain n1 (the owner) -> n1 leaves the in-sync set by a decision that gives the drain's reason,
#   n2 owns the volume -> stop n1 (SIGTERM) -> writes go on through n2 -> a drain of n2 is refused
#   (its peer is not in sync) -> restart n1: it stays out of the set (still drained) -> resume ->
#   n2 copies only what n1 missed -> n1 back in the set and the owner again -> every acknowledged
#   write reads back through both nodes; then n2 (not the owner) is drained while its own client
#   writes through it, and resumed without a restart: it rejoins, no client error.
# Asserts no client error through n2 and its longest write stall during drain and stop (< 1 s;
# a node death costs link_timeout + lease, see mirror_failures.sh row 1). Only 127.0.0.1, free
# ports; every process started here is stopped by its pid.
#   DUPLEXD=path/to/duplexd DUPLEXCTL=path/to/duplexctl tests/system/mirror_maintenance.sh
set -euo pipefail
DUPLEXD=${DUPLEXD:-duplexd}
DUPLEXCTL=${DUPLEXCTL:-duplexctl}
HOST=127.0.0.1
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"
# shellcheck source-path=SCRIPTDIR source=mirror_lib.sh
source "$here/mirror_lib.sh"
work_dir duplex-mirror-maint
IO="$PY $here/mirror_failures_io.py"
BS=4096
SIZE=$((128 * 1024 * 1024))
T_START=$SECONDS

# The timings of mirror_failures.sh: a node death would stall writes for about link_timeout + lease.
mirror_cluster "$TEST_MIRROR_TOML"
API=${APIS[n2]} # n1 goes away for its maintenance

VOL=m  # for vol() (mirror_lib.sh)
op() { $IO op "$(nbd_uri "$1" m)" "$2" $(($3 * BS)) --timeout "${4:-20}" || true; }
ctl() { "$DUPLEXCTL" --api "$API" --token "$TOKEN" "$@"; }
# post PATH BODY: "HTTP-status body"
post() {
  curl -sS -o "$work/post.out" -w '%{http_code}' -X POST -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' --data "$2" "$API$1"
  echo " $(cat "$work/post.out")"
}
# writer LOG TAG: writes through n2 until LOG.stop exists; sets `writer`.
writer() {
  $IO write "$(nbd_uri n2 m)" "$1" --start "$3" --count 256 --seconds 120 --stop "$1.stop" --tag "$2" \
    >"$1.out" 2>&1 &
  writer=$!
  pids+=("$writer")
}
stop_writer() { # LOG: sets `summary` (not in a subshell: it waits for the writer)
  touch "$1.stop"
  wait "$writer" || true
  summary=$(tail -1 "$1.out")
}

api POST /v1/volumes "{\"name\": \"m\", \"size\": $SIZE, \"replicas\": 2, \"preferred_site\": \"a\"}" >/dev/null
if until_vol 60 m "$IN_SYNC and d['insync']['owner']=='n1'"; then
  ok "volume m ($SIZE bytes): both replicas in sync, n1 owns it"
else
  bad "volume m never in sync"
  exit 1
fi
for n in n1 n2; do
  for _ in $(seq 100); do nbdinfo --size "$(nbd_uri $n m)" >/dev/null 2>&1 && break; sleep 0.1; done
done

echo "# drain n1 while a client writes through n2"
w1=$work/w1.log
writer "$w1" 1 0
until_acks "$w1" 100 30 || bad "the writer through n2 did not start: $(cat "$w1.out")"
out=$(ctl node drain n1 --reason "kernel upgrade" --wait 2>&1) && rc=0 || rc=$?
if [ "$rc" = 0 ] && echo "$out" | grep -Eq "^drain: +drained since .*kernel upgrade"; then
  ok "duplexctl node drain n1 --wait: $(echo "$out" | grep "^drain:")"
else
  bad "duplexctl node drain n1 --wait (exit $rc): $out"
fi
if until_vol 10 m "d['insync']['members']==['n2'] and d['insync']['owner']=='n2' and 'drain of n1: kernel upgrade' in d['decisions'][-1]['reason']"; then
  ok "n1 left the in-sync set by decision (generation $(vol "d['insync']['generation']"), by $(vol "d['decisions'][-1]['decided_by']"): $(vol "d['decisions'][-1]['reason']"))"
else
  bad "n1 did not leave the set by a drain decision: $(vol "d['insync']"), last decision $(vol "d['decisions'][-1]")"
fi
listed=$(ctl node list 2>&1 || true)
if echo "$listed" | grep -Eq "^n1 .* yes +drained " && echo "$listed" | grep -Eq "^n2 .* yes +- "; then
  ok "duplexctl node list shows n1 drained, n2 not"
else
  bad "duplexctl node list: $listed"
fi
# n1 stays out of the set while drained (its peer holds it out; it still gets every write).
sleep 1.5
if [ "$(vol "d['insync']['members']")" = "['n2']" ]; then
  ok "n1 is not added back while drained (n2: $(vol "r['n2']['last_event']"))"
else
  bad "n1 was added back while drained: $(vol "d['insync']")"
fi
r=$(op n1 read 3)
if [ "${r%% *}" = ok ]; then ok "drained n1 still serves reads (forwarded to n2): $r"; else bad "a read through drained n1: $r"; fi

echo "# stop n1 (SIGTERM) for its upgrade; writes go on through n2"
before=$(acks "$w1")
stop_node n1
until_acks "$w1" $((before + 100)) 20 || bad "writes through n2 did not go on after n1 stopped"
r=$(op n2 read 5)
if [ "${r%% *}" = ok ]; then ok "n2 serves reads with n1 down: $r"; else bad "a read through n2 with n1 down: $r"; fi
res=$(post /v1/nodes/n2/drain '{}')
if [ "${res%% *}" = 409 ] && echo "$res" | grep -q "not in sync"; then
  ok "draining n2 while n1 is out is refused: $res"
else
  bad "drain of n2 with n1 out of sync: $res"
fi
listed=$(ctl node list 2>&1 || true)
if echo "$listed" | grep -Eq "^n1 .* no +drained "; then ok "node list: n1 down and drained"; else bad "node list with n1 down: $listed"; fi

echo "# n1 returns, still drained, then resumes"
start_node n1
before=$(acks "$w1")
until_acks "$w1" $((before + 100)) 20 || bad "writes through n2 stalled after n1's restart"
stop_writer "$w1"
sum1=$summary
if [ "$(field "$sum1" errors)" = 0 ] && [ "$(field "$sum1" acked)" -gt 0 ]; then
  ok "drain, stop and restart of n1: no client error through n2: $sum1"
else
  bad "errors through n2 during the drain and stop: $sum1"
fi
if $PY -c "import sys; sys.exit(0 if float('$(field "$sum1" max_gap)') < 1.0 else 1)" 2>/dev/null; then
  ok "longest write stall through n2 during drain, stop and restart: $(field "$sum1" max_gap) s (< 1 s)"
else
  bad "write stall through n2 during drain/stop: $(field "$sum1" max_gap) s"
fi
if until_vol 10 m "r['n1'].get('link_up') and d['insync']['members']==['n2']"; then
  ok "restarted n1 is linked and stays out of the set while drained"
else
  bad "restarted n1: $(vol "d['insync']") $(vol "r['n1']")"
fi
w2=$work/w2.log
writer "$w2" 2 300
until_acks "$w2" 50 20 || bad "the second writer did not start: $(cat "$w2.out")"
out=$(ctl node resume n1 2>&1) && rc=0 || rc=$?
if [ "$rc" = 0 ] && echo "$out" | grep -Eq "^drain: +-$"; then ok "duplexctl node resume n1"; else bad "duplexctl node resume n1 (exit $rc): $out"; fi
if until_vol 30 m "$IN_SYNC and d['insync']['owner']=='n1'"; then
  ok "n1 back in the in-sync set and the owner again: $(vol "d['decisions'][-1]['reason']")"
else
  bad "n1 not back in sync after resume"
fi
until_acks "$w2" $(($(acks "$w2") + 50)) 20 || bad "writes through n2 stalled after the resume"
stop_writer "$w2"
sum2=$summary
if [ "$(field "$sum2" errors)" = 0 ]; then
  ok "resume and hand-back of ownership: no client error through n2 (longest stall $(field "$sum2" max_gap) s): $sum2"
else
  bad "errors through n2 during the resume: $sum2"
fi
copied=$(grep -o "event=mirror.resync_done peer=n1 bytes=[0-9]*" "$work/n2.log" | tail -1 | grep -o "[0-9]*$" || true)
reported=$(vol "r['n2'].get('resync_bytes_total', -1)")
if [ -n "$copied" ] && [ "$copied" -le $((SIZE / 16)) ] && [ "$reported" -ge 0 ] 2>/dev/null && [ "$reported" -le $((SIZE / 16)) ]; then
  ok "incremental resync: n2 copied $copied bytes of $SIZE (replica report resync_bytes_total $reported)"
else
  bad "resync not incremental: resync_done bytes '$copied', reported $reported, volume $SIZE"
fi
for n in n2 n1; do
  if out=$($IO check "$(nbd_uri $n m)" "$w1" --tag 1 2>&1) && out2=$($IO check "$(nbd_uri $n m)" "$w2" --tag 2 2>&1); then
    ok "every acknowledged write reads back through $n: $out $out2"
  else
    bad "acknowledged writes through $n: $out ${out2:-}"
  fi
done
echo "# drain n2 (not the owner) while its own client writes through it, resume it without a restart"
w3=$work/w3.log
writer "$w3" 3 600
until_acks "$w3" 50 20 || bad "the third writer did not start: $(cat "$w3.out")"
out=$(ctl node drain n2 --wait 2>&1) && rc=0 || rc=$?
if [ "$rc" = 0 ] && until_vol 10 m "d['insync']['members']==['n1'] and 'drain of n2: planned maintenance' in d['decisions'][-1]['reason']"; then
  ok "n2 drained: the set is {n1} ($(vol "d['decisions'][-1]['reason']"))"
else
  bad "drain of n2 (exit $rc): $out $(vol "d['insync']")"
fi
until_acks "$w3" $(($(acks "$w3") + 50)) 20 || bad "writes through drained n2 stalled"
ctl node resume n2 >/dev/null 2>&1 || bad "duplexctl node resume n2"
if until_vol 30 m "$IN_SYNC and d['insync']['owner']=='n1'"; then ok "n2 resumed: both in sync, n1 owns"; else bad "n2 not back in sync"; fi
stop_writer "$w3"
if [ "$(field "$summary" errors)" = 0 ] && out=$($IO check "$(nbd_uri n1 m)" "$w3" --tag 3 2>&1); then
  ok "writes through n2 while it was drained and resumed: no error (longest stall $(field "$summary" max_gap) s), all read back through n1: $out"
else
  bad "writes through drained n2: $summary ${out:-}"
fi
res=$(post /v1/nodes/n1/resume '{}')
if [ "${res%% *}" = 404 ]; then ok "a second resume says n1 is not drained: $res"; else bad "second resume: $res"; fi

echo "# $((SECONDS - T_START)) s"
[ "$fails" = 0 ] || exit 1
