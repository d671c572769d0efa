#!/usr/bin/env bash
# Install the BlockFL Edge device SDK on a Raspberry Pi (64-bit Raspberry Pi OS / Debian arm64).
#
#   sudo bash install.sh [PACKAGE]          PACKAGE: a wheel file, or a pip requirement (default blockfl-edge)
#   bash install.sh --prefix DIR --no-system [PACKAGE]
#                                           only the virtual environment (no user, service or apt);
#                                           used to test the install in an emulated arm64 root
#
# It installs the device SDK alone from stock aarch64 wheels: numpy, onnxruntime, paho-mqtt, pynacl,
# phe, gmpy2, cbor2. No coordinator extras, no onnx, no torch.
set -euo pipefail

PREFIX=/opt/blockfl
SYSTEM=1
PACKAGE=blockfl-edge
PYTHON="${PYTHON:-python3}"
# BLOCKFL_EXEC: a command to run the venv's python with, e.g. "qemu-aarch64-static -L ROOT" when
# installing into an emulated arm64 root from another machine (tests do); empty on a real Pi
EXEC="${BLOCKFL_EXEC:-}"
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX="$2"; shift 2 ;;
        --no-system) SYSTEM=0; shift ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) PACKAGE="$1"; shift ;;
    esac
done
HERE="$(cd "$(dirname "$0")" && pwd)"

arch="$($PYTHON -c 'import platform; print(platform.machine())')"
if [ "$arch" != "aarch64" ] && [ "${BLOCKFL_ANY_ARCH:-0}" != 1 ]; then
    echo "install.sh: this is $arch. BlockFL Edge needs a 64-bit OS (aarch64): onnxruntime publishes no" >&2
    echo "32-bit ARM wheels. Install 64-bit Raspberry Pi OS (Bookworm or later) on a Pi 3, 4 or 5." >&2
    exit 1
fi

if [ "$SYSTEM" = 1 ]; then
    [ "$(id -u)" = 0 ] || { echo "install.sh: run as root (sudo), or use --no-system" >&2; exit 1; }
    $PYTHON -c "import venv, pip" 2>/dev/null || { apt-get update -qq; apt-get install -y -qq python3-venv python3-pip; }
    id blockfl >/dev/null 2>&1 || useradd --system --home-dir /var/lib/blockfl --shell /usr/sbin/nologin blockfl
    install -d -o root -g blockfl -m 0750 /etc/blockfl
    install -d -o blockfl -g blockfl -m 0700 /var/lib/blockfl
fi

echo "install.sh: virtual environment in $PREFIX"
# the system's pip (Debian's python3-pip) installs into the venv: no ensurepip child processes,
# which an emulated root cannot start
$PYTHON -m venv --without-pip --system-site-packages "$PREFIX"
$EXEC "$PREFIX/bin/python" -m pip install --disable-pip-version-check -q --only-binary=:all: --ignore-installed "$PACKAGE"
$EXEC "$PREFIX/bin/python" "$PREFIX/bin/blockfl-device" --help >/dev/null
for forbidden in onnx torch sklearn; do
    if $EXEC "$PREFIX/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$forbidden') is None)"; then
        echo "install.sh: $forbidden got installed; the device SDK must not need it" >&2
        exit 1
    fi
done

if [ "$SYSTEM" = 1 ]; then
    [ -f /etc/blockfl/device.toml ] || install -o root -g blockfl -m 0640 "$HERE/device.toml" /etc/blockfl/device.toml
    install -m 0644 "$HERE/blockfl-device.service" /etc/systemd/system/blockfl-device.service
    systemctl daemon-reload
    echo "install.sh: next: keys, enrolment and data (see deploy/raspberry-pi/README.md), then"
    echo "  systemctl enable --now blockfl-device"
fi
echo "install.sh: done: $PREFIX/bin/blockfl-device"
