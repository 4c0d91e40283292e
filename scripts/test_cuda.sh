#!/usr/bin/env bash
# The CUDA variant: builds the package with ggml's CUDA backend for one GPU architecture with this
# machine's nvcc, in its own build folder and venv, then runs the suite in CUDA mode
# (MINICPMO_TEST_BACKEND=cuda) when a CUDA device is present. Not part of CI: the CUDA kernels take
# long to compile on 2 cores (README, "GPU backends").
#
#   CUDA_ARCH=90 bash scripts/test_cuda.sh            # H100; 89 = L4/RTX 40xx, 86 = RTX 30xx, 80 = A100
#   bash scripts/test_cuda.sh tests/test_backend_parity.py   # any pytest arguments
#
# Without nvidia-smi's answer CUDA_ARCH defaults to 90. cuBLAS comes from its PyPI wheel when the
# toolkit has none; the driver library is not linked at build time (GGML_CUDA_NO_VMM), so the build
# also runs on a machine without a GPU (then only the build is checked).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/build_env.sh
command -v nvcc >/dev/null 2>&1 || { echo "nvcc not found: install the CUDA toolkit" >&2; exit 1; }
if [ -z "${CUDA_ARCH:-}" ]; then
    CUDA_ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d '.' || true)
    CUDA_ARCH="${CUDA_ARCH:-90}"
fi
source scripts/backend_test_venv.sh "${MINICPMO_CUDA_VENV:-build/cuda/venv}"

CUBLAS_ARGS=()
if ! find "$(dirname "$(dirname "$(command -v nvcc)")")" -name 'libcublas.so*' 2>/dev/null | grep -q .; then
    wheel_dir="$MINICPMO_CACHE_DIR/cublas-wheel"
    if [ ! -d "$wheel_dir/nvidia" ]; then
        echo "== the toolkit has no cuBLAS: taking it from the nvidia-cublas wheel"
        "$PY" -m pip download -q --no-deps -d "$wheel_dir/dl" nvidia-cublas
        "$PY" -m zipfile -e "$wheel_dir"/dl/nvidia_cublas-*.whl "$wheel_dir"
    fi
    lib=$(dirname "$(find "$wheel_dir/nvidia" -name 'libcublas.so.*' | head -n 1)")
    inc=$(dirname "$(find "$wheel_dir/nvidia" -name 'cublas_v2.h' | head -n 1)")
    CUBLAS_ARGS=(-C cmake.define.CUDA_cublas_LIBRARY="$(ls "$lib"/libcublas.so.*)"
                 -C cmake.define.CUDA_cublasLt_LIBRARY="$(ls "$lib"/libcublasLt.so.*)"
                 -C cmake.define.CMAKE_CUDA_FLAGS="-I$inc")
    # The wheel's libraries are not on the loader's path: the import below and the suite need them.
    export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

mkdir -p build/cuda
echo "== building with GGML_CUDA=ON for sm_$CUDA_ARCH ($(nvcc --version | tail -n 1); build/cuda/cmake)"
start=$(date +%s)
CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" "$PY" -m pip install --no-build-isolation \
    --progress-bar off -v ".[test]" -C build-dir=build/cuda/cmake -C cmake.define.GGML_CUDA=ON \
    -C cmake.define.GGML_CUDA_NO_VMM=ON -C cmake.define.CMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH" "${CUBLAS_ARGS[@]}" \
    > >(tee build/cuda/build.log | grep --line-buffered -E '^ *\[[0-9]+/[0-9]+\]') 2>&1
echo "== CUDA build: $(( $(date +%s) - start )) s"
devices=$("$PY" -c 'import minicpmo_cpp as m; print(" ".join(m.device_names()))' 2>&1 || true)
echo "== devices of this build: $devices"
case " $devices " in
    *" CUDA0 "*) ;;
    *) echo "== no CUDA device here: the build is checked, the suite needs a GPU"; exit 0 ;;
esac
export MINICPMO_TEST_BACKEND=cuda
ARGS=("$@")
[ ${#ARGS[@]} -gt 0 ] || ARGS=(tests)
"$PY" -m pytest -q -p no:cacheprovider "${ARGS[@]}"
