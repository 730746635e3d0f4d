// A vector that keeps its first N elements inline: a request's shape dims and byte pieces nearly
// always fit, so parsing a request allocates nothing for them.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <new>
#include <type_traits>

namespace processor {

template <typename T, size_t N>
class SmallVector {
  static_assert(std::is_trivially_copyable_v<T>, "elements are moved with memcpy");

 public:
  SmallVector() = default;
  SmallVector(const SmallVector& other) { Assign(other); }
  SmallVector(SmallVector&& other) noexcept { Take(other); }
  SmallVector& operator=(const SmallVector& other) {
    if (this != &other) {
      clear();
      Assign(other);
    }
    return *this;
  }
  SmallVector& operator=(SmallVector&& other) noexcept {
    if (this != &other) {
      Release();
      Take(other);
    }
    return *this;
  }
  ~SmallVector() { Release(); }

  void push_back(const T& value) {
    if (size_ == capacity_) Grow(capacity_ * 2);
    data_[size_++] = value;
  }
  void clear() { size_ = 0; }

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  T* data() { return data_; }
  const T* data() const { return data_; }
  T& operator[](size_t i) { return data_[i]; }
  const T& operator[](size_t i) const { return data_[i]; }
  T* begin() { return data_; }
  T* end() { return data_ + size_; }
  const T* begin() const { return data_; }
  const T* end() const { return data_ + size_; }

 private:
  bool inline_storage() const { return data_ == inline_; }

  void Grow(size_t capacity) {
    T* bigger = static_cast<T*>(std::malloc(capacity * sizeof(T)));
    if (!bigger) throw std::bad_alloc();  // caught at the ABI boundary and answered with 500
    std::memcpy(static_cast<void*>(bigger), data_, size_ * sizeof(T));
    Release();
    data_ = bigger;
    capacity_ = capacity;
  }

  void Release() {
    if (!inline_storage()) std::free(data_);
    data_ = inline_;
    capacity_ = N;
  }

  void Assign(const SmallVector& other) {
    if (other.size_ > capacity_) Grow(other.size_);
    std::memcpy(static_cast<void*>(data_), other.data_, other.size_ * sizeof(T));
    size_ = other.size_;
  }

  void Take(SmallVector& other) {
    if (other.inline_storage()) {
      std::memcpy(static_cast<void*>(inline_), other.inline_, other.size_ * sizeof(T));
    } else {
      data_ = other.data_;
      capacity_ = other.capacity_;
      other.data_ = other.inline_;
      other.capacity_ = N;
    }
    size_ = other.size_;
    other.size_ = 0;
  }

  T inline_[N];
  T* data_ = inline_;
  size_t size_ = 0;
  size_t capacity_ = N;
};

}  // namespace processor
