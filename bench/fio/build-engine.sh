#!/usr/bin/env bash
# Build the fio external ioengine libfio_duplex.so (bench/fio): fetches the source of the installed
# fio version from Debian (apt-get source with a private deb-src list; /etc/apt is not touched),
# configures it (its headers need config-host.h), and builds the engine with position-independent
# libraries in build-fio/. Prints the path of the engine (last line).
#
#   bench/fio/build-engine.sh [WORK_DIR]      WORK_DIR default /var/tmp/duplex-fio (source kept there)
#
# Then, e.g. (store vs raw, 4 KiB random writes at QD 32 after filling the target once):
#   fio --ioengine=external:$ENGINE --duplex_mode=store --filename=/var/tmp/pool.img --size=1g \
#       --rw=randwrite --bs=4k --iodepth=32 --duplex_fill=1 --runtime=10 --time_based --name=store
#   fio --ioengine=external:$ENGINE --duplex_mode=raw --filename=/var/tmp/raw.img --size=1g ... --name=raw
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=${1:-/var/tmp/duplex-fio}
mkdir -p "$work"
work=$(cd "$work" && pwd)

ver=$(dpkg-query -W -f='${Version}' fio 2>/dev/null) || { echo "build-engine.sh: fio is not installed" >&2; exit 1; }
src="$work/fio-$ver"
if [[ ! -f "$src/config-host.h" ]]; then
  apt_dir="$work/apt"
  mkdir -p "$apt_dir/lists/partial"
  suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
  echo "deb-src http://deb.debian.org/debian $suite main" > "$apt_dir/sources.list"
  aptopts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
           -o "Dir::State::Lists=$apt_dir/lists")
  apt-get "${aptopts[@]}" update >&2
  dl="$work/dl"
  rm -rf "$dl" "$src"; mkdir -p "$dl"
  ( cd "$dl" && apt-get "${aptopts[@]}" source --download-only "fio=$ver" >&2 )
  ( cd "$dl" && dpkg-source -x "$(ls fio_*.dsc | head -1)" "$src" >&2 )
  rm -rf "$dl"
  ( cd "$src" && ./configure --disable-native >&2 )
fi

cmake -S "$ROOT" -B "$ROOT/build-fio" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDUPLEX_TESTS=OFF \
  -DCMAKE_POSITION_INDEPENDENT_CODE=ON -DDUPLEX_FIO_SOURCE="$src" >&2
ninja -C "$ROOT/build-fio" fio_duplex >&2
echo "$ROOT/build-fio/bench/libfio_duplex.so"
