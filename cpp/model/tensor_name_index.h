// TensorNameIndex: a signature's inputs or outputs by the names a request may use for them.
#pragma once

#include <algorithm>
#include <string_view>
#include <utility>
#include <vector>

namespace processor {

// Every request looks each of its inputs up by name, and recommendation models have hundreds: a
// sorted table (shorter names first, so that most comparisons look at lengths alone) keeps a lookup
// at a few comparisons where a scan would make one per input. The names are views into the specs,
// which outlive the index.
class TensorNameIndex {
 public:
  TensorNameIndex() = default;

  // `aliases[i]` and `tensor_names[i]` name tensor i. An alias wins over a tensor name that is the
  // same string, and the first of equal names wins, as a scan in that order would find them.
  TensorNameIndex(const std::vector<std::string_view>& aliases, const std::vector<std::string_view>& tensor_names) {
    for (const auto* names : {&aliases, &tensor_names}) {
      for (size_t i = 0; i < names->size(); ++i) entries_.push_back(Entry{(*names)[i], static_cast<int>(i)});
    }
    // Stable, so that of equal names the one listed first stays first, and unique keeps it.
    std::stable_sort(entries_.begin(), entries_.end(), [](const Entry& a, const Entry& b) { return Less(a.name, b.name); });
    entries_.erase(std::unique(entries_.begin(), entries_.end(),
                               [](const Entry& a, const Entry& b) { return a.name == b.name; }),
                   entries_.end());
  }

  // The index of the tensor `name` names; -1 if none.
  int Find(std::string_view name) const {
    auto it = std::lower_bound(entries_.begin(), entries_.end(), name,
                               [](const Entry& entry, std::string_view n) { return Less(entry.name, n); });
    return it != entries_.end() && it->name == name ? it->index : -1;
  }

 private:
  struct Entry {
    std::string_view name;
    int index;
  };

  static bool Less(std::string_view a, std::string_view b) {
    return a.size() != b.size() ? a.size() < b.size() : a < b;
  }

  std::vector<Entry> entries_;
};

}  // namespace processor
