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
# MINICPMO_CPU_VARIANTS=ON (default on x86-64 Linux): run-time dispatch, ggml's own mechanism (as
# llama.cpp's releases): every backend becomes a module (GGML_BACKEND_DL), the CPU one built once per
# instruction-set level (GGML_CPU_ALL_VARIANTS); core/backend_modules loads them at run time and ggml
# keeps the CPU module that scores best on the running CPU. Of ggml's 14 x86-64 levels we ship the 7
# in MINICPMO_SHIPPED_CPU_VARIANTS (minicpmo_trim_cpu_variants below), which halves the build.
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

if (MINICPMO_CPU_VARIANTS AND MINICPMO_NATIVE)
    # this machine's kernels were asked for: no run-time dispatch (a plain variable, so that turning
    # MINICPMO_NATIVE off again brings the cached default back)
    message(STATUS "minicpmo: MINICPMO_NATIVE=ON: no CPU variants")
    set(MINICPMO_CPU_VARIANTS OFF)
endif()
if (MINICPMO_CPU_VARIANTS AND NOT _minicpmo_is_x86)
    message(FATAL_ERROR "MINICPMO_CPU_VARIANTS=ON is built and tested for x86-64 only")
endif()
if (MINICPMO_CPU_VARIANTS)
    list(APPEND MINICPMO_GGML_CPU_OPTIONS "GGML_BACKEND_DL=ON" "GGML_CPU_ALL_VARIANTS=ON")
else()
    list(APPEND MINICPMO_GGML_CPU_OPTIONS "GGML_BACKEND_DL=OFF" "GGML_CPU_ALL_VARIANTS=OFF")
endif()

# The x86-64 levels shipped, each covering a family of CPUs that gains from it: x64 (any x86-64, the
# fallback), haswell (AVX2 + FMA: the portable floor), skylakex (AVX-512), cascadelake (+ VNNI:
# quantized dot products), icelake (+ VBMI), zen4 (+ BF16: AMD Zen 4/5 and Intel Sapphire Rapids and
# later), alderlake (AVX-VNNI laptops). Left out: sse42, sandybridge, ivybridge, piledriver (no
# AVX2, older than anything this project targets; x64 runs there), cannonlake and cooperlake (rare
# parts, served by skylakex and cascadelake), and sapphirerapids: its AMX matrix product dies with
# SIGILL at the first tile instruction (tilezero) on this project's Sapphire Rapids VMs for
# Q4_0/Q4_1/Q8_0/Q4_K weights; without it such CPUs load zen4.
set(MINICPMO_SHIPPED_CPU_VARIANTS x64 haswell skylakex cascadelake icelake zen4 alderlake)

# ggml makes its `ggml` target depend on every CPU variant it defines, so a variant cannot simply be
# left unbuilt. The unshipped ones get one empty source file instead of ggml-cpu's (seconds instead
# of a minute each) and are not installed; sets MINICPMO_UNSHIPPED_CPU_VARIANTS to their targets.
function(minicpmo_trim_cpu_variants backends)
    set(unshipped "")
    if (MINICPMO_CPU_VARIANTS)
        set(empty "${CMAKE_CURRENT_BINARY_DIR}/unshipped_cpu_variant.c")
        file(WRITE "${empty}" "/* a ggml CPU variant this project does not ship: built empty */\ntypedef int minicpmo_unshipped_cpu_variant;\n")
        foreach (backend ${backends})
            if (backend MATCHES "^ggml-cpu-(.+)$" AND TARGET ${backend})
                if (NOT CMAKE_MATCH_1 IN_LIST MINICPMO_SHIPPED_CPU_VARIANTS)
                    set_property(TARGET ${backend} PROPERTY SOURCES "${empty}")
                    list(APPEND unshipped ${backend})
                endif()
            endif()
        endforeach()
    endif()
    set(MINICPMO_UNSHIPPED_CPU_VARIANTS "${unshipped}" PARENT_SCOPE)
endfunction()

foreach (option ${MINICPMO_GGML_CPU_OPTIONS})
    string(REPLACE "=" ";" _kv "${option}")
    list(GET _kv 0 _name)
    list(GET _kv 1 _value)
    set(${_name} ${_value} CACHE BOOL "" FORCE)
endforeach()
string(REPLACE ";" " " _minicpmo_shown "${MINICPMO_GGML_CPU_OPTIONS}")
message(STATUS "minicpmo: ggml CPU kernels: ${_minicpmo_shown}")
