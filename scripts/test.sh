#!/usr/bin/env bash
# The test command of README.md: installs the package with its test extras into the virtual
# environment (.venv/, see scripts/prepare_env.sh) and runs the suite. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# pkg-config: tests build C programs with it; chromium: the browser page's tests (tests/test_browser.py);
# oneDNN: the BF16 matrix products (MINICPMO_COMPUTE=bf16), whose tests need a build that has them
MINICPMO_EXTRA_PREREQS="pkg-config:pkg-config chromium:chromium" MINICPMO_EXTRA_FILES="/usr/include/dnnl.hpp:libdnnl-dev" \
    source scripts/prepare_env.sh
python -m pip install --progress-bar off "torch==2.13.0"
# Oracle for tests/test_token2wav_reference_vs_stepaudio2.py: the official Token2Wav code (package
# stepaudio2). --no-deps because minicpmo-utils pins pillow==10.4.0, librosa, moviepy, decord, ...
# (this project runs Pillow 13); the flow and HiFT classes the test builds import
# only torch, numpy, scipy and einops (tests/stepaudio2_oracle.py keeps its voice-prompt imports
# -- torchaudio, onnxruntime, s3tokenizer -- from running).
python -m pip install --progress-bar off --no-deps "minicpmo-utils==1.0.7"
python -m pip install --progress-bar off "einops==0.8.1" "scipy>=1.10"
# Independent PyTorch implementations of the two voice encoders the runtime ports (tests export them to
# ONNX with random weights): PyPI s3tokenizer's S3TokenizerV2 and FunASR's CAMPPlus. --no-deps because
# their package imports pull torchaudio / modelscope / hydra / ...; the model files the tests load
# import only torch, numpy and einops (tests/s3tokenizer_export.py, tests/campplus_reference.py).
python -m pip install --progress-bar off --no-deps "s3tokenizer==0.3.0" "funasr==1.4.16"
minicpmo_pip_install ".[test]"
python -m pytest -q tests "$@"
