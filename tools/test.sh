#!/usr/bin/env bash
# Sets up a fresh machine and runs the whole test matrix: lint, then the test
# suite once per Keras backend. Usage: bash tools/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh test

ruff check .
ruff format --check .

for backend in tensorflow jax torch; do
  echo "=== KERAS_BACKEND=$backend"
  KERAS_BACKEND=$backend python -m pytest -q -p no:cacheprovider "$@"
done
