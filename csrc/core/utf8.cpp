#include "core/utf8.h"

namespace minicpmo {

namespace {

const char kReplacement[] = "\xEF\xBF\xBD";

// Length of the valid UTF-8 sequence starting at s[i]: >0 valid, 0 incomplete (needs more bytes),
// -1 invalid. Follows RFC 3629 (no overlongs, no surrogates, max U+10FFFF).
int sequence_length(std::string_view s, size_t i) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    if (b0 < 0x80) return 1;
    int len;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        len = 2;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        len = 3;
        if (b0 == 0xE0) lo = 0xA0;
        if (b0 == 0xED) hi = 0x9F;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        len = 4;
        if (b0 == 0xF0) lo = 0x90;
        if (b0 == 0xF4) hi = 0x8F;
    } else {
        return -1;
    }
    for (int k = 1; k < len; ++k) {
        if (i + k >= s.size()) return 0;
        const auto b = static_cast<unsigned char>(s[i + k]);
        const unsigned char l = (k == 1) ? lo : 0x80;
        const unsigned char h = (k == 1) ? hi : 0xBF;
        if (b < l || b > h) return -1;
    }
    return len;
}

}  // namespace

size_t utf8_invalid_offset(std::string_view s) {
    size_t i = 0;
    while (i < s.size()) {
        const int n = sequence_length(s, i);
        if (n <= 0) return i;
        i += static_cast<size_t>(n);
    }
    return std::string_view::npos;
}

std::string Utf8Stream::push(std::string_view bytes) {
    pending_.append(bytes);
    std::string out;
    size_t i = 0;
    while (i < pending_.size()) {
        const int n = sequence_length(pending_, i);
        if (n > 0) {
            out.append(pending_, i, static_cast<size_t>(n));
            i += static_cast<size_t>(n);
        } else if (n == 0) {
            break;  // wait for the rest of this character
        } else {
            out.append(kReplacement);
            i += 1;
        }
    }
    pending_.erase(0, i);
    return out;
}

std::string Utf8Stream::flush() {
    std::string out = pending_.empty() ? std::string() : std::string(kReplacement);
    pending_.clear();
    return out;
}

}  // namespace minicpmo
