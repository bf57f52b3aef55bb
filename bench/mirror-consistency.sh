#!/usr/bin/env bash
# The long run of the mirror's consistency checker (issue 7 item 6; CI runs one short trial as
# system.mirror_consistency). Same script, same checks - linearizable reads through both nodes,
# every acknowledged write read back through both, online verify equal - with more trials, each
# longer, so that many more faults (kill -9 of either daemon, link cuts) land at random moments.
#
#   bench/mirror-consistency.sh [--trials N] [--seconds S] [--seed N]
#   defaults: 10 trials of 120 s (about 25 minutes); the summary line reports trials, faults
#   injected, acknowledged writes and reads checked. Needs a built duplexd (DUPLEXD, default
#   build/src/daemon/duplexd), etcd and libnbd's Python module; runs as root.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export DUPLEXD=${DUPLEXD:-$ROOT/build/src/daemon/duplexd}
export CHECK_TRIALS=10 CHECK_SECONDS=120
while [[ $# -gt 0 ]]; do
  case "$1" in
    --trials) CHECK_TRIALS=$2; shift 2 ;;
    --seconds) CHECK_SECONDS=$2; shift 2 ;;
    --seed) export CHECK_SEED=$2; shift 2 ;;
    *) echo "mirror-consistency.sh: unknown argument $1 (see the header)" >&2; exit 2 ;;
  esac
done
[[ -x "$DUPLEXD" ]] || { echo "mirror-consistency.sh: no duplexd at $DUPLEXD (build first, or set DUPLEXD)" >&2; exit 2; }
exec "$ROOT/tests/system/mirror_consistency.sh"
