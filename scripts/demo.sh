#!/usr/bin/env bash
# The main job on a small model, as README.md shows it: install, make the tiny random-weight
# MiniCPM-o checkpoint, convert it like a user would, quantize it, and chat with it from the CLI
# (text, then about an image, then about an audio: random weights, so the replies are gibberish).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/build_env.sh
python -m pip install --progress-bar off .
work="${1:-/tmp/minicpmo-demo}"
python -m minicpmo_cpp.convert.make_tiny "$work/hf"
minicpmo-convert "$work/hf" -o "$work/gguf" --outtype f16
minicpmo-quantize "$work/gguf/MiniCPM-o-4_5-F16.gguf" Q8_0 --quiet
minicpmo-cli -m "$work/gguf/MiniCPM-o-4_5-Q8_0.gguf" -p "Hello! Who are you?" -n 24 --temp 0
python - "$work/picture.png" <<'PY'
import sys
import numpy as np
from PIL import Image
y, x = np.mgrid[0:480, 0:640]
Image.fromarray(np.stack([x * 255 // 639, y * 255 // 479, (x + y) % 256], -1).astype(np.uint8)).save(sys.argv[1])
PY
minicpmo-cli -m "$work/gguf/MiniCPM-o-4_5-Q8_0.gguf" --image "$work/picture.png" -p "What is in this picture?" -n 24 --temp 0
python - "$work/question.wav" <<'PY'
import sys
import numpy as np
import soundfile as sf
t = np.arange(2 * 44100) / 44100  # 2 s at 44.1 kHz stereo: the CLI mixes and resamples to 16 kHz mono
tone = 0.2 * np.sin(2 * np.pi * (180 + 40 * np.sin(2 * np.pi * t)) * t)
sf.write(sys.argv[1], np.stack([tone, 0.5 * tone], -1).astype(np.float32), 44100)
PY
minicpmo-cli -m "$work/gguf/MiniCPM-o-4_5-Q8_0.gguf" --audio "$work/question.wav" \
    -p "Please listen to the audio snippet carefully and transcribe the content." -n 24 --temp 0
