#!/usr/bin/env bash
# make bench: data-path benchmarks in a lab (see BENCHMARKS.md). Root required.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then echo "make bench needs root (it runs a lab)" >&2; exit 1; fi
node --import tsx bench/run.ts
node --import tsx bench/control-scale.ts
