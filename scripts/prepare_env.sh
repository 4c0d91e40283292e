# Sourced by scripts/demo.sh and scripts/test.sh (from the repository root): checks the build
# prerequisites, installs the missing ones with apt-get when run as root on Debian/Ubuntu (and says so),
# then creates or reuses a Python virtual environment and activates it.
#
#   MINICPMO_EXTRA_PREREQS  more "command:debian-package" pairs to require (test.sh adds pkg-config)
#   MINICPMO_EXTRA_FILES    more "file:debian-package" pairs to require (test.sh adds oneDNN's header)
#   MINICPMO_VENV           the virtual environment to use; default: an already active one
#                           ($VIRTUAL_ENV), else .venv/ in the repository (created with python3 -m venv)

# --- prerequisites -----------------------------------------------------------------------------
# Each missing item is "what (debian-package)"; packages are collected for one apt-get call.
minicpmo_missing=()
minicpmo_packages=()
minicpmo_need() {  # minicpmo_need "what" debian-package
    minicpmo_missing+=("$1 ($2)")
    case " ${minicpmo_packages[*]} " in *" $2 "*) ;; *) minicpmo_packages+=("$2") ;; esac
}
command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || minicpmo_need "C compiler" build-essential
command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 || minicpmo_need "C++ compiler" build-essential
if ! command -v cmake >/dev/null 2>&1; then
    minicpmo_need "cmake >= 3.21" cmake
elif ! printf '%s\n' 3.21 "$(cmake --version | sed -n '1s/^cmake version //p')" | sort -V -C; then
    minicpmo_need "cmake >= 3.21 (found $(cmake --version | sed -n '1s/^cmake version //p'))" cmake
fi
# without ninja on PATH scikit-build-core fetches it from PyPI, or falls back to make
command -v ninja >/dev/null 2>&1 || command -v make >/dev/null 2>&1 || minicpmo_need "ninja or make" ninja-build
if ! command -v python3 >/dev/null 2>&1; then
    minicpmo_need "python3" python3
    minicpmo_need "Python headers" python3-dev
    minicpmo_need "python3 -m venv" python3-venv
else
    python3 -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
        || minicpmo_need "Python headers (Python.h of $(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])'))" python3-dev
    # Debian splits venv's pip bootstrap (ensurepip) into python3-venv
    python3 -c 'import ensurepip, venv' 2>/dev/null || minicpmo_need "python3 -m venv (ensurepip)" python3-venv
fi
for minicpmo_pair in ${MINICPMO_EXTRA_PREREQS:-}; do
    command -v "${minicpmo_pair%%:*}" >/dev/null 2>&1 || minicpmo_need "${minicpmo_pair%%:*}" "${minicpmo_pair#*:}"
done
for minicpmo_pair in ${MINICPMO_EXTRA_FILES:-}; do
    [ -e "${minicpmo_pair%%:*}" ] || minicpmo_need "${minicpmo_pair%%:*}" "${minicpmo_pair#*:}"
done
unset minicpmo_pair
# optional: the compiler cache (rebuilds of llama.cpp in seconds); installed along when apt-get runs
if [ ${#minicpmo_missing[@]} -gt 0 ] && ! command -v ccache >/dev/null 2>&1; then
    minicpmo_packages+=(ccache)
fi

if [ ${#minicpmo_missing[@]} -gt 0 ]; then
    echo "missing prerequisites: ${minicpmo_missing[*]}" >&2
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing ${minicpmo_packages[*]} with apt-get ..." >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q && apt-get install -y -q --no-install-recommends "${minicpmo_packages[@]}" || {
            echo "apt-get could not install ${minicpmo_packages[*]}" >&2; exit 1; }
        hash -r
    elif command -v apt-get >/dev/null 2>&1; then
        echo "install them with:  sudo apt-get install -y ${minicpmo_packages[*]}" >&2
        exit 1
    else
        echo "install them with your system's package manager (Debian names: ${minicpmo_packages[*]})" >&2
        exit 1
    fi
fi

# --- compiler cache -----------------------------------------------------------------------------
source scripts/build_env.sh

# --- virtual environment ------------------------------------------------------------------------
# Debian's python3 refuses `pip install` outside a virtual environment (PEP 668, EXTERNALLY-MANAGED).
minicpmo_venv="${MINICPMO_VENV:-${VIRTUAL_ENV:-$PWD/.venv}}"
if [ ! -x "$minicpmo_venv/bin/python" ]; then
    echo "creating the virtual environment $minicpmo_venv (python3 -m venv, $(python3 --version))" >&2
    python3 -m venv "$minicpmo_venv"
    # Debian's bundled pip 23.0 lacks `pip install -C ...` (pip 23.1)
    "$minicpmo_venv/bin/python" -m pip install -q --progress-bar off --upgrade pip
else
    echo "using the virtual environment $minicpmo_venv ($("$minicpmo_venv/bin/python" --version))" >&2
fi
source "$minicpmo_venv/bin/activate"

# Installs this package with pip (arguments: what pip installs, e.g. "." or ".[test]"). pip shows a
# build backend's output only with -v; of it the build's progress is kept on screen -- ninja's
# [n/N] lines, scikit-build-core's *** steps, this project's "-- minicpmo:" configure lines -- and the
# whole log goes to $MINICPMO_CACHE_DIR/last-install.log, whose tail is shown if pip fails.
minicpmo_pip_install() {
    local log="$MINICPMO_CACHE_DIR/last-install.log"
    mkdir -p "$MINICPMO_CACHE_DIR"
    if ! python -m pip install -v --progress-bar off "$@" 2>&1 | tee "$log" \
        | { grep --line-buffered -E '^ *(\[[0-9]+/[0-9]+\] |\*\*\* |-- minicpmo: |-- \[download [0-9]*0% complete\])|^(Successfully installed|ERROR:)' \
            | sed -u 's/^  //' || true; }; then
        echo "pip install $* failed; the last lines of $log:" >&2
        tail -n 40 "$log" >&2
        return 1
    fi
}
