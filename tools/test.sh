#!/usr/bin/env bash
# Sets up a fresh machine and runs the whole test matrix: lint, then the test
# suite once per Keras backend, on two pytest workers (the tests of one file
# that share a module-scoped fixture share a worker). Usage: bash tools/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh test

ruff check .
ruff format --check .

for backend in tensorflow jax torch; do
  echo "=== KERAS_BACKEND=$backend"
  KERAS_BACKEND=$backend python -m pytest -q -p no:cacheprovider -p no:benchmark \
    -n "${TEST_WORKERS:-2}" --dist loadgroup "$@"
done
