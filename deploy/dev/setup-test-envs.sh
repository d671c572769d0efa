#!/usr/bin/env bash
# The two extra environments the test suite uses (run after setup.sh):
#   .venv-sdk  the device SDK alone (no onnx, torch or onnxruntime-training), as a Pi has it
#   .venv-ort  the official training API: onnxruntime-training-cpu 1.19.2 + onnx 1.16.2 + torch,
#              which replaces the stock onnxruntime and so cannot share an environment with it
#   qemu-user-static for the emulated Raspberry Pi test (tests/integration/test_arm64.py),
set -euo pipefail
cd "$(dirname "$0")/../.."
# and Debian's systemd (systemd-analyze verify) and openssl for the deployment tests
missing=()
command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v openssl >/dev/null || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    echo "setup: installing ${missing[*]} from Debian"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
PYTHON="${PYTHON:-python3}"
PIP_FLAGS=(-q --disable-pip-version-check)

if [ ! -f .venv-sdk/.complete ]; then
    echo "setup: creating .venv-sdk (device SDK only)"
    rm -rf .venv-sdk
    "$PYTHON" -m venv .venv-sdk
    .venv-sdk/bin/python -m pip install "${PIP_FLAGS[@]}" -e .
    touch .venv-sdk/.complete
fi

# torch==2.13.0 comes from the machine's local wheel here; elsewhere point TORCH_SPEC at a CPU build
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
if [ ! -f .venv-ort/.complete ]; then
    echo "setup: creating .venv-ort (official onnxruntime-training API, $TORCH_SPEC)"
    rm -rf .venv-ort
    "$PYTHON" -m venv .venv-ort
    .venv-ort/bin/python -m pip install "${PIP_FLAGS[@]}" onnxruntime-training-cpu==1.19.2 onnx==1.16.2 "$TORCH_SPEC" numpy
    touch .venv-ort/.complete
fi
