#!/usr/bin/env bash
# One command for every GPU figure (full-size LLaVA-1.5-7B architecture, the wide SAE setting, the peers), on one
# GPU, in under 8 minutes, writing one JSON (default benchmarks/results-gpu.json). Not run yet: no GPU so far.
# nnsight must already be installed for its row (pip install -e ".[bench]"); without it the row is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python benchmarks/gpu.py --json "${1:-benchmarks/results-gpu.json}"
