#!/usr/bin/env bash
# Installs MetaFormer Explorer and starts the app at http://127.0.0.1:7860 (`bash scripts/app.sh --port 8000`).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e .
exec python app.py "$@"
