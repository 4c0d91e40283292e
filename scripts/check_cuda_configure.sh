#!/usr/bin/env bash
# Checks that the CUDA build configures on a machine with the CUDA toolkit (nvcc) but no GPU,
# driver or system cuBLAS: cuBLAS comes from its PyPI wheel, and the driver library is not linked
# (GGML_CUDA_NO_VMM). Configure only; building the CUDA backend takes ~40 min on 2 cores and
# belongs on a GPU machine. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/build_env.sh
wheel_dir="$MINICPMO_CACHE_DIR/cublas-wheel"
if [ ! -d "$wheel_dir/nvidia" ]; then
    python -m pip download --no-deps -d "$wheel_dir/dl" nvidia-cublas
    python -m zipfile -e "$wheel_dir"/dl/nvidia_cublas-*.whl "$wheel_dir"
fi
lib=$(dirname "$(find "$wheel_dir/nvidia" -name 'libcublas.so.*' | head -n 1)")
build=$(mktemp -d)
cmake -S . -B "$build" -G Ninja -DGGML_CUDA=ON -DGGML_CUDA_NO_VMM=ON \
    -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}" -DMINICPMO_BUILD_PYTHON=OFF \
    -DCUDA_cublas_LIBRARY="$(ls "$lib"/libcublas.so.*)" -DCUDA_cublasLt_LIBRARY="$(ls "$lib"/libcublasLt.so.*)"
grep -q "ggml-cuda" "$build/build.ninja" && echo "CUDA backend configured in $build"
