// TensorNameIndex: a signature's inputs or outputs by the names a request may use for them.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

namespace processor {

// Every request looks each of its inputs up by name, and recommendation models have hundreds: a hash
// table (open addressing, at most half full, each slot keeping its name's hash so that a probe past
// another name costs no string comparison) finds one in a hash and, almost always, one comparison,
// where a scan would compare names once per input. The names are views into the specs, which outlive
// the index.
class TensorNameIndex {
 public:
  TensorNameIndex() = default;

  // `aliases[i]` and `tensor_names[i]` name tensor i. An alias wins over a tensor name that is the
  // same string, and the first of equal names wins, as a scan in that order would find them.
  TensorNameIndex(const std::vector<std::string_view>& aliases, const std::vector<std::string_view>& tensor_names) {
    size_t capacity = 4;
    while (capacity < 2 * (aliases.size() + tensor_names.size())) capacity *= 2;
    slots_.assign(capacity, Slot{});
    for (const auto* names : {&aliases, &tensor_names}) {
      for (size_t i = 0; i < names->size(); ++i) Insert((*names)[i], static_cast<int>(i));
    }
  }

  // The index of the tensor `name` names; -1 if none.
  int Find(std::string_view name) const {
    if (slots_.empty()) return -1;
    const uint64_t hash = Hash(name);
    const size_t mask = slots_.size() - 1;
    for (size_t slot = hash & mask;; slot = (slot + 1) & mask) {
      const Slot& s = slots_[slot];
      if (s.index < 0) return -1;
      if (s.hash == hash && SameName(s.name, name)) return s.index;
    }
  }

 private:
  struct Slot {
    std::string_view name;
    uint64_t hash = 0;
    int index = -1;  // -1: empty
  };

  // Eight bytes at a time, each word mixed in by a multiply: names are short, and a request hashes
  // every one of its inputs' names.
  static uint64_t Hash(std::string_view name) {
    const char* p = name.data();
    size_t n = name.size();
    uint64_t hash = 0x9E3779B97F4A7C15ull ^ n;
    for (; n >= 8; p += 8, n -= 8) {
      hash = (hash ^ Load<uint64_t>(p)) * 0xFF51AFD7ED558CCDull;
      hash ^= hash >> 32;
    }
    uint64_t tail = 0;
    if (n > 0 && name.size() >= 8) {  // the last eight bytes, the ones already mixed in shifted out
      tail = Load<uint64_t>(p + n - 8) >> (8 * (8 - n));
    } else {
      for (size_t i = 0; i < n; ++i) tail |= uint64_t{static_cast<uint8_t>(p[i])} << (8 * i);
    }
    hash = (hash ^ tail) * 0xC4CEB9FE1A85EC53ull;
    return hash ^ (hash >> 29);
  }

  // string_view's ==, without a call to memcmp for names of up to 16 bytes.
  static bool SameName(std::string_view a, std::string_view b) {
    const size_t n = a.size();
    if (n != b.size()) return false;
    if (n > 16) return std::memcmp(a.data(), b.data(), n) == 0;
    if (n >= 8) return Load<uint64_t>(a.data()) == Load<uint64_t>(b.data()) &&
                       Load<uint64_t>(a.data() + n - 8) == Load<uint64_t>(b.data() + n - 8);
    if (n >= 4) return Load<uint32_t>(a.data()) == Load<uint32_t>(b.data()) &&
                       Load<uint32_t>(a.data() + n - 4) == Load<uint32_t>(b.data() + n - 4);
    for (size_t i = 0; i < n; ++i) {
      if (a[i] != b[i]) return false;
    }
    return true;
  }

  template <typename Word>
  static Word Load(const char* p) {
    Word word;
    std::memcpy(&word, p, sizeof(Word));
    return word;
  }

  void Insert(std::string_view name, int index) {
    const uint64_t hash = Hash(name);
    const size_t mask = slots_.size() - 1;
    for (size_t slot = hash & mask;; slot = (slot + 1) & mask) {
      Slot& s = slots_[slot];
      if (s.index < 0) {
        s = Slot{name, hash, index};
        return;
      }
      if (s.hash == hash && SameName(s.name, name)) return;  // named before: the earlier one wins
    }
  }

  std::vector<Slot> slots_;
};

}  // namespace processor
