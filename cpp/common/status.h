// Status: the error currency of the data plane. Codes map 1:1 to the C ABI's return codes.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>

namespace processor {

enum class StatusCode : int {
  kOk = 200,
  kInvalidArgument = 400,  // the request (or a config value) is wrong
  kNotFound = 404,         // the request names a model version the handle does not serve (process_as)
  kInternal = 500,         // our fault or TensorFlow's
  kUnavailable = 503,      // no model version is ready
};

// One pointer, null when OK (as TensorFlow's own Status): the request path creates, returns and tests
// dozens of them per request, and an OK one costs a store and a test instead of an empty std::string.
class Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message)
      : state_(code == StatusCode::kOk ? nullptr : new State{code, std::move(message)}) {}
  Status(const Status& other) : state_(other.state_ ? new State(*other.state_) : nullptr) {}
  Status& operator=(const Status& other) {
    if (this != &other) state_.reset(other.state_ ? new State(*other.state_) : nullptr);
    return *this;
  }
  Status(Status&&) noexcept = default;
  Status& operator=(Status&&) noexcept = default;

  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
  static Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
  static Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }
  static Status Unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }

  bool ok() const { return state_ == nullptr; }
  StatusCode code() const { return state_ ? state_->code : StatusCode::kOk; }
  int http_code() const { return static_cast<int>(code()); }
  const std::string& message() const {
    static const std::string kNone;
    return state_ ? state_->message : kNone;
  }

  // Prefixes the message with where the error happened ("input 'x': ..."). A view, so that a literal
  // context builds no std::string when there is no error.
  Status WithContext(std::string_view context) const {
    if (ok()) return Status();
    std::string text(context);
    text += ": ";
    text += state_->message;
    return Status(state_->code, std::move(text));
  }

 private:
  struct State {
    StatusCode code;
    std::string message;
  };
  std::unique_ptr<State> state_;
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
