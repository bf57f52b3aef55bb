#!/usr/bin/env bash
# Install everything Duplex builds, tests and benchmarks with, from Debian 12 (bookworm) packages.
#
#   scripts/install-deps.sh            # as root: apt-get update + apt-get install (idempotent)
#
# Environment:
#   DUPLEX_SKIP_APT=1     skip apt-get entirely when every package below is already installed
#                         (default: always run update+install; it is cheap when nothing is missing)
#   DUPLEX_APT_EXTRA="a b"  extra packages to install in the same apt-get call
#
# Services: packages such as etcd-server would start a system-wide daemon on install (etcd on
# 127.0.0.1:2379 would then collide with the demo cluster). While installing, a policy-rc.d that
# forbids starting services is put in place when the machine has none, and removed afterwards.
set -euo pipefail

# Build toolchain and libraries (see DESIGN.md "Dependencies").
BUILD_PKGS=(
  build-essential cmake ninja-build pkg-config git g++
  clang-format clang-tidy
  libgtest-dev libgmock-dev libbenchmark-dev
  libasio-dev liburing-dev libisal-dev libxxhash-dev libzstd-dev
  nlohmann-json3-dev libcpp-httplib-dev libcli11-dev libspdlog-dev libfmt-dev libtomlplusplus-dev
  libssl-dev
)
# Fuzzing and linting: the newest clang on bookworm that ships libFuzzer (clang_rt.fuzzer lives in
# libclang-rt-NN-dev). clang 14, the default, cannot parse libstdc++-12's <ranges>; 19 can.
CLANG_VERSION="${DUPLEX_CLANG_VERSION:-19}"
CLANG_PKGS=(
  "clang-${CLANG_VERSION}" "libclang-rt-${CLANG_VERSION}-dev"
  "clang-format-${CLANG_VERSION}" "clang-tidy-${CLANG_VERSION}"
)
# Real clients, servers and tools the system tests and benchmarks drive.
TEST_PKGS=(
  fio libnbd-bin python3-libnbd nbdkit qemu-utils qemu-block-extra libiscsi-bin
  etcd-server etcd-client openssl iproute2 nftables iptables procps psmisc util-linux
  python3 valgrind
  # fio with the libiscsi engine is built from Debian's fio source (../shared/bench/build-fio.sh)
  dpkg-dev libiscsi-dev libnbd-dev libaio-dev zlib1g-dev
)
# shellcheck disable=SC2206
PKGS=("${BUILD_PKGS[@]}" "${CLANG_PKGS[@]}" "${TEST_PKGS[@]}" ${DUPLEX_APT_EXTRA:-})

log() { printf '[install-deps] %s\n' "$*" >&2; }

missing_pkgs() {
  local p status
  for p in "${PKGS[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [[ "$status" == "installed" ]] || printf '%s\n' "$p"
  done
}

if [[ "${DUPLEX_SKIP_APT:-0}" == "1" ]]; then
  missing=$(missing_pkgs)
  if [[ -z "$missing" ]]; then
    log "all ${#PKGS[@]} packages installed; skipping apt-get (DUPLEX_SKIP_APT=1)"
    exit 0
  fi
  log "DUPLEX_SKIP_APT=1 but missing: $(echo "$missing" | tr '\n' ' ')"
fi

if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    log "not root: re-running under sudo"
    exec sudo -E "$0" "$@"
  fi
  log "must run as root (apt-get install)"
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# Keep package installation from starting system services (see the header).
POLICY=/usr/sbin/policy-rc.d
created_policy=0
cleanup() { if [[ $created_policy == 1 ]]; then rm -f "$POLICY"; fi; }
trap cleanup EXIT
if [[ ! -e "$POLICY" ]]; then
  printf '#!/bin/sh\n# Temporary: written by duplex scripts/install-deps.sh\nexit 101\n' >"$POLICY"
  chmod 755 "$POLICY"
  created_policy=1
fi

apt_retry() {
  # apt/dpkg may be locked by another apt run (e.g. unattended upgrades): wait and retry.
  local i
  for i in 1 2 3 4 5; do
    if apt-get -o DPkg::Lock::Timeout=120 "$@"; then return 0; fi
    log "apt-get $1 failed (try $i); retrying in 10 s"
    sleep 10
  done
  apt-get -o DPkg::Lock::Timeout=120 "$@"
}

log "apt-get update"
apt_retry update -q
log "apt-get install ${#PKGS[@]} packages"
apt_retry install -y -q --no-install-recommends "${PKGS[@]}"

missing=$(missing_pkgs)
if [[ -n "$missing" ]]; then
  log "still missing after install: $(echo "$missing" | tr '\n' ' ')"
  exit 1
fi

# The lint's clang-tidy: 22 (bookworm-security) skips system headers and so runs about four times
# faster than 19 (scripts/lint.sh). Optional: where the archive lacks it, lint.sh uses 19.
if apt-cache show clang-tidy-22 >/dev/null 2>&1; then
  apt-get -o DPkg::Lock::Timeout=120 install -y -q --no-install-recommends clang-tidy-22 ||
    log "warning: clang-tidy-22 did not install; the lint uses clang-tidy-${CLANG_VERSION}"
else
  log "clang-tidy-22 is not in this machine's archive; the lint uses clang-tidy-${CLANG_VERSION}"
fi

# Sanity: the fuzzer runtime must be where clang looks for it.
if ! compgen -G "/usr/lib/llvm-${CLANG_VERSION}/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a" >/dev/null &&
  ! compgen -G "/usr/lib/llvm-${CLANG_VERSION}/lib/clang/*/lib/*/libclang_rt.fuzzer*.a" >/dev/null; then
  log "warning: libFuzzer runtime for clang-${CLANG_VERSION} not found; fuzz builds will not link"
fi
log "done"
