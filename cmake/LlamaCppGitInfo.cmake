# llama.cpp's build-info.cmake asks git for the commit of its source tree at configure time, with
# git's error output shown. The pinned sdist's tree is not a git checkout (its .git file points to
# a folder the sdist does not ship), so every configure printed "fatal: not a git repository" twice.
# When the tree is no checkout, llama.cpp is handed a git that fails quietly (`cmake -E false`) for
# the duration of its configure: its build commit stays "unknown", as before, without the noise.
# A real checkout given with MINICPMO_LLAMA_CPP_DIR keeps the real git and its commit.

# Call before add_subdirectory(llama.cpp); call minicpmo_restore_git_for_llama_cpp() after it.
function(minicpmo_quiet_git_for_llama_cpp tree)
    find_program(MINICPMO_GIT git)
    mark_as_advanced(MINICPMO_GIT)
    set(checkout FALSE)
    if (MINICPMO_GIT)
        execute_process(COMMAND "${MINICPMO_GIT}" rev-parse --verify --quiet HEAD
                        WORKING_DIRECTORY "${tree}" RESULT_VARIABLE rc OUTPUT_QUIET ERROR_QUIET)
        if (rc EQUAL 0)
            set(checkout TRUE)
        endif()
    endif()
    if (NOT checkout)
        # find_package(Git) is skipped and leaves Git_FOUND as set here (also silences its
        # "Git not found" warning on machines without git)
        set(CMAKE_DISABLE_FIND_PACKAGE_Git TRUE PARENT_SCOPE)
        set(Git_FOUND TRUE PARENT_SCOPE)
        set(GIT_EXECUTABLE "${CMAKE_COMMAND};-E;false" PARENT_SCOPE)
    endif()
endfunction()

macro(minicpmo_restore_git_for_llama_cpp)
    unset(CMAKE_DISABLE_FIND_PACKAGE_Git)
    unset(Git_FOUND)
    unset(GIT_EXECUTABLE)
endmacro()
