# Which instruction sets ggml's CPU kernels are compiled for.
#
# MINICPMO_NATIVE=OFF (default): ggml's portable x86 set (SSE4.2, AVX, AVX2, FMA, F16C, BMI2), safe to
# copy to any x86-64 machine from about 2015 on.
# MINICPMO_NATIVE=ON: the instruction sets of the machine that builds. On x86-64 Linux they are read
# from /proc/cpuinfo and passed to ggml as explicit switches (GGML_AVX512, GGML_AVX512_BF16, ...)
# rather than -march=native, so that a shared ccache keys objects by the features they were compiled
# for. AMX stays off: its tile state must be enabled by the kernel or hypervisor, and on virtual
# machines that list the amx flags without it the first tile instruction faults (SIGILL, measured).
# Elsewhere (ARM, macOS) ON means ggml's own GGML_NATIVE.
# MINICPMO_CPU_VARIANTS=ON: run-time dispatch, ggml's own mechanism (as llama.cpp's releases): every
# backend becomes a module (GGML_BACKEND_DL), the CPU one built once per instruction-set level
# (GGML_CPU_ALL_VARIANTS: 14 on x86-64, from plain x86-64 to AVX-512 BF16 + AMX; the AMX one is not
# installed, see CMakeLists.txt); core/backend_modules loads them at run time and ggml keeps the CPU
# module that scores best on the running CPU.
#
# Sets MINICPMO_GGML_CPU_OPTIONS: the NAME=ON/OFF switches chosen (recorded in build_info.py, so the
# benchmarks build upstream llama.cpp with the same kernels).

set(_minicpmo_x86_features GGML_SSE42 GGML_AVX GGML_AVX2 GGML_FMA GGML_F16C GGML_BMI2 GGML_AVX_VNNI
    GGML_AVX512 GGML_AVX512_VBMI GGML_AVX512_VNNI GGML_AVX512_BF16 GGML_AMX_TILE GGML_AMX_INT8 GGML_AMX_BF16)
# the /proc/cpuinfo flags each switch needs (all of them); AMX has none: never switched on
set(_minicpmo_needs_GGML_SSE42 sse4_2)
set(_minicpmo_needs_GGML_AVX avx)
set(_minicpmo_needs_GGML_AVX2 avx2)
set(_minicpmo_needs_GGML_FMA fma)
set(_minicpmo_needs_GGML_F16C f16c)
set(_minicpmo_needs_GGML_BMI2 bmi2)
set(_minicpmo_needs_GGML_AVX_VNNI avx_vnni)
set(_minicpmo_needs_GGML_AVX512 avx512f avx512cd avx512vl avx512dq avx512bw)
set(_minicpmo_needs_GGML_AVX512_VBMI avx512f avx512vbmi)
set(_minicpmo_needs_GGML_AVX512_VNNI avx512f avx512_vnni)
set(_minicpmo_needs_GGML_AVX512_BF16 avx512f avx512_bf16)
# ggml's defaults without GGML_NATIVE
set(_minicpmo_portable_on GGML_SSE42 GGML_AVX GGML_AVX2 GGML_FMA GGML_F16C GGML_BMI2)

set(MINICPMO_GGML_CPU_OPTIONS "")
set(_minicpmo_is_x86 OFF)
if (CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64|x86|i[3-6]86)$")
    set(_minicpmo_is_x86 ON)
endif()

if (MINICPMO_NATIVE AND _minicpmo_is_x86 AND CMAKE_SYSTEM_NAME STREQUAL "Linux" AND NOT CMAKE_CROSSCOMPILING
        AND EXISTS "/proc/cpuinfo")
    file(STRINGS "/proc/cpuinfo" _minicpmo_flags REGEX "^flags[ \t]*:" LIMIT_COUNT 1)
    string(REGEX REPLACE "^flags[ \t]*:" "" _minicpmo_flags "${_minicpmo_flags}")
    set(_minicpmo_flags " ${_minicpmo_flags} ")
    list(APPEND MINICPMO_GGML_CPU_OPTIONS "GGML_NATIVE=OFF")
    foreach (feature ${_minicpmo_x86_features})
        set(_on OFF)
        if (DEFINED _minicpmo_needs_${feature})
            set(_on ON)
            foreach (flag ${_minicpmo_needs_${feature}})
                if (NOT _minicpmo_flags MATCHES " ${flag} ")
                    set(_on OFF)
                endif()
            endforeach()
        endif()
        list(APPEND MINICPMO_GGML_CPU_OPTIONS "${feature}=${_on}")
    endforeach()
elseif (MINICPMO_NATIVE)
    list(APPEND MINICPMO_GGML_CPU_OPTIONS "GGML_NATIVE=ON")
else()
    list(APPEND MINICPMO_GGML_CPU_OPTIONS "GGML_NATIVE=OFF")
    if (_minicpmo_is_x86)
        foreach (feature ${_minicpmo_x86_features})
            if (feature IN_LIST _minicpmo_portable_on)
                list(APPEND MINICPMO_GGML_CPU_OPTIONS "${feature}=ON")
            else()
                list(APPEND MINICPMO_GGML_CPU_OPTIONS "${feature}=OFF")
            endif()
        endforeach()
    endif()
endif()

if (MINICPMO_CPU_VARIANTS)
    if (MINICPMO_NATIVE)
        message(FATAL_ERROR "MINICPMO_CPU_VARIANTS and MINICPMO_NATIVE exclude each other: run-time dispatch or this machine's kernels")
    endif()
    list(APPEND MINICPMO_GGML_CPU_OPTIONS "GGML_BACKEND_DL=ON" "GGML_CPU_ALL_VARIANTS=ON")
endif()

foreach (option ${MINICPMO_GGML_CPU_OPTIONS})
    string(REPLACE "=" ";" _kv "${option}")
    list(GET _kv 0 _name)
    list(GET _kv 1 _value)
    set(${_name} ${_value} CACHE BOOL "" FORCE)
endforeach()
string(REPLACE ";" " " _minicpmo_shown "${MINICPMO_GGML_CPU_OPTIONS}")
message(STATUS "minicpmo: ggml CPU kernels: ${_minicpmo_shown}")
