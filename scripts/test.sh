#!/usr/bin/env bash
# Installs everything the tests need, checks lint and format, then runs the tests: `bash scripts/test.sh [pytest args]`.
# System packages (Debian): chromium for the browser tests, dataset-fashion-mnist for the training tests.
# Without root or apt they are skipped, and the tests that need them say so.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  if [ ! -x /usr/bin/chromium ] || [ ! -d /usr/share/datasets/fashion-mnist ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium dataset-fashion-mnist >/dev/null
  fi
fi
python -m pip install -q -e ".[test]"
ruff check .            # lint, then format: each fails the run (set -e) with one line per problem
ruff format --check .
exec python -m pytest "$@"
