#!/usr/bin/env bash
# The main job, for a person trying Duplex: install, build, then start the demo cluster — a local etcd
# and two duplexd nodes (sites a and b, on 127.0.0.11 and 127.0.0.12) serving the volume "demo" over
# NBD and iSCSI with a REST API — print how to connect, and stay in the foreground until Ctrl-C, which
# stops the cluster (`duplexctl demo down`). Data stays in DIR; the next run reuses it.
#
#   scripts/demo.sh [--dir DIR] [--nodes N] [--detach]   (as root on Debian 12; DIR /var/tmp/duplex-demo)
#
#   --detach   start the cluster and return; stop it later with
#              build/src/cli/duplexctl demo down --dir DIR
# Environment: DUPLEX_SKIP_APT=1 (skip apt when all packages are installed), DUPLEX_DEMO_DIR,
# DUPLEX_DEMO_SIZE (volume size, default 1GiB), DUPLEX_DEMO_NODES (default 2).
# Remove DIR (or `duplexctl demo down --dir DIR --purge`) to start over.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR="${DUPLEX_DEMO_DIR:-/var/tmp/duplex-demo}"
NODES="${DUPLEX_DEMO_NODES:-2}"
SIZE="${DUPLEX_DEMO_SIZE:-1GiB}"
detach=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dir) DIR="${2:?--dir needs a value}"; shift ;;
    --dir=*) DIR="${1#*=}" ;;
    --nodes) NODES="${2:?--nodes needs a value}"; shift ;;
    --nodes=*) NODES="${1#*=}" ;;
    --detach) detach=1 ;;
    -h|--help) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

say() { printf '[demo] %s\n' "$*"; }

say "installing dependencies (scripts/install-deps.sh)"
"$ROOT/scripts/install-deps.sh"
say "building duplexd and duplexctl (scripts/build.sh -> build/)"
"$ROOT/scripts/build.sh" --dir build --target duplexd --target duplexctl

DUPLEXCTL="$ROOT/build/src/cli/duplexctl"
export DUPLEXD="$ROOT/build/src/daemon/duplexd"
for bin in "$DUPLEXCTL" "$DUPLEXD"; do
  [[ -x "$bin" ]] || { say "$bin was not built; see the build output above"; exit 1; }
done

# Exits 1 with one line when the demo in DIR already runs, or when anything fails (then it has
# already stopped what it started).
"$DUPLEXCTL" demo up --dir "$DIR" --nodes "$NODES" --size "$SIZE"

if [[ $detach == 1 ]]; then
  say "the demo cluster keeps running; stop it with: $DUPLEXCTL demo down --dir $DIR"
  exit 0
fi

stopping=0
stop() {
  [[ $stopping == 1 ]] && return
  stopping=1
  echo
  say "stopping the demo cluster (data stays in $DIR)"
  "$DUPLEXCTL" demo down --dir "$DIR" || true
}
trap 'stop; exit 0' INT TERM
trap stop EXIT
say "running in the foreground: Ctrl-C stops the cluster. From another shell, try the commands above."
# Watch the processes: a node that stopped by itself is worth saying, not hiding (said once per change).
healthy=1
while sleep 10; do
  if "$DUPLEXCTL" demo status --dir "$DIR" >/dev/null 2>&1; then
    [[ $healthy == 0 ]] && say "everything is running again"
    healthy=1
  else
    if [[ $healthy == 1 ]]; then
      say "something in the demo stopped or is unhealthy (logs: $DIR/*.log):"
      "$DUPLEXCTL" demo status --dir "$DIR" || true
    fi
    healthy=0
  fi
done
