// Quoting request-supplied text into error messages, which the ABI promises are UTF-8.
#pragma once

#include <string>
#include <string_view>

namespace processor {

// 'text' in single quotes; invalid UTF-8 and control bytes become \xNN, long text is cut.
std::string Quote(std::string_view text);

// Quote() without the quotes, for messages that must read as another server's (TF Serving's) do:
// printable UTF-8 comes out unchanged.
std::string Escape(std::string_view text);

}  // namespace processor
