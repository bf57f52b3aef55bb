#!/usr/bin/env bash
# What a replicated write costs in CPU, counted rather than timed (docs/performance.md, "The
# mirror"): both nodes of a mirror cluster on loopback (tests/system/mirror_lib.sh) run under
# valgrind --tool=callgrind; a fixed workload (bench/nbd_writer.py: N writes, seeded offsets) goes
# through n1's NBD export to a one-replica volume `plain` and to a two-replica volume `mirror`;
# the counters of both daemons are zeroed before and dumped after each workload, so the
# instructions per write of n1 (owner) and n2 (peer) come out exactly, whatever else the machine
# does. An idle interval of the same length gives the background (pings, etcd lease, reconcile).
#
#   bench/mirror-cost.sh [--writes N] [--bs BYTES] [--qd N] [--seq] [--out DIR] [--strace]
# --strace instead runs the daemons normally and counts their system calls per write
# (strace -c -f), for the same workloads.
# Needs a built duplexd (DUPLEXD, default build/src/daemon/duplexd), valgrind, etcd, python3-libnbd.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REAL_DUPLEXD=${DUPLEXD:-$ROOT/build/src/daemon/duplexd}
writes=20000
bs=4096
qd=32
seq=""
out=""
mode=callgrind
while [[ $# -gt 0 ]]; do
  case "$1" in
    --writes) writes=$2; shift 2 ;;
    --bs) bs=$2; shift 2 ;;
    --qd) qd=$2; shift 2 ;;
    --seq) seq=--seq; shift ;;
    --out) out=$2; shift 2 ;;
    --strace) mode=strace; shift ;;
    *) echo "mirror-cost.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
HOST=127.0.0.1
# shellcheck source=../tests/system/lib.sh
source "$ROOT/tests/system/lib.sh"
# shellcheck source=../tests/system/mirror_lib.sh
source "$ROOT/tests/system/mirror_lib.sh"
work_dir duplex-mirror-cost
out=${out:-/var/tmp/duplex-mirror-cost-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
if [ "$mode" = callgrind ]; then
  # The daemons run under callgrind: slow, so the link and lease timings are generous.
  cat >"$work/vg-duplexd" <<EOF
#!/bin/sh
exec valgrind --tool=callgrind --separate-threads=yes --dump-instr=no --collect-jumps=no --callgrind-out-file=$out/callgrind.%p \\
  "$REAL_DUPLEXD" "\$@"
EOF
  chmod +x "$work/vg-duplexd"
  DUPLEXD=$work/vg-duplexd
else
  DUPLEXD=$REAL_DUPLEXD
fi
SPAN=$((256 * 1024 * 1024))
export MIRROR_POOL_SIZE=4GiB MIRROR_DIRECT_LINK=1
mirror_cluster "$(printf '[mirror]\nping_interval = "2s"\nlink_timeout = "60s"\nreplicate_timeout = "60s"\nfreeze_timeout = "120s"\nlease = "30s"')"
api POST /v1/volumes '{"name": "plain", "size": 1073741824, "replicas": 1, "preferred_site": "a"}' >/dev/null
api POST /v1/volumes '{"name": "mirror", "size": 1073741824, "replicas": 2, "preferred_site": "a"}' >/dev/null
until_vol 300 plain "d['state']=='ready' and [x['node'] for x in d['replicas']]==['n1']" ||
  { echo "plain is not ready on n1"; exit 1; }
until_vol 300 mirror "$IN_SYNC and d['insync']['owner']=='n1'" || { echo "mirror is not in sync"; exit 1; }
for v in plain mirror; do
  for _ in $(seq 300); do nbdinfo --size "$(nbd_uri n1 $v)" >/dev/null 2>&1 && break; sleep 0.2; done
done
writer() { $PY "$ROOT/bench/nbd_writer.py" "$@"; }
# Warm-up: every cluster of the span written once (owned afterwards, as in the store bench), every
# activity-log extent hot, the code paths paged in.
for v in plain mirror; do
  writer "$(nbd_uri n1 $v)" --writes $((SPAN / 1048576)) --bs 1048576 --qd 4 --span $SPAN --seq >/dev/null
  writer "$(nbd_uri n1 $v)" --writes 2000 --bs "$bs" --qd "$qd" --span $SPAN $seq >/dev/null
done

results=$out/results.txt
: >"$results"
if [ "$mode" = callgrind ]; then
  command -v callgrind_control >/dev/null || { echo "needs callgrind_control (valgrind)"; exit 1; }
  # One dump file per thread (--separate-threads): only the event loops' threads are counted, where
  # the data path runs; the reconciler's etcd polling and the API server's threads are not.
  loop_total() {  # DUMP-NUMBER PID -> the instructions of that dump's event-loop threads
    local f sum=0 n
    for f in "$out/callgrind.$2.$1"-*; do
      [ "$(callgrind_annotate --inclusive=yes "$f" 2>/dev/null | grep -c 'duplex::EventLoop::run()')" -gt 0 ] || continue
      n=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); t=$1} END {print t+0}')
      sum=$((sum + n))
    done
    echo "$sum"
  }
  dumps=0
  measure() {  # LABEL COMMAND...: zero both daemons, run, dump both; prints instructions of n1, n2
    local label=$1 n
    shift
    for n in n1 n2; do callgrind_control -z "${DPID[$n]}" >/dev/null; done
    "$@" >"$out/$label.json"
    for n in n1 n2; do callgrind_control -d "$label" "${DPID[$n]}" >/dev/null; done
    dumps=$((dumps + 1))
    sleep 1
    for n in n1 n2; do
      echo "$label $n $(loop_total "$dumps" "${DPID[$n]}")" | tee -a "$results"
    done
  }
  for v in plain mirror; do
    measure "$v" writer "$(nbd_uri n1 $v)" --writes "$writes" --bs "$bs" --qd "$qd" --span $SPAN $seq
  done
  # The background over as long as the mirrored workload took.
  secs=$($PY -c "import json; print(json.load(open('$out/mirror.json'))['seconds'])")
  measure idle sleep "$secs"
  $PY - "$results" "$writes" "$out" <<'PYEOF' | tee "$out/cost.md"
import json, sys
r = {}
for line in open(sys.argv[1]):
    label, node, n = line.split()
    r[(label, node)] = int(n)
w = int(sys.argv[2])
secs = {l: json.load(open(f"{sys.argv[3]}/{l}.json"))["seconds"] for l in ("plain", "mirror")}
idle_rate = {n: r[("idle", n)] / max(secs["mirror"], 1e-9) for n in ("n1", "n2")}
print("| workload | n1 (owner) instructions / write | n2 (peer) instructions / write | of which background n1 / n2 (idle rate x run time) |")
print("|---|---:|---:|---:|")
for l in ("plain", "mirror"):
    bg = [idle_rate[n] * secs[l] / w for n in ("n1", "n2")]
    print(f"| {l} | {r[(l, 'n1')] / w:,.0f} | {r[(l, 'n2')] / w:,.0f} | {bg[0]:,.0f} / {bg[1]:,.0f} |")
PYEOF
else
  for v in plain mirror; do
    for n in n1 n2; do
      strace -c -f -p "${DPID[$n]}" -o "$out/$v.$n.strace" &
      echo $! >"$work/strace.$n"
    done
    sleep 1
    writer "$(nbd_uri n1 $v)" --writes "$writes" --bs "$bs" --qd "$qd" --span $SPAN $seq >"$out/$v.json"
    for n in n1 n2; do kill -INT "$(cat "$work/strace.$n")"; done
    for n in n1 n2; do wait "$(cat "$work/strace.$n")" || true; done
    for n in n1 n2; do
      calls=$(awk '/^-+ -+/ {s=1; next} s && /total/ {print $4; exit}' "$out/$v.$n.strace")
      echo "$v $n syscalls/write $($PY -c "print(round(${calls:-0} / $writes, 2))")" | tee -a "$results"
    done
  done
fi
for n in n2 n1; do stop_node "$n" || true; done
echo "results in $out"
