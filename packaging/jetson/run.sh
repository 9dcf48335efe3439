#!/bin/sh
# Start the edgecap container with the camera(s), the sound card and the GPU passed through,
# no network, the TensorRT engine cache on a named volume and the control socket on the host.
#   packaging/jetson/run.sh [edgecap arguments...]   (default: narrate --camera 0)
set -eu
IMAGE=${EDGECAP_IMAGE:-edgecap:jetson}
mkdir -p /run/edgecap
devices=""
for dev in /dev/video* /dev/media*; do
    [ -e "$dev" ] && devices="$devices --device $dev"
done
[ -n "$devices" ] || echo "edgecap: warning: no /dev/video* camera found" >&2
# Device files belong to the host's video/audio groups: join them by number.
groups=""
for group in video audio render; do
    gid=$(getent group "$group" | cut -d: -f3) && [ -n "$gid" ] && groups="$groups --group-add $gid"
done
# shellcheck disable=SC2086
exec docker run --rm --name edgecap-narrator --runtime nvidia --network none --read-only \
    --tmpfs /tmp --device /dev/snd $devices $groups \
    -v edgecap-engines:/var/cache/edgecap -v /run/edgecap:/run/edgecap \
    "$IMAGE" "$@"
