#!/usr/bin/env bash
# The main job on a small model, as README.md shows it: install, make the tiny random-weight
# MiniCPM-o checkpoint, convert it like a user would, quantize it, and chat with it from the CLI.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/build_env.sh
python -m pip install --progress-bar off .
work="${1:-/tmp/minicpmo-demo}"
python -m minicpmo_cpp.convert.make_tiny "$work/hf"
minicpmo-convert "$work/hf" -o "$work/gguf" --outtype f16
minicpmo-quantize "$work/gguf/MiniCPM-o-4_5-F16.gguf" Q8_0 --quiet
minicpmo-cli -m "$work/gguf/MiniCPM-o-4_5-Q8_0.gguf" -p "Hello! Who are you?" -n 24 --temp 0
