#!/usr/bin/env bash
# Set up (see setup.sh) and run the main job into out/demo.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/dev/setup.sh
OUT="${OUT:-out/demo}"
mkdir -p "$OUT"
rm -f "$OUT/chain.db" "$OUT/chain.db-wal" "$OUT/chain.db-shm"
# Until the federation (`blockfl emulate`) lands: a synthetic chain with real keys, signatures,
# proof-of-work and SQLite, then an independent re-validation of it from genesis.
.venv/bin/blockfl chain demo "$OUT/chain.db" --blocks 20 --devices 4
.venv/bin/blockfl chain verify "$OUT/chain.db"
