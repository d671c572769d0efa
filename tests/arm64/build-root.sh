#!/usr/bin/env bash
# Build (or reuse) an emulated Raspberry Pi 4 userland: Debian bookworm arm64 packages for Python
# 3.11 unpacked with dpkg -x, a fake /proc/cpuinfo and /sys CPU topology (four Cortex-A72 cores;
# onnxruntime's CPU probe would otherwise read the x86 host's and crash), then the device SDK
# installed into a venv with deploy/raspberry-pi/install.sh, run under qemu-aarch64-static.
#
#   bash tests/arm64/build-root.sh CACHE_DIR PROJECT_WHEEL
#
# CACHE_DIR/root and CACHE_DIR/venv are reused; when only the project changed, just its wheel is
# reinstalled. Prints the time each stage took.
set -euo pipefail
CACHE="$1"; WHEEL="$2"
HERE="$(cd "$(dirname "$0")/../.." && pwd)"
QEMU="$(command -v qemu-aarch64-static || true)"
[ -n "$QEMU" ] || { echo "build-root: qemu-aarch64-static is missing (apt-get install -y qemu-user-static)" >&2; exit 1; }
ROOT="$CACHE/root"; VENV="$CACHE/venv"
EXEC="$QEMU -cpu cortex-a72 -L $ROOT"
mkdir -p "$CACHE"
start=$SECONDS

if [ ! -f "$ROOT/.complete" ]; then
    apt_dir="$CACHE/apt"; mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$CACHE/debs"
    opts=(-oAPT::Architecture=arm64 -oAPT::Architectures=arm64 "-oDir::State::Lists=$apt_dir/lists" "-oDir::Cache=$apt_dir/cache"
          -oDir::State::Status=/dev/null -oDebug::NoLocking=1)
    apt-get "${opts[@]}" update -qq
    packages=$(apt-cache "${opts[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
               --no-enhances python3.11 python3.11-venv python3-pip libstdc++6 libgcc-s1 libgomp1 | grep '^\w' | grep -v ':' | sort -u)
    (cd "$CACHE/debs" && apt-get "${opts[@]}" download $packages 2>/dev/null)
    rm -rf "$ROOT"; mkdir -p "$ROOT"
    for deb in "$CACHE"/debs/*.deb; do dpkg -x "$deb" "$ROOT"; done
    mkdir -p "$ROOT/proc" "$ROOT/sys/devices/system/cpu"
    : > "$ROOT/proc/cpuinfo"
    for i in 0 1 2 3; do
        mkdir -p "$ROOT/sys/devices/system/cpu/cpu$i"
        printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n' $i >> "$ROOT/proc/cpuinfo"
    done
    for f in possible present online; do echo 0-3 > "$ROOT/sys/devices/system/cpu/$f"; done
    touch "$ROOT/.complete"
    echo "build-root: arm64 root ($(ls "$CACHE"/debs | wc -l) packages) in $((SECONDS - start)) s"
fi

# what the installed venv depends on: the package sources and the installer (wheel bytes vary per build)
stamp=$(cd "$HERE" && find edge_sdk coordinator -name '*.py' | sort | xargs sha256sum | cat - pyproject.toml deploy/raspberry-pi/install.sh | sha256sum | cut -c1-16)
if [ ! -f "$VENV/.complete" ]; then
    t=$SECONDS
    rm -rf "$VENV"
    PYTHON="$EXEC $ROOT/usr/bin/python3.11" BLOCKFL_EXEC="$EXEC" bash "$HERE/deploy/raspberry-pi/install.sh" --prefix "$VENV" --no-system "$WHEEL"
    echo "$stamp" > "$VENV/.complete"
    echo "build-root: install.sh into the emulated root in $((SECONDS - t)) s"
elif [ "$(cat "$VENV/.complete")" != "$stamp" ]; then
    t=$SECONDS
    $EXEC "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --force-reinstall "$WHEEL"
    echo "$stamp" > "$VENV/.complete"
    echo "build-root: reinstalled the project wheel in $((SECONDS - t)) s"
fi
$EXEC "$VENV/bin/python" "$VENV/bin/blockfl-device" --help > /dev/null
echo "build-root: ready in $((SECONDS - start)) s: $VENV"
