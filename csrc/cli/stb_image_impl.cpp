// The stb_image decoder (the header of the llama.cpp tree), compiled in a file of its own so that a
// sanitizer exception applies to it alone: for an empty PNG data chunk stb passes memcpy a null
// destination with length 0 (UBSan's nonnull-attribute check; harmless, and the pinned source is
// not ours to change), see CMakeLists.txt and fuzz/README.md.
#define STB_IMAGE_IMPLEMENTATION
#include "stb_image.h"
