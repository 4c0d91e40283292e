#!/usr/bin/env bash
# Builds the package with AddressSanitizer + UndefinedBehaviorSanitizer (our code, libllama and ggml
# alike: CMake option MINICPMO_SANITIZE) in its own build folder and venv, and runs the tests that
# need no torch under it.
#
#   bash scripts/test_sanitized.sh                 # the whole non-torch suite (long: see README)
#   bash scripts/test_sanitized.sh --ci            # the CI subset: loaders, media, bad inputs, fuzz replay
#   bash scripts/test_sanitized.sh tests/test_media.py -x   # any pytest arguments
#
# Build folder build/sanitize/cmake, venv build/sanitize/venv (override with MINICPMO_SANITIZE_VENV).
# Pytest arguments given here replace the default "tests -m 'not torch'"; a -m given here is combined
# with "not torch".
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/build_env.sh
SANITIZERS="${MINICPMO_SANITIZE:-address,undefined}"
VENV="${MINICPMO_SANITIZE_VENV:-build/sanitize/venv}"
PYTHON3="${PYTHON3:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating the sanitizer venv $VENV"
    "$PYTHON3" -m venv "$VENV"
fi
PY="$VENV/bin/python"
echo "== installing build and test requirements into $VENV (no torch: the torch tests are not run here)"
"$PY" -m pip install -q --progress-bar off "scikit-build-core>=0.10" "pybind11>=2.12" \
    "pytest>=7.3" "jinja2>=3" "safetensors>=0.4" "onnx>=1.14" "onnxruntime>=1.16" "kaldi-native-fbank>=1.18"

mkdir -p build/sanitize
echo "== building with -fsanitize=$SANITIZERS (build/sanitize/cmake; a cold llama.cpp build takes a while)"
# one set of ggml CPU kernels (the portable one) and no oneDNN: the subset checks our code (and, for
# tests/test_bf16_compute.py, the refusal of MINICPMO_COMPUTE=bf16 without oneDNN)
# -v so ninja's [n/N] progress shows; the compile lines go to build/sanitize/build.log
CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" "$PY" -m pip install --no-build-isolation \
    --progress-bar off -v . -C build-dir=build/sanitize/cmake \
    -C cmake.define.MINICPMO_SANITIZE="$SANITIZERS" -C cmake.define.MINICPMO_CPU_VARIANTS=OFF -C cmake.define.MINICPMO_ONEDNN=OFF > >(tee build/sanitize/build.log | grep --line-buffered -E '^ *\[[0-9]+/[0-9]+\]') 2>&1

# Python itself is not built with ASan, so the ASan runtime must be loaded before anything else
# (it replaces malloc): preload the runtime our libraries were linked with.
CORE_SO="$("$PY" -c 'import importlib.util as u, os; print(os.path.join(os.path.dirname(u.find_spec("minicpmo_cpp").origin), "libminicpmo.so"))')"
ASAN_LIB="$(ldd "$CORE_SO" | awk '/libasan|libclang_rt.asan/ {print $3; exit}')"
if [ -z "$ASAN_LIB" ]; then
    echo "error: $CORE_SO is not linked with an ASan runtime (was it built with -fsanitize=address?)" >&2
    exit 1
fi
# libstdc++ too: ASan's __cxa_throw interceptor looks the real one up when it starts, and python
# itself does not load libstdc++ (without it the first C++ exception stops with "CHECK failed:
# asan_interceptors.cpp ... real___cxa_throw")
STDCXX_LIB="$(ldd "$CORE_SO" | awk '/libstdc\+\+/ {print $3; exit}')"
export LD_PRELOAD="$ASAN_LIB${STDCXX_LIB:+ $STDCXX_LIB}"
# detect_leaks=0: LeakSanitizer runs at exit and would report every object CPython, numpy and
# onnxruntime deliberately leave allocated for the life of the process (interned strings, module
# state, arenas): thousands of reports not ours, and a failing exit status for every test process.
# Our own leaks are caught by the standalone sanitized executables (see the leak check below).
# allocator_may_return_null=1: a huge allocation fails as std::bad_alloc (what the tests expect of
# an unsanitized build) instead of ASan's own abort.
export ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:abort_on_error=0:halt_on_error=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
echo "== LD_PRELOAD=$LD_PRELOAD"

MARK="not torch"
ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --ci) ARGS+=(tests/test_bad_inputs.py tests/test_media.py tests/test_audio_input.py tests/test_fuzz_replay.py
                     tests/test_bf16_compute.py tests/test_cpu_kernels.py tests/test_q8_packed.py tests/test_tts_attention.py
                     tests/test_conv1d_node.py); shift ;;
        -m) MARK="not torch and ($2)"; shift 2 ;;
        *) ARGS+=("$1"); shift ;;
    esac
done
[ ${#ARGS[@]} -eq 0 ] && ARGS=(tests)
echo "== pytest -m \"$MARK\" ${ARGS[*]}"
# -p no:cacheprovider: the sanitizer venv's runs leave the normal venv's pytest cache alone
"$PY" -m pytest -q -p no:cacheprovider -m "$MARK" "${ARGS[@]}"
