#!/usr/bin/env bash
# Set up a development machine (Debian/Ubuntu, as root or with sudo): Mosquitto from Debian,
# a virtual environment in .venv, and the project with its server, dev and cluster extras.
set -euo pipefail
cd "$(dirname "$0")/../.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

packages=()
if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
    packages+=(mosquitto mosquitto-clients)
fi
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c "import ensurepip, venv" 2>/dev/null; then
    packages+=(python3-venv python3-pip)
fi
if [ ${#packages[@]} -gt 0 ]; then
    echo "setup: installing ${packages[*]} from Debian"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${packages[@]}" >/dev/null
fi
# Debian starts a system-wide broker on port 1883; the project never uses it (tests and the
# emulator start their own on free loopback ports), so it is left as the system has it.

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$PYTHON" -m venv .venv
fi
# cluster: Ray, for `blockfl emulate --ray` and its test (~45 s and ~270 MB the first time)
echo "setup: installing blockfl-edge[server,dev,cluster] into .venv"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[server,dev,cluster]"
