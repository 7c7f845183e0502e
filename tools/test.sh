#!/usr/bin/env bash
# Sets up a fresh machine and runs the whole test matrix: lint, then the test
# suite once per Keras backend, on two pytest workers (TensorFlow's tests
# spread one by one, except those of a module-scoped fixture; the other
# backends' by file). Usage: bash tools/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh test

ruff check .
ruff format --check .

for backend in tensorflow jax torch; do
  echo "=== KERAS_BACKEND=$backend"
  # Measured: TensorFlow's traced steps balance best test by test; JAX and
  # torch gain more from a worker reusing what it compiled for a file.
  dist=loadfile
  if [ "$backend" = tensorflow ]; then dist=loadgroup; fi
  KERAS_BACKEND=$backend python -m pytest -q -p no:cacheprovider -p no:benchmark \
    -n "${TEST_WORKERS:-2}" --dist "$dist" "$@"
done
