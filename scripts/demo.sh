#!/usr/bin/env bash
# The main job, for a person trying Duplex: install, build, then run one duplexd in the foreground
# serving a thin-provisioned demo volume over NBD and iSCSI, and print how to connect.
#
#   scripts/demo.sh [--dir DIR]        (as root on Debian 12; default DIR /var/tmp/duplex-demo)
#
# Environment: DUPLEX_SKIP_APT=1 (skip apt when all packages are installed), DUPLEX_DEMO_DIR,
# DUPLEX_DEMO_LISTEN (NBD, default 127.0.0.1:10809), DUPLEX_DEMO_ISCSI_LISTEN (default
# 127.0.0.1:3260; empty: no iSCSI portal), DUPLEX_DEMO_SIZE (volume size, default 20GiB).
# Stop it with Ctrl-C. Data stays in DIR; remove DIR to start over.
#
# The target shape (DESIGN.md "Quick start"): `duplexctl demo up --dir DIR` with etcd and two
# mirrored nodes writing DIR/endpoints.json. Until duplexctl exists, this script runs one node.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR="${DUPLEX_DEMO_DIR:-/var/tmp/duplex-demo}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dir) DIR="${2:?--dir needs a value}"; shift ;;
    --dir=*) DIR="${1#*=}" ;;
    -h|--help) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
LISTEN="${DUPLEX_DEMO_LISTEN:-127.0.0.1:10809}"
ISCSI_LISTEN="${DUPLEX_DEMO_ISCSI_LISTEN-127.0.0.1:3260}"
SIZE="${DUPLEX_DEMO_SIZE:-20GiB}"

say() { printf '[demo] %s\n' "$*"; }

say "installing dependencies (scripts/install-deps.sh)"
"$ROOT/scripts/install-deps.sh"
say "building duplexd (scripts/build.sh --target duplexd -> build/)"
"$ROOT/scripts/build.sh" --dir build --target duplexd

DUPLEXD="$ROOT/build/src/daemon/duplexd"
if [[ ! -x "$DUPLEXD" ]]; then
  say "the daemon is not built yet: $DUPLEXD does not exist."
  say "Duplex is under construction (see README.md, 'Status'); the build and the tests do run:"
  say "  scripts/test-all.sh"
  exit 1
fi

mkdir -p "$DIR"
CONFIG="$DIR/duplexd.toml"
POOL="$DIR/pool0.pool"

# ---------------------------------------------------------------------------------------------------
# The demo node's configuration. The TOML format belongs to src/daemon (docs/daemon.md); keep this
# block in step with it. Everything the demo needs is here: the pool file, the config,
# the volume name and the URI printed below.
POOL_SIZE=64GiB            # a sparse file: uses disk space only as data is written
VOLUME=demo
IQN=iqn.2026-11.io.duplex:$VOLUME   # the automatic target name of the volume (docs/daemon.md)
ISCSI_TOML=""
[[ -n "$ISCSI_LISTEN" ]] && ISCSI_TOML="\"$ISCSI_LISTEN\""
# The pool is a sparse file of POOL_SIZE in DIR: duplexd creates and formats it on its first start
# (create_size) and opens it on later starts. Do not pre-create it: an existing file must be a pool.
cat >"$CONFIG" <<TOML
# Written by scripts/demo.sh: one duplexd node serving the thin volume "$VOLUME" over NBD and iSCSI.
state_dir = "$DIR/state"

[node]
name = "n1"
site = "a"

[daemon]
log_level = "info"

[listen]
nbd = "$LISTEN"

[nbd]
default_export = "$VOLUME"

[[pool]]
name = "pool0"
path = "$POOL"
create_size = "$POOL_SIZE"

[[volume]]
pool = "pool0"
name = "$VOLUME"
size = "$SIZE"

[iscsi]
listen = [$ISCSI_TOML]
TOML
URI="nbd://$LISTEN/$VOLUME"
ISCSI_URI="iscsi://$ISCSI_LISTEN/$IQN/0"
# ---------------------------------------------------------------------------------------------------

cat <<MSG

[demo] duplexd is starting in the foreground (Ctrl-C stops it).
[demo]   volume:  $VOLUME ($SIZE, thin) in pool $POOL
[demo]   config:  $CONFIG
[demo]   NBD URI: $URI
[demo] Try, from another shell:
[demo]   nbdinfo $URI
[demo]   qemu-img info $URI
[demo]   qemu-io -f raw -c 'write -P 0xab 0 1M' -c 'read -P 0xab 0 1M' $URI
[demo]   fio --name=demo --ioengine=nbd --uri=$URI --rw=randrw --bs=4k --size=256M --runtime=10 --time_based
MSG
if [[ -n "$ISCSI_LISTEN" ]]; then
  cat <<MSG
[demo]   iSCSI URI: $ISCSI_URI (target $IQN, LUN 0, portal $ISCSI_LISTEN)
[demo]   iscsi-ls -s iscsi://$ISCSI_LISTEN
[demo]   iscsi-inq $ISCSI_URI
[demo]   qemu-io -f raw -c 'read -P 0xab 0 1M' $ISCSI_URI
[demo]   iscsiadm -m discovery -t st -p $ISCSI_LISTEN   (open-iscsi, on a host with the kernel initiator)
MSG
fi
echo
"$DUPLEXD" --config "$CONFIG" --check-config
exec "$DUPLEXD" --config "$CONFIG"
