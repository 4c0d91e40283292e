// UTF-8 at the tokenizer boundary: token pieces split characters anywhere, so Utf8Stream must hand
// out only valid UTF-8 whatever the bytes and however they are cut, give back a valid input
// unchanged, and agree with utf8_invalid_offset. The first byte picks the cut points.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/utf8.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    if (size == 0) return 0;
    const unsigned step = 1 + data[0] % 7;
    const std::string_view text(reinterpret_cast<const char *>(data + 1), size - 1);
    minicpmo::Utf8Stream stream;
    std::string out;
    for (size_t i = 0; i < text.size(); i += step) {
        const std::string piece = stream.push(text.substr(i, step));
        if (minicpmo::utf8_invalid_offset(piece) != std::string::npos) fuzz::violated("push gave invalid UTF-8");
        out += piece;
    }
    const std::string tail = stream.flush();
    if (minicpmo::utf8_invalid_offset(tail) != std::string::npos) fuzz::violated("flush gave invalid UTF-8");
    out += tail;
    if (minicpmo::utf8_invalid_offset(out) != std::string::npos) fuzz::violated("output is invalid UTF-8");
    const size_t bad = minicpmo::utf8_invalid_offset(text);
    if (bad == std::string::npos && out != text) fuzz::violated("valid UTF-8 did not come through unchanged");
    if (bad != std::string::npos && (bad > text.size() || out.compare(0, bad, text.substr(0, bad)) != 0)) {
        fuzz::violated("the valid prefix before the first invalid byte changed");
    }
    return 0;
}
