#!/usr/bin/env bash
# Installs the Debian 12 packages that building, testing, the demo and the
# benchmark need.  Idempotent and cheap: it asks dpkg first and prints nothing
# when every package is there; only when some are missing does it run
# `apt-get update` and install just those.  Runs as root, or through sudo.
#
# Usage: scripts/install-deps.sh [--list]   (--list prints the packages and exits)
set -euo pipefail

PACKAGES=(
  # toolchain and build system
  build-essential cmake pkg-config g++ git
  # nbdkit, libnbd and its tools (nbdsh, nbdcopy, nbdinfo)
  nbdkit nbdkit-plugin-dev libnbd-dev libnbd-bin python3-libnbd python3
  # libraries the code links against
  librocksdb-dev liburing-dev libxxhash-dev libzstd-dev libfmt-dev
  nlohmann-json3-dev libcli11-dev
  # tests (fiu-utils: fiu-run/fiu-ctrl and libfiu's POSIX preload, which
  # make the plugin's own syscalls fail in tests/e2e/ioerror_fiu_test.cc)
  catch2 fiu-utils
  # fuzzing (fuzz/, scripts/fuzz.sh): clang with libFuzzer and its
  # sanitizer runtimes
  clang libclang-rt-14-dev
  # benchmark and images (qemu-utils: qemu-img and qemu-nbd, the qcow2 target;
  # python3-matplotlib: bench/plot.py)
  fio qemu-utils python3-matplotlib
  # whole-VM checkpoints and their tests: QEMU (TCG) with SeaBIOS, binutils
  # for the test guest (part of build-essential)
  qemu-system-x86 seabios
  # NBD over TLS (docs/reliability.md, "Security"; tests/e2e/tls_test.cc):
  # certtool makes the test certificates, psktool the pre-shared keys
  gnutls-bin
  # docs/integration.md's check (scripts/check-integration.sh):
  # virt-xml-validate for the libvirt domain XML (systemd-analyze, for the
  # units, comes with Debian's systemd)
  libvirt-clients
)

if [[ "${1:-}" == "--list" ]]; then
  printf '%s\n' "${PACKAGES[@]}"
  exit 0
fi

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "install-deps: dpkg-query not found; this script is for Debian 12 (bookworm)" >&2
  exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
  [[ "$status" == "installed" ]] || missing+=("$pkg")
done
((${#missing[@]} == 0)) && exit 0

if [[ $(id -u) -eq 0 ]]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "install-deps: missing Debian packages: ${missing[*]}" >&2
  echo "install-deps: not root and sudo is not installed; as root run: apt-get install ${missing[*]}" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -qq --no-install-recommends "${missing[@]}"

# Verify: a package that apt could not provide must fail here, not later
# in the build with a puzzling CMake message.
still=()
for pkg in "${missing[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
  [[ "$status" == "installed" ]] || still+=("$pkg")
done
if ((${#still[@]} > 0)); then
  echo "install-deps: still missing after apt-get install: ${still[*]}" >&2
  exit 1
fi
echo "install-deps: done"
