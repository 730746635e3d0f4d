// The request path: decode, check against the signature, run, encode.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/status.h"
#include "model/servable.h"

namespace processor {

// What one request may ask of the process: bounds on what a host's caller can make Processor allocate.
struct RequestLimits {
  static constexpr int64_t kDefaultMaxRequestBytes = int64_t{64} << 20;
  static constexpr int64_t kDefaultMaxTensorElements = int64_t{1} << 24;
  int64_t max_request_bytes = kDefaultMaxRequestBytes;
  // Per input tensor. A string element costs a 24-byte TF_TString for 2 bytes on the wire, so this,
  // not the request size, bounds the allocation a request can cause.
  int64_t max_tensor_elements = kDefaultMaxTensorElements;
};

// What a host asks of a request beyond its bytes: that only version `version` answer it (-1: any; 404
// otherwise, `model_name` in the message; TF Serving's PredictRequest names its own in model_spec), and
// that a DeepRec request naming a signature the model lacks get 400 rather than the main signature
// (strict_signature_name for this request alone; TF Serving's format always refuses it).
struct RequestConstraints {
  int64_t version = -1;
  std::string_view model_name;
  bool strict_signature_name = false;
};

// The request formats of one engine (include/processor.h's PROCESSOR_FORMAT_*).
enum class RequestFormat : int {
  kDeepRec = 0,           // protos/predict.proto's PredictRequest -> PredictResponse
  kTfServingPredict = 1,  // tensorflow.serving.PredictRequest -> PredictResponse (codec/tf_serving_codec.h)
};

// Serves one serialized request of `format` on `servable` (null: no model is ready). On success *output
// holds the serialized response from malloc(). A DeepRec request of size 0 is answered with the
// signature as JSON. `version`: the serving version's number, which TF Serving's response names and a
// TF Serving request naming a version must match (-1: not checked, for warmup), as must `constraints`.
// Errors come back as a Status; the caller turns them into the ABI's message buffers.
Status ProcessRequest(const Servable* servable, const RequestLimits& limits, const void* request, size_t size,
                      void** output, int* output_size, std::string* run_metadata = nullptr,
                      RequestFormat format = RequestFormat::kDeepRec, int64_t version = -1,
                      RequestConstraints constraints = {});

// ProcessRequest() under the C ABI's contract: returns the code, puts the message of a failure into
// *output, and never throws.
// With `run_metadata`, the run is traced (see Servable::Run).
int ServeRequest(const Servable* servable, const RequestLimits& limits, const void* request, int size, void** output,
                 int* output_size, std::string* run_metadata = nullptr, RequestFormat format = RequestFormat::kDeepRec,
                 int64_t version = -1, RequestConstraints constraints = {});

// Writes `status`'s message into *output (from malloc) and returns its code.
int ReplyWithStatus(const Status& status, void** output, int* output_size);

// Copies `text` into a buffer from malloc().
void CopyToMallocBuffer(const std::string& text, void** output, int* output_size);

}  // namespace processor
