// RAII owners for TensorFlow C API objects.
#pragma once

#include <tensorflow/c/c_api.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace processor {

// Deletes through a TF C API function, for std::unique_ptr.
template <auto DeleteFunction>
struct CallDeleter {
  template <typename T>
  void operator()(T* object) const { DeleteFunction(object); }
};

using TensorPtr = std::unique_ptr<TF_Tensor, CallDeleter<TF_DeleteTensor>>;
using BufferPtr = std::unique_ptr<TF_Buffer, CallDeleter<TF_DeleteBuffer>>;
using GraphPtr = std::unique_ptr<TF_Graph, CallDeleter<TF_DeleteGraph>>;
using SessionOptionsPtr = std::unique_ptr<TF_SessionOptions, CallDeleter<TF_DeleteSessionOptions>>;

// A run's tensors (fed or fetched), owned until Reset() or destruction. Keeps its capacity across
// Reset(), so a thread reusing one allocates nothing per request; data() is what TF_SessionRun takes.
class OwnedTensors {
 public:
  OwnedTensors() = default;
  ~OwnedTensors() { Reset(0); }
  OwnedTensors(const OwnedTensors&) = delete;
  OwnedTensors& operator=(const OwnedTensors&) = delete;

  // Deletes the tensors held and makes `count` empty slots.
  void Reset(size_t count) {
    for (TF_Tensor* t : tensors_) {
      if (t) TF_DeleteTensor(t);
    }
    tensors_.assign(count, nullptr);
  }
  // Keeps the first `count` tensors (deleting the rest), padding with empty slots.
  void Resize(size_t count) {
    for (size_t i = count; i < tensors_.size(); ++i) {
      if (tensors_[i]) TF_DeleteTensor(tensors_[i]);
    }
    tensors_.resize(count, nullptr);
  }
  // Deletes tensor i unless keep[i] (false beyond keep's size).
  void KeepOnly(const std::vector<char>& keep) {
    for (size_t i = 0; i < tensors_.size(); ++i) {
      if (tensors_[i] && !(i < keep.size() && keep[i])) {
        TF_DeleteTensor(tensors_[i]);
        tensors_[i] = nullptr;
      }
    }
  }
  TensorPtr Take(size_t i) {
    TensorPtr taken(tensors_[i]);
    tensors_[i] = nullptr;
    return taken;
  }
  void Set(size_t i, TensorPtr tensor) {
    if (tensors_[i]) TF_DeleteTensor(tensors_[i]);
    tensors_[i] = tensor.release();
  }
  size_t size() const { return tensors_.size(); }
  TF_Tensor* operator[](size_t i) const { return tensors_[i]; }
  TF_Tensor* const* data() const { return tensors_.data(); }
  TF_Tensor** data() { return tensors_.data(); }

 private:
  std::vector<TF_Tensor*> tensors_;
};

// A TF_Status owned for one call.
class TfStatus {
 public:
  TfStatus() : status_(TF_NewStatus()) {}
  ~TfStatus() { TF_DeleteStatus(status_); }
  TfStatus(const TfStatus&) = delete;
  TfStatus& operator=(const TfStatus&) = delete;

  TF_Status* get() { return status_; }
  bool ok() const { return TF_GetCode(status_) == TF_OK; }
  TF_Code code() const { return TF_GetCode(status_); }
  std::string message() const { return TF_Message(status_); }

  // Errors TF attributes to the caller's data (bad ids, wrong shapes) are the request's fault.
  // `context` is a view so that a literal costs no std::string on the success path.
  Status ToStatus(std::string_view context) const {
    if (ok()) return Status::Ok();
    std::string text(context);
    text += ": ";
    text += message();
    if (code() == TF_INVALID_ARGUMENT || code() == TF_OUT_OF_RANGE) return Status::InvalidArgument(text);
    if (code() == TF_UNAVAILABLE) return Status::Unavailable(text);  // a feature store out of reach
    return Status::Internal(text);
  }

 private:
  TF_Status* status_;
};

}  // namespace processor
