#!/usr/bin/env bash
# Set up (see setup.sh) and run the main job: a whole federation on this machine, into out/demo
# (report.json, summary.md, PNG plots, every miner's chain database). Extra arguments go to
# `blockfl emulate` (try --devices 20 --miners 4 --rounds 10 --partition dirichlet:0.5).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/dev/setup.sh
OUT="${OUT:-out/demo}"
rm -rf "$OUT"
.venv/bin/blockfl emulate --out "$OUT" "$@"
echo "summary:"
cat "$OUT/summary.md"
