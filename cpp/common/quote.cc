#include "common/quote.h"

#include <cstdint>
#include <cstdio>

namespace processor {
namespace {

constexpr size_t kMaxQuoted = 200;

// Length of the valid UTF-8 sequence starting at text[i], or 0 if there is none.
size_t Utf8SequenceLength(std::string_view text, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<uint8_t>(text[k]); };
  const uint8_t lead = byte(i);
  size_t length;
  uint32_t min_code;
  if (lead >= 0xC2 && lead <= 0xDF) length = 2, min_code = 0x80;
  else if (lead >= 0xE0 && lead <= 0xEF) length = 3, min_code = 0x800;
  else if (lead >= 0xF0 && lead <= 0xF4) length = 4, min_code = 0x10000;
  else return 0;
  if (i + length > text.size()) return 0;
  uint32_t code = lead & (0x7F >> length);
  for (size_t k = 1; k < length; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
    code = (code << 6) | (byte(i + k) & 0x3F);
  }
  const bool surrogate = code >= 0xD800 && code <= 0xDFFF;
  return code >= min_code && code <= 0x10FFFF && !surrogate ? length : 0;
}

}  // namespace

std::string Escape(std::string_view text) {
  std::string out;
  size_t i = 0;
  while (i < text.size() && out.size() < kMaxQuoted) {
    const uint8_t c = static_cast<uint8_t>(text[i]);
    if (c >= 0x20 && c < 0x7F && c != '\\') {
      out.push_back(static_cast<char>(c));
      ++i;
    } else if (size_t length = c >= 0x80 ? Utf8SequenceLength(text, i) : 0) {
      out.append(text.substr(i, length));
      i += length;
    } else {
      char escaped[8];
      std::snprintf(escaped, sizeof(escaped), "\\x%02x", c);
      out.append(escaped);
      ++i;
    }
  }
  if (i < text.size()) out.append("...");
  return out;
}

std::string Quote(std::string_view text) { return "'" + Escape(text) + "'"; }

}  // namespace processor
