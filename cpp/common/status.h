// Status: the error currency of the data plane. Codes map 1:1 to the C ABI's return codes.
#pragma once

#include <string>
#include <string_view>
#include <utility>

namespace processor {

enum class StatusCode : int {
  kOk = 200,
  kInvalidArgument = 400,  // the request (or a config value) is wrong
  kInternal = 500,         // our fault or TensorFlow's
  kUnavailable = 503,      // no model version is ready
};

class Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
  static Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }
  static Status Unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  int http_code() const { return static_cast<int>(code_); }
  const std::string& message() const { return message_; }

  // Prefixes the message with where the error happened ("input 'x': ..."). A view, so that a literal
  // context builds no std::string when there is no error.
  Status WithContext(std::string_view context) const {
    if (ok()) return *this;
    std::string text(context);
    text += ": ";
    text += message_;
    return Status(code_, std::move(text));
  }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

#define PROCESSOR_RETURN_IF_ERROR(expr)      \
  do {                                       \
    ::processor::Status _status = (expr);    \
    if (!_status.ok()) return _status;       \
  } while (0)

// Returns the error of `expr` prefixed with `context`; `context` is evaluated only on error, so a
// message built from names costs nothing on the success path.
#define PROCESSOR_RETURN_IF_ERROR_WITH_CONTEXT(expr, context)        \
  do {                                                              \
    ::processor::Status _status = (expr);                           \
    if (!_status.ok()) return _status.WithContext(context);         \
  } while (0)

}  // namespace processor
