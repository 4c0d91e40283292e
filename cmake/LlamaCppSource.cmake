# Locates the llama.cpp source tree we build against, without committing it to this repo.
# Order: -DMINICPMO_LLAMA_CPP_DIR / env MINICPMO_LLAMA_CPP_DIR, else the vendor/llama.cpp tree of the
# pinned llama-cpp-python sdist, downloaded once into a cache dir and checksum-verified.

set(MINICPMO_SDIST_NAME "llama_cpp_python-0.3.36")
set(MINICPMO_SDIST_URL
    "https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/llama_cpp_python-0.3.36.tar.gz")
set(MINICPMO_SDIST_SHA256 "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e")

function(minicpmo_find_llama_cpp out_var)
    set(dir "${MINICPMO_LLAMA_CPP_DIR}")
    if (NOT dir AND DEFINED ENV{MINICPMO_LLAMA_CPP_DIR})
        set(dir "$ENV{MINICPMO_LLAMA_CPP_DIR}")
    endif()
    if (dir)
        if (NOT EXISTS "${dir}/include/llama.h" OR NOT EXISTS "${dir}/ggml/CMakeLists.txt")
            message(FATAL_ERROR "MINICPMO_LLAMA_CPP_DIR='${dir}' is not a llama.cpp source tree "
                                "(include/llama.h or ggml/CMakeLists.txt missing)")
        endif()
        set(${out_var} "${dir}" PARENT_SCOPE)
        return()
    endif()

    set(cache "${MINICPMO_CACHE_DIR}")
    if (NOT cache AND DEFINED ENV{MINICPMO_CACHE_DIR})
        set(cache "$ENV{MINICPMO_CACHE_DIR}")
    endif()
    if (NOT cache)
        if (DEFINED ENV{XDG_CACHE_HOME})
            set(cache "$ENV{XDG_CACHE_HOME}/minicpmo-cpp")
        else()
            set(cache "$ENV{HOME}/.cache/minicpmo-cpp")
        endif()
    endif()

    set(tree "${cache}/${MINICPMO_SDIST_NAME}/vendor/llama.cpp")
    set(stamp "${cache}/${MINICPMO_SDIST_NAME}.extracted")
    if (EXISTS "${stamp}" AND EXISTS "${tree}/include/llama.h")
        set(${out_var} "${tree}" PARENT_SCOPE)
        return()
    endif()

    # a local copy of the sdist (offline machines) may be given with MINICPMO_LLAMA_CPP_SDIST
    set(tarball "$ENV{MINICPMO_LLAMA_CPP_SDIST}")
    if (NOT tarball)
        set(tarball "${cache}/${MINICPMO_SDIST_NAME}.tar.gz")
    endif()
    if (EXISTS "${tarball}")
        file(SHA256 "${tarball}" have)
        if (NOT have STREQUAL MINICPMO_SDIST_SHA256)
            message(STATUS "minicpmo: ${tarball} has a wrong checksum, downloading it again")
            file(REMOVE "${tarball}")
        endif()
    endif()
    if (NOT EXISTS "${tarball}")
        message(STATUS "minicpmo: downloading llama.cpp source (${MINICPMO_SDIST_NAME} sdist, 76 MB) into ${cache}")
        file(MAKE_DIRECTORY "${cache}")
        file(DOWNLOAD "${MINICPMO_SDIST_URL}" "${tarball}.part"
             EXPECTED_HASH SHA256=${MINICPMO_SDIST_SHA256} SHOW_PROGRESS STATUS st)
        list(GET st 0 code)
        if (NOT code EQUAL 0)
            list(GET st 1 msg)
            file(REMOVE "${tarball}.part")
            message(FATAL_ERROR "minicpmo: could not download ${MINICPMO_SDIST_URL}: ${msg}. "
                                "Give a llama.cpp checkout with -DMINICPMO_LLAMA_CPP_DIR=... or the sdist "
                                "with env MINICPMO_LLAMA_CPP_SDIST=...")
        endif()
        file(RENAME "${tarball}.part" "${tarball}")
    endif()

    message(STATUS "minicpmo: extracting ${tarball}")
    file(REMOVE_RECURSE "${cache}/${MINICPMO_SDIST_NAME}")
    # docs, tests and web UI are not needed to build; models/ is (tokenizer test vocabularies)
    file(ARCHIVE_EXTRACT INPUT "${tarball}" DESTINATION "${cache}"
         PATTERNS "${MINICPMO_SDIST_NAME}/vendor/llama.cpp/*")
    if (NOT EXISTS "${tree}/include/llama.h")
        message(FATAL_ERROR "minicpmo: ${tarball} has no vendor/llama.cpp tree")
    endif()
    file(WRITE "${stamp}" "${MINICPMO_SDIST_SHA256}\n")
    set(${out_var} "${tree}" PARENT_SCOPE)
endfunction()
