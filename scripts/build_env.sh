# Sourced by the scripts: compiler cache settings so rebuilds of llama.cpp take seconds, not minutes.
export MINICPMO_CACHE_DIR="${MINICPMO_CACHE_DIR:-$HOME/.cache/minicpmo-cpp}"
export CCACHE_DIR="${CCACHE_DIR:-$MINICPMO_CACHE_DIR/ccache}"
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$(pwd)}"
export CCACHE_NOHASHDIR=true
export CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-5G}"
if ! command -v ccache >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing ccache with apt-get (compiler cache: later builds take seconds) ..." >&2
        (export DEBIAN_FRONTEND=noninteractive; apt-get update -q && apt-get install -y -q --no-install-recommends ccache) >&2 \
            || echo "ccache install failed; building without it" >&2
    fi
fi
