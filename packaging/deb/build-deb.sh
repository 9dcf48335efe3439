#!/bin/sh
# Build edgecap_<version>-1_<arch>.deb for Debian bookworm (and Raspberry Pi OS bookworm).
#
#   packaging/deb/build-deb.sh [amd64|arm64]      (default: this machine's architecture)
#
# Layout (see packaging/deb/README.md for why):
#   /opt/edgecap/venv   a venv on Debian's /usr/bin/python3.11 whose site-packages were filled
#                       at build time from manylinux wheels for the target architecture
#                       (packaging/deb/requirements.txt, --no-deps: the whole closure)
#   /opt/edgecap/app    the edgecap package and models/edgecap-base beside it, so the default
#                       model is found without configuration
#   /usr/bin/edgecap    runs `python3 -I -m edgecap` from that venv
#   edgecap-narrator.service (+ edgecap-button.service), /etc/default/edgecap
#
# Needs: python3.11 + pip (to fetch and unpack wheels), dpkg-deb, git. Wheels are cached in
# $EDGECAP_DEB_WORK (default /var/tmp/edgecap-deb), never in the repository. Output goes there too.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
ARCH=${1:-$(dpkg --print-architecture)}
case "$ARCH" in
    amd64) PYARCH=x86_64 ;;
    arm64) PYARCH=aarch64 ;;
    *) echo "build-deb: unsupported architecture $ARCH (amd64 or arm64)" >&2; exit 2 ;;
esac
PY=${PYTHON:-python3}
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' 2>/dev/null || {
    echo "build-deb: needs Python 3.11 on this machine to match bookworm's python3.11 ($PY)" >&2; exit 2; }
WORK=${EDGECAP_DEB_WORK:-/var/tmp/edgecap-deb}
WHEELS=$WORK/wheels-$PYARCH
STAGE=$WORK/stage-$ARCH
VERSION=$("$PY" -c "import re,sys; print(re.search(r'^version = \"(.+)\"', open(sys.argv[1]).read(), re.M).group(1))" \
          "$REPO/pyproject.toml")
DEB=$WORK/edgecap_${VERSION}-1_${ARCH}.deb
SITE=$STAGE/opt/edgecap/venv/lib/python3.11/site-packages
PLATFORMS="--platform manylinux_2_28_$PYARCH --platform manylinux_2_27_$PYARCH --platform manylinux_2_17_$PYARCH --platform manylinux2014_$PYARCH"

echo "build-deb: edgecap $VERSION for $ARCH in $WORK"
mkdir -p "$WHEELS"
# shellcheck disable=SC2086
"$PY" -m pip download -q --no-deps --only-binary=:all: $PLATFORMS --python-version 3.11 \
    --implementation cp -d "$WHEELS" -r "$HERE/requirements.txt"

rm -rf "$STAGE"
mkdir -p "$SITE" "$STAGE/opt/edgecap/venv/bin" "$STAGE/opt/edgecap/app/models" "$STAGE/usr/bin" \
         "$STAGE/lib/systemd/system" "$STAGE/etc/default" "$STAGE/usr/share/doc/edgecap" \
         "$STAGE/opt/edgecap/button" "$STAGE/DEBIAN"
# shellcheck disable=SC2086
"$PY" -m pip install -q --no-deps --no-index --find-links "$WHEELS" --only-binary=:all: $PLATFORMS \
    --python-version 3.11 --implementation cp --target "$SITE" -r "$HERE/requirements.txt"
rm -rf "${SITE:?}/bin"  # console scripts with this machine's interpreter in their #! line

# A venv by hand: the interpreter is the target's own /usr/bin/python3.11.
cat > "$STAGE/opt/edgecap/venv/pyvenv.cfg" <<EOF
home = /usr/bin
include-system-site-packages = false
version = 3.11
EOF
ln -s /usr/bin/python3.11 "$STAGE/opt/edgecap/venv/bin/python3"
ln -s python3 "$STAGE/opt/edgecap/venv/bin/python"
echo /opt/edgecap/app > "$SITE/edgecap-app.pth"

# The package and the default model, from what git tracks (no caches, no local files).
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard edgecap models/edgecap-base pyproject.toml | xargs -0 tar cf -) | tar xf - -C "$STAGE/opt/edgecap/app"
"$PY" -m compileall -q -s "$STAGE" -p / "$STAGE/opt/edgecap/app/edgecap" "$SITE" >/dev/null

cat > "$STAGE/usr/bin/edgecap" <<'EOF'
#!/bin/sh
# -I: ignore PYTHON* variables, the user's site-packages and the current folder.
# onnxruntime's telemetry stays off even before edgecap is imported.
ORT_DISABLE_TELEMETRY=1 exec /opt/edgecap/venv/bin/python3 -I -m edgecap "$@"
EOF
chmod 755 "$STAGE/usr/bin/edgecap"

install -m 644 "$REPO/packaging/raspberrypi/edgecap-narrator.service" "$REPO/packaging/raspberrypi/edgecap-button.service" \
    "$STAGE/lib/systemd/system/"
install -m 644 "$HERE/edgecap.default" "$STAGE/etc/default/edgecap"
install -m 755 "$REPO/packaging/raspberrypi/edgecap_button.py" "$STAGE/opt/edgecap/button/"
install -m 644 "$HERE/README.md" "$STAGE/usr/share/doc/edgecap/README.md"
cat > "$STAGE/usr/share/doc/edgecap/copyright" <<EOF
edgecap $VERSION: Apache-2.0. The model bundle: see /opt/edgecap/app/models/edgecap-base/MODEL_CARD.md.
Bundled Python packages keep their licences in
/opt/edgecap/venv/lib/python3.11/site-packages/*.dist-info/ (numpy BSD-3-Clause, onnxruntime MIT,
opencv-python-headless Apache-2.0 / MIT, pyttsx3 MPL-2.0, tokenizers Apache-2.0, flatbuffers
Apache-2.0, packaging BSD-2-Clause / Apache-2.0, protobuf BSD-3-Clause, rapidocr Apache-2.0 with
its PP-OCR models, threadpoolctl BSD-3-Clause, and rapidocr's own needs).
EOF
for script in postinst prerm postrm; do
    install -m 755 "$HERE/$script" "$STAGE/DEBIAN/$script"
done
echo /etc/default/edgecap > "$STAGE/DEBIAN/conffiles"
SIZE=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
# (No backquotes in here: this heredoc expands.)
cat > "$STAGE/DEBIAN/control" <<EOF
Package: edgecap
Version: ${VERSION}-1
Architecture: $ARCH
Maintainer: edgecap developers <edgecap@localhost>
Installed-Size: $SIZE
Depends: python3.11, libc6 (>= 2.28), libstdc++6, libgcc-s1, espeak-ng, adduser
Recommends: alsa-utils, v4l-utils
Suggests: python3-gpiozero, rpicam-apps
Section: misc
Priority: optional
Description: offline image description that speaks, for blind and low-vision people
 edgecap describes photos and the camera view aloud, on the device, without a network.
 This package holds edgecap, its default model and a private Python environment in
 /opt/edgecap, the edgecap command, and edgecap-narrator.service (not enabled: run
 "systemctl enable --now edgecap-narrator" to narrate at boot).
EOF
mkdir -p "$WORK"
dpkg-deb --root-owner-group -Zzstd -z9 --build "$STAGE" "$DEB" >/dev/null
echo "build-deb: wrote $DEB ($(du -h "$DEB" | cut -f1), installed $((SIZE / 1024)) MiB)"
