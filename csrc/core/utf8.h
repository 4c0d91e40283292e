// UTF-8 helpers: token pieces can split a character across tokens, so streamed text is assembled
// here and only whole, valid characters are handed to callers.
#pragma once

#include <string>
#include <string_view>

namespace minicpmo {

// Byte offset of the first invalid UTF-8 sequence in `s`, or npos when `s` is valid.
size_t utf8_invalid_offset(std::string_view s);

// Collects bytes and releases the longest prefix that is complete UTF-8. Bytes that can never
// form a valid character are replaced by U+FFFD so the output is always valid UTF-8.
class Utf8Stream {
public:
    std::string push(std::string_view bytes);
    std::string flush();  // end of stream: a dangling partial character becomes U+FFFD

private:
    std::string pending_;
};

}  // namespace minicpmo
