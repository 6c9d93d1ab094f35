#!/usr/bin/env bash
# Build a Debian bookworm arm64 root (the userland of 64-bit Raspberry Pi OS) from debootstrap's
# packages, unpacked (not configured), run under QEMU user-mode emulation through binfmt_misc. Needs root (as CI has).
#   bash tests/arm64/root.sh ROOT_DIR [ARCH]      # ARCH: arm64 (default) or armhf
# Installs Debian's qemu-user-static, binfmt-support and debootstrap when missing; mounts
# binfmt_misc and enables the qemu handler, so every arm64 process (dpkg, pip, console
# scripts) runs, not only the first. The Debian mirror is the host's own (its apt sources),
# or $TFTL_DEBIAN_MIRROR. Idempotent: a finished root is reused.
set -euo pipefail
trap 'echo "root.sh: failed (exit $?) at line $LINENO: $BASH_COMMAND" >&2' ERR
root=${1:?usage: root.sh ROOT_DIR [arm64|armhf]}
arch=${2:-arm64}
case "$arch" in
  arm64) qemu=qemu-aarch64 ;;
  armhf) qemu=qemu-arm ;;
  *) echo "root.sh: unknown architecture $arch — use arm64 or armhf" >&2; exit 2 ;;
esac
if [ "$(id -u)" != 0 ]; then
  echo "root.sh: needs root (debootstrap, chroot, binfmt_misc) — run it as root, as CI does" >&2; exit 2
fi
if ! command -v debootstrap >/dev/null || ! command -v update-binfmts >/dev/null \
   || [ ! -e /usr/bin/qemu-aarch64-static ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static binfmt-support debootstrap >/dev/null
fi
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
update-binfmts --enable "$qemu" >/dev/null 2>&1 || true
if ! grep -q '^enabled' "/proc/sys/fs/binfmt_misc/$qemu" 2>/dev/null; then
  echo "root.sh: binfmt_misc has no enabled $qemu handler — install qemu-user-static and binfmt-support" >&2; exit 2
fi

mirror=${TFTL_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then  # the host's own mirror: the first URIs/deb line of its apt sources
  mirror=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ {print $2; exit}')
  [ -n "$mirror" ] || mirror=$(grep -h '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2; exit}')
fi
[ -n "$mirror" ] || { echo "root.sh: no Debian mirror found — set TFTL_DEBIAN_MIRROR" >&2; exit 2; }

mkdir -p "$(dirname "$root")"
exec 9>"$root.lock"   # one builder at a time: a prebuild (tests/run_all.sh) and the test share it
flock 9
unmount_all() {  # whatever a killed build or run left mounted inside the root
  findmnt -rn -o TARGET | { grep -F "$root/" || true; } | sort -r | while read -r m; do umount -l "$m" || true; done
}
if [ ! -e "$root/.tftl-root-done" ]; then
  unmount_all
  rm -rf --one-file-system "$root"
  mkdir -p "$root"
  include=python3,python3-venv,python3-pip,ca-certificates
  # armhf: no numpy wheel exists for armv7l, so Debian's numpy and Pillow, as a Pi OS user would.
  [ "$arch" = armhf ] && include="$include,python3-numpy,python3-pil"
  debootstrap --foreign --arch="$arch" --variant=minbase --include="$include" bookworm "$root" "$mirror" >/dev/null
  # Debootstrap's second stage would configure every package under QEMU: about 6 minutes per root
  # on 2 cores. The smoke run needs only the packages' files, so unpack each downloaded package on
  # the host (dpkg-deb reads any architecture's .deb) and do the two things of the maintainer
  # scripts that Python relies on: the passwd and group files (base-passwd) and the shared-library
  # cache, including the folders that libblas3 and liblapack3 register as alternatives.
  for deb in "$root"/var/cache/apt/archives/*.deb; do dpkg-deb -x "$deb" "$root"; done
  cp "$root/usr/share/base-passwd/passwd.master" "$root/etc/passwd"
  cp "$root/usr/share/base-passwd/group.master" "$root/etc/group"
  (cd "$root" && for d in usr/lib/*/blas usr/lib/*/lapack; do if [ -d "$d" ]; then echo "/$d"; fi; done) \
    > "$root/etc/ld.so.conf.d/zz-alternatives.conf"
  chroot "$root" /sbin/ldconfig
  touch "$root/.tftl-root-done"
fi
# QEMU 7.2 passes the host's x86 /proc/cpuinfo through; with the real sysfs visible, LiteRT's
# CPU detection crashes. The root never mounts sysfs: plain files stand for the two entries
# LiteRT reads.
mkdir -p "$root/sys/devices/system/cpu"
ncpu=$(nproc)
echo "0-$((ncpu - 1))" > "$root/sys/devices/system/cpu/possible"
echo "0-$((ncpu - 1))" > "$root/sys/devices/system/cpu/present"
# pip inside the root uses the host's CA bundle and pip settings (a proxy's CA, an index).
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
[ -f /etc/pip.conf ] && cp /etc/pip.conf "$root/etc/pip.conf"
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
echo "$root"
