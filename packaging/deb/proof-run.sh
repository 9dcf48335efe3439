#!/bin/sh
# Proof run: install the .deb in a clean Debian bookworm chroot, run `edgecap doctor`, describe
# a real photo with the default model (timed), then remove and purge the package.
#
#   sudo packaging/deb/proof-run.sh amd64|arm64 [path/to/edgecap_*.deb]
#
# arm64 on an x86 machine runs under qemu-user-static through binfmt_misc (apt-get install
# qemu-user-static binfmt-support); every arm64 program, Python included, is emulated, so the
# times printed are emulation times, not Raspberry Pi or Jetson times.
# Needs root, debootstrap and Debian's package mirror (the chroot is kept in
# $EDGECAP_DEB_WORK/bookworm-<arch> and reused; delete it for a fresh one). Not part of CI.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
ARCH=${1:?usage: proof-run.sh amd64|arm64 [deb]}
WORK=${EDGECAP_DEB_WORK:-/var/tmp/edgecap-deb}
ROOT=${EDGECAP_CHROOT:-$WORK/bookworm-$ARCH}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PHOTO=${EDGECAP_PHOTO:-$REPO/assets/chelsea.jpg}
if [ $# -ge 2 ]; then DEB=$2; else DEB=$(ls -t "$WORK"/edgecap_*_"$ARCH".deb | head -1); fi
[ -f "$DEB" ] || { echo "proof-run: no .deb for $ARCH (run packaging/deb/build-deb.sh $ARCH)" >&2; exit 2; }

say() { printf '\n== %s\n' "$*"; }

if [ "$ARCH" != "$(dpkg --print-architecture)" ]; then
    QEMU=/usr/bin/qemu-aarch64-static
    [ "$ARCH" = arm64 ] || { echo "proof-run: only arm64 is emulated" >&2; exit 2; }
    [ -x "$QEMU" ] || { echo "proof-run: apt-get install qemu-user-static binfmt-support" >&2; exit 2; }
    if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || true
        update-binfmts --enable qemu-aarch64 || true
    fi
    if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        echo "proof-run: cannot register qemu-aarch64 with binfmt_misc here; arm64 programs cannot run" >&2
        exit 2
    fi
    say "binfmt: $(tr '\n' ' ' < /proc/sys/fs/binfmt_misc/qemu-aarch64 | cut -c1-80)"
fi

if [ ! -x "$ROOT/usr/bin/apt-get" ]; then
    say "debootstrap bookworm $ARCH into $ROOT"
    debootstrap --variant=minbase --arch="$ARCH" bookworm "$ROOT" "$MIRROR"
fi
if [ -n "${QEMU:-}" ]; then cp "$QEMU" "$ROOT/usr/bin/"; fi  # for binfmt entries without the F flag

mount -t proc proc "$ROOT/proc"
trap 'umount "$ROOT/sys" "$ROOT/proc" 2>/dev/null || true' EXIT INT TERM
# onnxruntime's cpuinfo reads /sys/devices/system/cpu. Emulated, it would read the x86 host's
# and crash (qemu: signal 11, seen here); without /sys it only warns that it found no CPU info.
if [ -z "${QEMU:-}" ]; then mount -t sysfs -o ro sysfs "$ROOT/sys"; fi
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
cp "$DEB" "$ROOT/tmp/"
cp "$PHOTO" "$ROOT/tmp/photo.jpg"
in_root() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }

say "chroot: $(in_root uname -m), $(in_root sh -c '. /etc/os-release; echo $PRETTY_NAME')"
in_root apt-get -q update >/dev/null
say "apt-get install ./$(basename "$DEB")"
in_root apt-get install -y -q --no-install-recommends "/tmp/$(basename "$DEB")" | tail -n 4
in_root id edgecap

say "edgecap --version: $(in_root edgecap --version)"
say "edgecap doctor"
in_root edgecap doctor || echo "(edgecap doctor exited with $?)"

say "edgecap caption $(basename "$PHOTO") (as the service user edgecap)"
start=$(date +%s.%N)
in_root runuser -u edgecap -- edgecap caption --json /tmp/photo.jpg > "$WORK/caption-$ARCH.json"
end=$(date +%s.%N)
python3 - "$WORK/caption-$ARCH.json" "$start" "$end" "$ARCH" <<'EOF'
import json, sys
record = json.load(open(sys.argv[1]))[0]
wall = float(sys.argv[3]) - float(sys.argv[2])
emulated = " (emulated with qemu-user on x86-64)" if sys.argv[4] != "amd64" else ""
print(f"caption: {record['caption']}")
print(f"time: {record['ms'] / 1000:.2f} s in the model, {wall:.1f} s for the whole command "
      f"(start, imports, loading and checking the model){emulated}")
EOF

if command -v systemd-analyze >/dev/null; then
    say "systemd-analyze verify (units as installed in the chroot, with systemd and python3 added there)"
    in_root apt-get install -y -q --no-install-recommends systemd python3 >/dev/null 2>&1
    systemd-analyze verify --man=no --root="$ROOT" /lib/systemd/system/edgecap-narrator.service \
        /lib/systemd/system/edgecap-button.service && echo "no problems reported" || echo "(exit $?)"
fi

say "apt-get remove edgecap"
in_root apt-get remove -y -q edgecap | tail -n 1
if [ -e "$ROOT/opt/edgecap" ]; then echo "LEFT BEHIND: /opt/edgecap"; else echo "/opt/edgecap is gone"; fi
if in_root getent passwd edgecap >/dev/null && [ -e "$ROOT/etc/default/edgecap" ]; then
    echo "user edgecap and /etc/default/edgecap kept until purge"
fi
say "apt-get purge edgecap"
in_root apt-get purge -y -q edgecap | tail -n 1
if in_root getent passwd edgecap >/dev/null; then echo "LEFT BEHIND: user edgecap"; else echo "user edgecap is gone"; fi
if [ -e "$ROOT/etc/default/edgecap" ]; then echo "LEFT BEHIND: /etc/default/edgecap"; else echo "/etc/default/edgecap is gone"; fi
say "proof run $ARCH: done"
