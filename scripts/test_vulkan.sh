#!/usr/bin/env bash
# The suite in Vulkan mode: builds the package with ggml's Vulkan backend (GGML_VULKAN=ON) in its own
# build folder and venv, and runs the tests with MINICPMO_TEST_BACKEND=vulkan, so that every session
# and component computes on the Vulkan device. On a machine without a GPU the device is Mesa's
# software driver lavapipe (scripts/vulkan_env.sh installs it, and the build's prerequisites, from
# Debian's packages when run as root, and says so).
#
#   bash scripts/test_vulkan.sh                  # every stage's tests on Vulkan (CI), then the F16 parity check
#   bash scripts/test_vulkan.sh tests            # the whole suite on Vulkan
#   bash scripts/test_vulkan.sh tests/test_backend_parity.py -x   # any pytest arguments
#
# Build folder build/vulkan/cmake, venv build/vulkan/venv (override with MINICPMO_VULKAN_VENV). The
# compiled pipelines persist in $MINICPMO_CACHE_DIR/mesa-shader-cache: the first run compiles each
# shader pipeline on the CPU (minutes on 2 cores), later runs load them.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/vulkan_env.sh
source scripts/backend_test_venv.sh "${MINICPMO_VULKAN_VENV:-build/vulkan/venv}"

mkdir -p build/vulkan
echo "== building with GGML_VULKAN=ON against the Vulkan headers in $MINICPMO_VULKAN_HEADERS (build/vulkan/cmake)"
start=$(date +%s)
CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" "$PY" -m pip install --no-build-isolation \
    --progress-bar off -v ".[test]" -C build-dir=build/vulkan/cmake -C cmake.define.GGML_VULKAN=ON \
    -C cmake.define.Vulkan_INCLUDE_DIR="$MINICPMO_VULKAN_HEADERS" \
    > >(tee build/vulkan/build.log | grep --line-buffered -E '^ *\[[0-9]+/[0-9]+\]') 2>&1
echo "== Vulkan build: $(( $(date +%s) - start )) s"
"$PY" -c 'import minicpmo_cpp as m; print("== devices of this build:", ", ".join(m.device_names()))'

export MINICPMO_TEST_BACKEND=vulkan
ARGS=("$@")
# Default (CI): every stage (LLM, vision, audio, TTS, flow, HiFT, whole spoken replies) against the CPU,
# voice cloning (both voice encoders on the device) against onnxruntime,
# and the LLM, vision, audio, flow and HiFT against the float64 references. Each new graph shape
# compiles shader pipelines on the CPU the first time (lavapipe: about 25 min for these files with an
# empty shader cache, about 3 min warm), which is what bounds this list. `tests`, the whole suite,
# passes on Vulkan too (1050 tests, 29 min warm on 2 cores: README, "GPU backends").
STAGES=(tests/test_backend_parity.py tests/test_llm_logits.py tests/test_vision_encoder.py tests/test_audio_encoder.py
        tests/test_flow_runtime.py tests/test_hift_runtime.py tests/test_voice_clone.py)
[ ${#ARGS[@]} -gt 0 ] || ARGS=("${STAGES[@]}")
# Two precisions (tests/backend.py has the tolerances and why): the suite with F32 shaders
# (GGML_VK_DISABLE_F16), whose results the tests bound tightly, then every stage against the CPU with
# the F16 shaders users get by default.
echo "== the suite on Vulkan, F32 shaders (GGML_VK_DISABLE_F16=1): ${ARGS[*]}"
GGML_VK_DISABLE_F16=1 "$PY" -m pytest -q -p no:cacheprovider "${ARGS[@]}"
echo "== every stage on Vulkan with F16 shaders (ggml's default) against the CPU"
(unset GGML_VK_DISABLE_F16; "$PY" -m pytest -q -p no:cacheprovider tests/test_backend_parity.py)
