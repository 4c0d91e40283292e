# oneDNN for core/onednn_matmul (BF16 / AMX matrix products of the encoders). The library is the
# system's (Debian: libdnnl-dev, oneDNN 2.x with its OpenMP runtime, the same libgomp ggml uses).
# MINICPMO_ONEDNN: AUTO uses it when found, ON requires it, OFF leaves it out. Sets
# MINICPMO_ONEDNN_FOUND (ON/OFF) for build_info.py.
function(minicpmo_use_onednn target source llama_cpp_dir)
    set(found OFF)
    if (NOT MINICPMO_ONEDNN STREQUAL "OFF")
        find_path(MINICPMO_DNNL_INCLUDE_DIR dnnl.hpp)
        find_library(MINICPMO_DNNL_LIBRARY dnnl)
        find_package(OpenMP COMPONENTS CXX)
        if (MINICPMO_DNNL_INCLUDE_DIR AND MINICPMO_DNNL_LIBRARY AND OpenMP_CXX_FOUND)
            set(found ON)
        elseif (MINICPMO_ONEDNN STREQUAL "ON")
            message(FATAL_ERROR "MINICPMO_ONEDNN=ON: oneDNN (dnnl.hpp, libdnnl) or OpenMP not found "
                                "(Debian: apt-get install libdnnl-dev)")
        endif()
    endif()
    if (found)
        target_compile_definitions(${target} PRIVATE MINICPMO_ONEDNN)
        target_include_directories(${target} PRIVATE ${MINICPMO_DNNL_INCLUDE_DIR})
        target_link_libraries(${target} PRIVATE ${MINICPMO_DNNL_LIBRARY} OpenMP::OpenMP_CXX)
        # a backend fills in ggml's backend and device interfaces: their definitions are ggml-internal
        set_property(SOURCE ${source} APPEND PROPERTY INCLUDE_DIRECTORIES "${llama_cpp_dir}/ggml/src")
        message(STATUS "minicpmo: oneDNN BF16 matrix products: ${MINICPMO_DNNL_LIBRARY}")
    else()
        message(STATUS "minicpmo: no oneDNN (MINICPMO_ONEDNN=${MINICPMO_ONEDNN}): MINICPMO_COMPUTE=bf16 unavailable")
    endif()
    set(MINICPMO_ONEDNN_FOUND ${found} PARENT_SCOPE)
endfunction()
