#!/bin/sh
# Install edgecap on Raspberry Pi OS bookworm (arm64): system packages, the edgecap .deb
# (a venv under /opt/edgecap with the default model), narration at boot, and optionally the
# GPIO push button.
#
#   sudo packaging/raspberrypi/install.sh [--button PIN] [edgecap_*_arm64.deb]
#
# Without a .deb it builds one here from the checkout (needs PyPI once, for the wheels).
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BUTTON_PIN=""
DEB=""
while [ $# -gt 0 ]; do
    case "$1" in
        --button) BUTTON_PIN=${2:?--button needs a BCM pin number}; shift 2 ;;
        *.deb) DEB=$1; shift ;;
        *) echo "usage: install.sh [--button PIN] [edgecap_*_arm64.deb]" >&2; exit 2 ;;
    esac
done

[ "$(id -u)" = 0 ] || { echo "install.sh: run as root (sudo)" >&2; exit 2; }
. /etc/os-release
[ "${VERSION_CODENAME:-}" = bookworm ] || echo "install.sh: warning: made for bookworm, this is ${VERSION_CODENAME:-unknown}" >&2
[ "$(dpkg --print-architecture)" = arm64 ] || echo "install.sh: warning: made for arm64 (64-bit Raspberry Pi OS)" >&2

echo "== system packages"
apt-get update -q
# espeak-ng: the voice; alsa-utils: aplay for tones and mixer settings; v4l-utils: camera
# listing; rpicam-apps-lite: lists CSI cameras; libcamera-v4l2: libcamerify, so OpenCV can
# read a CSI camera; python3-gpiozero + python3-lgpio: the push button on a Pi 5.
apt-get install -y -q --no-install-recommends espeak-ng alsa-utils v4l-utils python3.11 python3-venv \
    rpicam-apps-lite libcamera-v4l2 python3-gpiozero python3-lgpio

if [ -z "$DEB" ]; then
    echo "== building the .deb from $REPO"
    BUILD=$(mktemp -d)
    python3 -m venv "$BUILD/venv"
    PYTHON=$BUILD/venv/bin/python EDGECAP_DEB_WORK=$BUILD sh "$REPO/packaging/deb/build-deb.sh" arm64
    DEB=$(ls "$BUILD"/edgecap_*_arm64.deb)
fi
echo "== installing $DEB"
apt-get install -y -q "$(cd "$(dirname "$DEB")" && pwd)/$(basename "$DEB")"

# A CSI camera (libcamera) with no USB camera: run narration through libcamerify.
if rpicam-hello --list-cameras 2>/dev/null | grep -q '^ *[0-9] :' && ! ls /dev/v4l/by-id/*usb* >/dev/null 2>&1; then
    echo "== CSI camera found: narration runs under libcamerify"
    mkdir -p /etc/systemd/system/edgecap-narrator.service.d
    cat > /etc/systemd/system/edgecap-narrator.service.d/libcamera.conf <<'EOF'
[Service]
ExecStart=
ExecStart=/usr/bin/libcamerify /usr/bin/edgecap narrate --no-keyboard --control-socket /run/edgecap/control.sock $EDGECAP_NARRATE_ARGS
EOF
fi

systemctl daemon-reload
systemctl enable --now edgecap-narrator.service
if [ -n "$BUTTON_PIN" ]; then
    sed -i "s/^EDGECAP_BUTTON_ARGS=.*/EDGECAP_BUTTON_ARGS=\"--pin $BUTTON_PIN\"/" /etc/default/edgecap
    adduser edgecap gpio >/dev/null
    systemctl enable --now edgecap-button.service
fi

echo "== edgecap doctor"
runuser -u edgecap -- edgecap doctor || true
echo "Narration starts at boot. Settings: /etc/default/edgecap; log: journalctl -u edgecap-narrator"
