#!/usr/bin/env bash
# The main job on a small model, as README.md shows it: install, make the tiny random-weight
# MiniCPM-o checkpoint, convert it like a user would, quantize it, and chat with it from the CLI
# (text, then about an image, then about an audio: random weights, so the replies are gibberish;
# each is capped at 32 tokens so the whole demo takes seconds once the package is built).
# Usage: bash scripts/demo.sh [WORK_DIR]   (default /tmp/minicpmo-demo)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prepare_env.sh     # prerequisites, compiler cache, the virtual environment (.venv/)
work="${1:-/tmp/minicpmo-demo}"
model="$work/gguf/MiniCPM-o-4_5-Q8_0.gguf"
step() { echo; echo "== demo $1"; }

step "1/7: pip install . (builds llama.cpp and minicpmo-cpp; the first time takes minutes)"
minicpmo_pip_install .

step "2/7: a tiny random-weight MiniCPM-o checkpoint in Hugging Face layout -> $work/hf"
python -m minicpmo_cpp.convert.make_tiny "$work/hf"

step "3/7: minicpmo-convert (Hugging Face -> LLM GGUF + omni companion, F16) -> $work/gguf"
minicpmo-convert "$work/hf" -o "$work/gguf" --outtype f16 --quiet

step "4/7: minicpmo-quantize F16 -> Q8_0"
minicpmo-quantize "$work/gguf/MiniCPM-o-4_5-F16.gguf" Q8_0 --quiet

step "5/7: minicpmo-cli, text chat"
minicpmo-cli -m "$model" -p "Hello! Who are you?" -n 32 --temp 0

step "6/7: minicpmo-cli, a question about an image ($work/picture.png, 640x480)"
python - "$work/picture.png" <<'PY'
import sys
import numpy as np
from PIL import Image
y, x = np.mgrid[0:480, 0:640]
Image.fromarray(np.stack([x * 255 // 639, y * 255 // 479, (x + y) % 256], -1).astype(np.uint8)).save(sys.argv[1])
PY
minicpmo-cli -m "$model" --image "$work/picture.png" -p "What is in this picture?" -n 32 --temp 0

step "7/7: minicpmo-cli, transcribing an audio ($work/question.wav, 2 s stereo at 44.1 kHz)"
python - "$work/question.wav" <<'PY'
import sys
import numpy as np
import soundfile as sf
t = np.arange(2 * 44100) / 44100  # 2 s at 44.1 kHz stereo: the CLI mixes and resamples to 16 kHz mono
tone = 0.2 * np.sin(2 * np.pi * (180 + 40 * np.sin(2 * np.pi * t)) * t)
sf.write(sys.argv[1], np.stack([tone, 0.5 * tone], -1).astype(np.float32), 44100)
PY
minicpmo-cli -m "$model" --audio "$work/question.wav" \
    -p "Please listen to the audio snippet carefully and transcribe the content." -n 32 --temp 0

echo
echo "demo OK: built and installed minicpmo-cpp in $VIRTUAL_ENV, made, converted and quantized the tiny" \
     "model ($model), and chatted with it from the CLI about text, an image and an audio" \
     "(random weights: the replies are gibberish). Next: source $VIRTUAL_ENV/bin/activate"
