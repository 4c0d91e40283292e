#!/usr/bin/env bash
# The test command of README.md: installs the package with its test extras and runs the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/build_env.sh
python -m pip install --progress-bar off "torch==2.13.0"
python -m pip install --progress-bar off ".[test]"
python -m pytest -q tests "$@"
