# Sourced by the Vulkan scripts (from the repository root): makes sure what ggml's Vulkan backend needs
# is here, then exports MINICPMO_VULKAN_HEADERS (the include folder to build against) and the settings
# that let tests and benchmarks run on Mesa's software Vulkan driver (lavapipe) with a persisted
# shader cache.
#
# Build: glslc + SPIR-V headers + the Vulkan loader from Debian 12, and Vulkan headers >= 1.3.272
# (the pinned llama.cpp uses vk::LayerSettingEXT unconditionally; Debian 12 ships 1.3.239, its
# backports too): the headers of Debian 13's libvulkan-dev are unpacked into the build cache, the
# system is not touched by them.
# Run: lavapipe from Mesa >= 25 (bookworm-backports): Debian 12's Mesa 22.3.6 lavapipe corrupts its
# heap in its own worker threads on these graphs.
source scripts/build_env.sh

minicpmo_vulkan_headers_version="1.4.309.0-1"
minicpmo_vulkan_headers_deb="libvulkan-dev_${minicpmo_vulkan_headers_version}_amd64.deb"
minicpmo_vulkan_headers_sha256="8d329d465e16168afff58b1bd0dd6db46aac2cc3f56054a481b25a04e90b345a"
export MINICPMO_VULKAN_HEADERS="$MINICPMO_CACHE_DIR/vulkan-headers-$minicpmo_vulkan_headers_version/usr/include"

minicpmo_lavapipe_ok() {  # Mesa's lavapipe ICD from Mesa >= 25 is installed
    local v
    v=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null) || return 1
    dpkg --compare-versions "$v" ge 25
}

minicpmo_vulkan_missing=()
command -v glslc >/dev/null 2>&1 || minicpmo_vulkan_missing+=(glslc)
[ -f /usr/include/spirv/unified1/spirv.hpp ] || minicpmo_vulkan_missing+=(spirv-headers)
ls /usr/lib/*/libvulkan.so >/dev/null 2>&1 || minicpmo_vulkan_missing+=(libvulkan-dev)
if [ ${#minicpmo_vulkan_missing[@]} -gt 0 ] || ! minicpmo_lavapipe_ok; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "the Vulkan build needs: ${minicpmo_vulkan_missing[*]} and mesa-vulkan-drivers >= 25 (Debian:" >&2
        echo "  sudo apt-get install -y glslc spirv-headers libvulkan-dev" >&2
        echo "  sudo apt-get install -y -t bookworm-backports mesa-vulkan-drivers)" >&2
        return 1 2>/dev/null || exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! minicpmo_lavapipe_ok && ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
        echo "adding Debian's bookworm-backports to apt's sources (Mesa 25 lavapipe, the software Vulkan driver) ..." >&2
        printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            > /etc/apt/sources.list.d/minicpmo-bookworm-backports.sources
    fi
    echo "installing glslc spirv-headers libvulkan-dev mesa-vulkan-drivers (bookworm-backports) with apt-get ..." >&2
    { apt-get update -q && apt-get install -y -q --no-install-recommends glslc spirv-headers libvulkan-dev \
        && apt-get install -y -q --no-install-recommends -t bookworm-backports mesa-vulkan-drivers; } >&2 \
        || { echo "apt-get could not install the Vulkan prerequisites" >&2; return 1 2>/dev/null || exit 1; }
    hash -r
fi

if [ ! -f "$MINICPMO_VULKAN_HEADERS/vulkan/vulkan.hpp" ]; then
    echo "fetching Vulkan headers $minicpmo_vulkan_headers_version (Debian 13's $minicpmo_vulkan_headers_deb) into $MINICPMO_CACHE_DIR ..." >&2
    minicpmo_tmp=$(mktemp -d)
    curl -fsSL --retry 3 -o "$minicpmo_tmp/$minicpmo_vulkan_headers_deb" \
        "http://deb.debian.org/debian/pool/main/v/vulkan-loader/$minicpmo_vulkan_headers_deb" \
        || { echo "download of $minicpmo_vulkan_headers_deb failed" >&2; return 1 2>/dev/null || exit 1; }
    echo "$minicpmo_vulkan_headers_sha256  $minicpmo_tmp/$minicpmo_vulkan_headers_deb" | sha256sum -c --quiet - \
        || { echo "$minicpmo_vulkan_headers_deb: checksum mismatch" >&2; return 1 2>/dev/null || exit 1; }
    dpkg-deb -x "$minicpmo_tmp/$minicpmo_vulkan_headers_deb" "$MINICPMO_CACHE_DIR/vulkan-headers-$minicpmo_vulkan_headers_version"
    rm -rf "$minicpmo_tmp"
fi

# ggml-vulkan lists CPU-type Vulkan devices (lavapipe) only when asked for by index
export GGML_VK_VISIBLE_DEVICES="${GGML_VK_VISIBLE_DEVICES:-0}"
# compiled pipelines survive between runs: first use otherwise costs minutes on 2 cores
export MESA_SHADER_CACHE_DIR="${MESA_SHADER_CACHE_DIR:-$MINICPMO_CACHE_DIR/mesa-shader-cache}"
export MESA_SHADER_CACHE_MAX_SIZE="${MESA_SHADER_CACHE_MAX_SIZE:-2G}"
unset minicpmo_vulkan_missing minicpmo_tmp
