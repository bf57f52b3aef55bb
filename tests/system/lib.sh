# shellcheck shell=bash
# Shared by the shell system tests (source it after setting HOST, a 127.0.0.x of the test's own):
# free ports on HOST, a work directory, every started pid stopped on exit, ok/bad counting, and
# a single-member etcd on HOST.
#   HOST=127.0.0.17; source "$(dirname "$0")/lib.sh"; work_dir duplex-cluster
# Tests add each pid they start to `pids`; `cleanup_hook` (if defined) runs first on exit.
free_port() { /usr/bin/python3 -c "import socket; s=socket.socket(); s.bind(('$HOST', 0)); print(s.getsockname()[1])"; }
pids=()
fails=0
ok() { echo "ok - $*"; }
bad() { echo "FAIL - $*"; fails=$((fails + 1)); }
cleanup() {
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
