#!/usr/bin/env bash
# The mirror's cost and its resync, measured (docs/performance.md, "The mirror"). Two duplexd
# nodes on loopback (tests/system/mirror_lib.sh: one etcd, n2's mirror port behind the link
# proxy), then, in ONE run of ../shared/bench/run-peers.sh, fio over NBD against:
#   raw     the raw file (the peers' baseline)
#   plain   a volume with one replica (on n1)
#   mirror  a volume with two replicas (n1 and n2), written and read through n1
# and the ratios mirror / plain. Then the resync: a 20 GiB mirrored volume, the link cut, 1 GiB
# of 64 KiB random writes through n1 (fio), the link healed; how many bytes the resync copied, how
# fast, against `cp` + sync of a 1 GiB file on the same disk.
#
#   bench/mirror-bench.sh [--runtime SEC] [--sections LIST] [--no-resync] [--no-fio] [--link direct|proxy]
#                         [--no-fill] [--resync-depth N] [--wide] [--out DIR]
# --resync-depth sets [mirror] resync_depth (regions a resync copies at once; the daemon's default
# otherwise). --no-fio skips the fio comparison (and its fill): only the resync is measured.
# --wide adds random 4 KiB writes at QD32 spread over 20 GiB volumes (plain and mirror, thin,
# not filled): ten times the activity log's hot set (512 x 4 MiB), so most writes land in a cold
# extent and pay a log update - what group commit in the activity log is for.
# --link direct (the default) lets n1 dial n2's mirror port itself, and the outage is n2 stopped
# (SIGTERM) and started again; --link proxy puts tests/support/link_proxy.py (Python, every byte
# of the link through it) in between, as the figures before 2026-11-26 were taken, and the outage
# is a cut of the proxy.
# Needs a built duplexd (DUPLEXD, default build/src/daemon/duplexd), fio with the nbd engine,
# etcd; runs as root (run-peers drops the page cache). Pools are sparse files under /var/tmp.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DUPLEXD=${DUPLEXD:-$ROOT/build/src/daemon/duplexd}
PEERS=${PEERS_DIR:-$ROOT/../shared/bench}
runtime=10
sections=randwrite-4k-qd32,randwrite-4k-qd1,seqwrite-1m-qd8,randread-4k-qd32,seqread-1m-qd8
resync=1
fio_run=1
mirror_conf=""
out=""
link=direct
fill=1
wide=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --runtime) runtime=$2; shift 2 ;;
    --sections) sections=$2; shift 2 ;;
    --no-resync) resync=0; shift ;;
    --no-fio) fio_run=0; fill=0; shift ;;
    --out) out=$2; shift 2 ;;
    --link) link=$2; shift 2 ;;
    --no-fill) fill=0; shift ;;
    --wide) wide=1; shift ;;
    --resync-depth) mirror_conf=$(printf '[mirror]\nresync_depth = %s' "$2"); shift 2 ;;
    *) echo "mirror-bench.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
HOST=127.0.0.1
# shellcheck source=../tests/system/lib.sh
source "$ROOT/tests/system/lib.sh"
# shellcheck source=../tests/system/mirror_lib.sh
source "$ROOT/tests/system/mirror_lib.sh"
work_dir duplex-mirror-bench
out=${out:-/var/tmp/duplex-mirror-bench-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
GiB=$((1024 * 1024 * 1024))
export MIRROR_POOL_SIZE=40GiB
# The daemons' own reconcile period (30 s), not the tests' 1 s: each pass re-reports every
# replica and pool to etcd, and etcd's fsyncs land on the disk being measured.
export MIRROR_RECONCILE_PERIOD_MS=${MIRROR_RECONCILE_PERIOD_MS:-30000}
case "$link" in
  direct) export MIRROR_DIRECT_LINK=1 ;;
  proxy) ;;
  *) echo "mirror-bench.sh: --link direct|proxy" >&2; exit 2 ;;
esac
echo "link: $link; load before: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$out/env.txt"
mirror_cluster "$mirror_conf"
api POST /v1/volumes "{\"name\": \"plain\", \"size\": $((2 * GiB)), \"replicas\": 1, \"preferred_site\": \"a\"}" >/dev/null
api POST /v1/volumes "{\"name\": \"mirror\", \"size\": $((2 * GiB)), \"replicas\": 2, \"preferred_site\": \"a\"}" >/dev/null
until_vol 60 plain "d['state']=='ready' and [x['node'] for x in d['replicas']]==['n1']" ||
  { echo "plain is not ready on n1"; exit 1; }
until_vol 60 mirror "$IN_SYNC" || { echo "mirror is not in sync"; exit 1; }
for v in plain mirror; do
  for _ in $(seq 100); do nbdinfo --size "$(nbd_uri n1 $v)" >/dev/null 2>&1 && break; sleep 0.1; done
done

# Both volumes written end to end first (unmeasured), as the store and NBD sections do: every
# later write overwrites clusters the volume owns on each replica, and the mirror's activity log
# is warm. Without it the first section measures thin allocation on two pools and the log's
# first touch of each 4 MiB extent (--no-fill keeps that, for comparison).
if [ "$fill" = 1 ]; then
  for v in plain mirror; do
    fio --name=fill --ioengine=nbd --uri="$(nbd_uri n1 $v)" --rw=write --bs=1m --iodepth=8 \
      --size=$((2 * GiB)) --output="$out/fill-$v.txt" >/dev/null
  done
fi

if [ "$fio_run" = 1 ]; then
echo "== fio: raw, plain, mirror (one run-peers.sh run)"
"$PEERS/run-peers.sh" --runtime "$runtime" --sections "$sections" --peers raw --no-build \
  --extra-nbd "plain=$(nbd_uri n1 plain)" --extra-nbd "mirror=$(nbd_uri n1 mirror)" \
  --server-pid "plain=${DPID[n1]}" --server-pid "mirror=${DPID[n1]}" --out "$out/fio" | tee "$out/fio.txt"
$PY - "$out/fio/results.csv" <<'PYEOF' | tee "$out/ratios.md"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
by = {(r["section"], r["target"]): r for r in rows}
print("| section | plain | mirror | mirror / plain | latency mean plain / mirror (us) |")
print("|---|---|---|---|---|")
for sec in dict.fromkeys(r["section"] for r in rows):
    p, m = by.get((sec, "plain")), by.get((sec, "mirror"))
    if not p or not m:
        continue
    key = "mib_s" if "1m" in sec else "iops"
    unit = "MiB/s" if key == "mib_s" else "IOPS"
    ratio = float(m[key]) / float(p[key]) if float(p[key]) else 0
    print("| %s | %.0f %s | %.0f %s | %.2f | %.0f / %.0f |" % (sec, float(p[key]), unit, float(m[key]), unit, ratio,
          float(p["clat_mean_us"]), float(m["clat_mean_us"])))
PYEOF
fi

if [ "$wide" = 1 ]; then
  echo "== random 4 KiB writes over 20 GiB (most in a cold activity-log extent)"
  api POST /v1/volumes "{\"name\": \"wideplain\", \"size\": $((20 * GiB)), \"replicas\": 1, \"preferred_site\": \"a\"}" >/dev/null
  api POST /v1/volumes "{\"name\": \"widemirror\", \"size\": $((20 * GiB)), \"replicas\": 2, \"preferred_site\": \"a\"}" >/dev/null
  until_vol 120 wideplain "d['state']=='ready'" || { echo "wideplain is not ready"; exit 1; }
  until_vol 120 widemirror "$IN_SYNC" || { echo "widemirror is not in sync"; exit 1; }
  for v in wideplain widemirror; do
    for _ in $(seq 100); do nbdinfo --size "$(nbd_uri n1 $v)" >/dev/null 2>&1 && break; sleep 0.1; done
    fio --name=wide --ioengine=nbd --uri="$(nbd_uri n1 $v)" --rw=randwrite --bs=4k --iodepth=32 \
      --size=$((20 * GiB)) --time_based --runtime="$runtime" --randrepeat=1 --output-format=json \
      --output="$out/wide-$v.json" >/dev/null
  done
  $PY - "$out/wide-wideplain.json" "$out/wide-widemirror.json" <<'PYEOF' | tee "$out/wide.md"
import json, sys
w = [json.load(open(f))["jobs"][0]["write"] for f in sys.argv[1:3]]
print("| randwrite 4 KiB QD32 over 20 GiB | plain | mirror | mirror / plain |")
print("|---|---|---|---|")
print("| IOPS | %.0f | %.0f | %.2f |" % (w[0]["iops"], w[1]["iops"], w[1]["iops"] / w[0]["iops"]))
print("| mean latency (us) | %.0f | %.0f | |" % (w[0]["clat_ns"]["mean"] / 1e3, w[1]["clat_ns"]["mean"] / 1e3))
PYEOF
fi

if [ "$resync" = 1 ]; then
  echo "== resync after 1 GiB of writes during an outage, 20 GiB volume"
  api POST /v1/volumes "{\"name\": \"big\", \"size\": $((20 * GiB)), \"replicas\": 2, \"preferred_site\": \"a\"}" >/dev/null
  until_vol 120 big "$IN_SYNC" || { echo "big is not in sync"; exit 1; }
  for _ in $(seq 100); do nbdinfo --size "$(nbd_uri n1 big)" >/dev/null 2>&1 && break; sleep 0.1; done
  if [ "$link" = proxy ]; then proxy cut >/dev/null; else stop_node n2; fi
  fio --name=outage --ioengine=nbd --uri="$(nbd_uri n1 big)" --rw=randwrite --bs=64k --iodepth=16 \
    --size=$((20 * GiB)) --io_size=$((1 * GiB)) --randrepeat=1 --output="$out/outage-fio.txt" >/dev/null
  until_vol 60 big "d['insync']['members']==['n1']" || { echo "n2 was not removed"; exit 1; }
  dirty=$(api GET /v1/volumes/big | $PY -c "import json,sys; d=json.load(sys.stdin); print({x['node']: x for x in d['replicas']}['n1'].get('dirty_bytes', 0))")
  t0=$(date +%s.%N)
  if [ "$link" = proxy ]; then proxy heal >/dev/null; else start_node n2; fi
  until_vol 900 big "$IN_SYNC" || { echo "big did not resync"; exit 1; }
  t1=$(date +%s.%N)
  read -r copied engine_rate < <(api GET /v1/volumes/big | $PY -c "import json,sys; d=json.load(sys.stdin); r={x['node']: x for x in d['replicas']}['n1']; print(r.get('resync_bytes_done', 0), r.get('resync_rate', 0))")
  # The disk's own copy rate: cp of a 1 GiB file on the same file system, made durable.
  head -c $GiB /dev/urandom >"$work/src.bin"
  sync
  echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
  c0=$(date +%s.%N)
  cp "$work/src.bin" "$work/dst.bin"
  sync "$work/dst.bin"
  c1=$(date +%s.%N)
  $PY - "$dirty" "$copied" "$engine_rate" "$t0" "$t1" "$c0" "$c1" <<'PYEOF' | tee "$out/resync.md"
import sys
dirty, copied, engine = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) / 2**20
t0, t1, c0, c1 = map(float, sys.argv[4:8])
wall = copied / (t1 - t0) / 2**20
cp = 2**30 / (c1 - c0) / 2**20
print("| written during the outage | dirty when healed | copied by the resync | heal to in-sync (API) | resync rate (engine) | cp rate | engine / cp |")
print("|---|---|---|---|---|---|---|")
print("| 1.00 GiB (64 KiB random) | %.2f GiB | %.2f GiB | %.1f s (%.0f MiB/s) | %.0f MiB/s | %.0f MiB/s | %.2f |" %
      (dirty / 2**30, copied / 2**30, t1 - t0, wall, engine, cp, engine / cp))
PYEOF
fi
for n in n2 n1; do stop_node "$n"; done
echo "results in $out"
