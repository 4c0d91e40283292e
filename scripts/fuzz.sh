#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ with clang (ASan + UBSan, in build/fuzz) and runs them.
#
#   bash scripts/fuzz.sh build                 # configure + build every target
#   bash scripts/fuzz.sh seeds                 # (re)generate the seed corpora (fuzz/make_seeds.py)
#   bash scripts/fuzz.sh run TARGET [SECONDS] [RUNS] [extra libFuzzer flags]   # one target
#   bash scripts/fuzz.sh all [SECONDS]         # build, seeds, then every target in turn
#
# A target's corpus grows in build/fuzz/corpus/TARGET; crashes land in build/fuzz/crashes/TARGET/.
# Copy a crasher into fuzz/crashers/TARGET/ (tests/test_fuzz_replay.py replays every file there
# through the same entry point in the normal build) before fixing it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/build_env.sh
BUILD=build/fuzz
TARGETS=(fuzz_utf8 fuzz_resample fuzz_image_preprocess fuzz_image_file fuzz_audio_file fuzz_omni_file fuzz_llm_gguf)
CLANG="${CLANG:-clang}"
CLANGXX="${CLANGXX:-clang++}"

build() {
    if ! command -v "$CLANGXX" >/dev/null; then
        echo "error: $CLANGXX not found; libFuzzer comes with clang (Debian: apt-get install clang)" >&2
        exit 1
    fi
    # -O1: fast to build and to run under ASan; the sanitizers cover ggml and libllama too; one set of
    # CPU kernels, linked in (the fuzz targets test our parsers, not ggml's run-time dispatch)
    cmake -S . -B "$BUILD" -G Ninja -DCMAKE_C_COMPILER="$CLANG" -DCMAKE_CXX_COMPILER="$CLANGXX" \
        -DCMAKE_BUILD_TYPE=Fuzz -DCMAKE_C_FLAGS_FUZZ="-O1 -g1" -DCMAKE_CXX_FLAGS_FUZZ="-O1 -g1" \
        -DMINICPMO_FUZZ=ON -DMINICPMO_SANITIZE=address,undefined -DMINICPMO_BUILD_PYTHON=OFF \
        -DMINICPMO_CPU_VARIANTS=OFF >/dev/null
    cmake --build "$BUILD" --target "${@:-fuzz_all}"
}

seeds() {
    python3 fuzz/make_seeds.py "$BUILD/corpus"
}

run() {
    local t="$1" secs="${2:-600}" runs="${3:--1}"
    shift $(($# < 3 ? $# : 3))
    mkdir -p "$BUILD/corpus/$t" "$BUILD/crashes/$t"
    local dict=()
    [ -f "fuzz/$t.dict" ] && dict=(-dict="fuzz/$t.dict")
    # -rss_limit_mb / -malloc_limit_mb: an input that makes the code under test allocate gigabytes is
    # reported (it would take a user's machine down too); -timeout: so is one that hangs
    ASAN_OPTIONS="${ASAN_OPTIONS:-allocator_may_return_null=1}" \
    "$BUILD/fuzz/$t" -max_total_time="$secs" -runs="$runs" -timeout=20 -rss_limit_mb=3072 -malloc_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$BUILD/crashes/$t/" "${dict[@]}" "$@" "$BUILD/corpus/$t"
}

case "${1:-all}" in
    build) shift; build "$@" ;;
    seeds) seeds ;;
    run) shift; run "$@" ;;
    all)
        build
        seeds
        for t in "${TARGETS[@]}"; do run "$t" "${2:-600}"; done ;;
    *) echo "usage: $0 build|seeds|run TARGET [SECONDS] [RUNS]|all [SECONDS]" >&2; exit 2 ;;
esac
