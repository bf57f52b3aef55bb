# shellcheck shell=bash
# Shared by the shell system tests (source it after setting HOST, a 127.0.0.x of the test's own):
# free ports on HOST, a work directory, every started pid stopped on exit, ok/bad counting, and
# a single-member etcd on HOST.
#   HOST=127.0.0.17; source "$(dirname "$0")/lib.sh"; work_dir duplex-cluster
# Tests add each pid they start to `pids`; `cleanup_hook` (if defined) runs first on exit.
# free_port: a port below the kernel's ephemeral range (ip_local_port_range), free now: a port
# taken with bind(0) is an ephemeral one, which any outgoing connection (etcdctl, a proxy, a
# daemon's etcd client) may be given before the test's server binds it.
# Ports already handed out in this test are never handed out again (kept in $work/ports-taken once
# work_dir ran): nothing binds them until the daemons start, so a second call could pick the same
# one, and then a daemon fails with "address in use" (about 1 CI run in 25 with ten ports a test).
free_port() {
  /usr/bin/python3 - "$HOST" "${work:+$work/ports-taken}" <<'PYEOF'
import random, socket, sys
try:
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except (OSError, ValueError, IndexError):
    low = 32768
low = low if low > 12000 else 32768
taken_file = sys.argv[2] if len(sys.argv) > 2 else ""
taken = set()
if taken_file:
    try:
        taken = {int(x) for x in open(taken_file).read().split()}
    except (OSError, ValueError):
        pass
for _ in range(200):
    port = random.randrange(10000, low)
    if port in taken:
        continue
    s = socket.socket()
    try:
        s.bind((sys.argv[1], port))
    except OSError:
        continue
    finally:
        s.close()
    if taken_file:
        with open(taken_file, "a") as f:
            f.write(f"{port}\n")
    print(port)
    sys.exit(0)
s = socket.socket()
s.bind((sys.argv[1], 0))
print(s.getsockname()[1])
PYEOF
}
pids=()
fails=0
ok() { echo "ok - $*"; }
failed_checks=()
bad() { echo "FAIL - $*"; fails=$((fails + 1)); failed_checks+=("$*"); }
# The failed checks again as the last lines: CI shows only the tail of a failed test's output,
# which the daemons' logs printed at the end would otherwise fill.
cleanup() {
  if [ "${#failed_checks[@]}" -gt 0 ]; then
    echo "--- failed checks (${#failed_checks[@]}):"
    for c in "${failed_checks[@]}"; do echo "FAIL - ${c:0:400}"; done
  fi
  if declare -F cleanup_hook >/dev/null; then cleanup_hook || true; fi
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -n "${work:-}" ] && rm -rf "$work"
}
# work_dir NAME: a fresh directory under /var/tmp, removed on exit with every pid in `pids`.
work_dir() {
  work=$(mktemp -d "/var/tmp/$1.XXXXXX")
  trap cleanup EXIT
}
# start_etcd: one member on HOST (client and peer ports free); sets ETCD, ETCD_PEER and etcd_pid.
# Called again after the member stopped, it restarts it on the same ports and data dir.
start_etcd() {
  if [ -z "${ETCD_PEER:-}" ]; then
    ETCD=http://$HOST:$(free_port)
    ETCD_PEER=http://$HOST:$(free_port)
  fi
  etcd --name c1 --data-dir "$work/etcd" --listen-client-urls "$ETCD" --advertise-client-urls "$ETCD" \
    --listen-peer-urls "$ETCD_PEER" --initial-advertise-peer-urls "$ETCD_PEER" \
    --initial-cluster "c1=$ETCD_PEER" >>"$work/etcd.log" 2>&1 &
  etcd_pid=$!
  pids+=("$etcd_pid")
}
