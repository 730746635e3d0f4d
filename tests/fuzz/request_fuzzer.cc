// libFuzzer target over the request path on a real model: every input is taken in both request formats
// (DeepRec's PredictRequest and TF Serving's, codec/tf_serving_codec.h), decoded on its own (each
// ArrayProto or TensorProto made into a tensor, whatever the signature) and then served end to end by
// a real TensorFlow session (decode, bind, run, encode). Built with ASan + UBSan by `make fuzz`.
//
//   PROCESSOR_FUZZ_MODEL=<savedmodel dir> request_fuzzer [libFuzzer flags] [corpus dirs]
//
// Any answer other than 200 or 400 (or 404 for TF Serving's format: a version the model does not serve),
// an error without a message, a 200 that is not a well-formed response or a sanitizer report is a
// finding (the fuzzer aborts and saves the input).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include <tensorflow/c/tf_tstring.h>

#include "codec/predict_codec.h"
#include "codec/tf_serving_codec.h"
#include "common/wire_format.h"
#include "model/servable.h"
#include "serving/request_processor.h"

namespace {

std::shared_ptr<processor::Servable> servable;
// Printed at exit: proof the model really ran, in each format.
long answered_200 = 0, answered_400 = 0, tf_serving_200 = 0, tf_serving_400 = 0;

// Small limits keep each run fast; the limits themselves are part of what is fuzzed.
processor::RequestLimits FuzzLimits() {
  processor::RequestLimits limits;
  limits.max_request_bytes = 1 << 20;
  limits.max_tensor_elements = 1 << 16;
  return limits;
}

[[noreturn]] void Finding(const std::string& what) {
  std::fprintf(stderr, "request_fuzzer: %s\n", what.c_str());
  std::abort();
}

// TString keeps a zero after the bytes of its inline and heap forms, the two MakeTensor writes, and
// kernels that read a string as a C string rely on it.
void CheckTerminated(TF_Tensor* tensor) {
  const auto* strings = static_cast<const TF_TString*>(TF_TensorData(tensor));
  for (int64_t i = 0; i < TF_TensorElementCount(tensor); ++i) {
    if (TF_TString_GetDataPointer(&strings[i])[TF_TString_GetSize(&strings[i])] != '\0') {
      Finding("string " + std::to_string(i) + " of a tensor is not terminated by a zero");
    }
  }
}

// Decodes every input as MakeTensor would, signature or not.
template <typename View, typename Parse>
void DecodeAlone(const uint8_t* data, size_t size, Parse parse) {
  View view;
  if (!parse(data, size, &view).ok()) return;
  for (const auto& input : view.inputs) {
    int64_t elements = 0;
    if (!processor::ShapeElementCount(input.second, &elements).ok()) continue;
    if (elements > FuzzLimits().max_tensor_elements || input.second.dims.size() > 254) continue;
    processor::TensorPtr tensor;
    processor::Status status = processor::MakeTensor(input.second, &tensor);
    if (status.ok() != static_cast<bool>(tensor)) Finding("MakeTensor's status and result disagree");
    if (!status.ok() && status.message().empty()) Finding("MakeTensor failed without a message");
    if (status.ok() && TF_TensorType(tensor.get()) == TF_STRING) CheckTerminated(tensor.get());
  }
}

// A 200 must be a PredictResponse: a sequence of well-formed `outputs` map entries (field 1), and for
// TF Serving's, its model_spec (field 2).
void CheckResponse(const void* body, int size, uint32_t last_field) {
  processor::wire::Reader reader(body, static_cast<size_t>(size));
  uint32_t field, wire_type;
  while (reader.NextField(&field, &wire_type)) {
    if (field > last_field || wire_type != processor::wire::kLengthDelimited) Finding("response has a stray field");
    reader.LengthDelimited();
  }
  if (!reader.ok()) Finding("response is not well-formed");
}

// Serves the input in one format and checks the answer; returns the code.
int Serve(const uint8_t* data, size_t size, processor::RequestFormat format) {
  const bool tf_serving = format == processor::RequestFormat::kTfServingPredict;
  void* body = nullptr;
  int body_size = 0;
  const int code = processor::ServeRequest(servable.get(), FuzzLimits(), data, static_cast<int>(size), &body,
                                           &body_size, nullptr, format, /*version=*/0);
  if (code == 200 && (size > 0 || tf_serving)) CheckResponse(body, body_size, tf_serving ? 2 : 1);
  if (code != 200 && (body_size == 0 || std::strlen(static_cast<const char*>(body)) != static_cast<size_t>(body_size))) {
    Finding("an error without a whole message");
  }
  if (code != 200 && code != 400 && !(tf_serving && code == 404)) {
    Finding("code " + std::to_string(code) + ": " + static_cast<const char*>(body));
  }
  std::free(body);
  return code;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* model = std::getenv("PROCESSOR_FUZZ_MODEL");
  if (!model) Finding("set PROCESSOR_FUZZ_MODEL to a SavedModel directory");
  processor::LoadOptions options;
  options.savedmodel_dir = model;
  std::unique_ptr<processor::LoadPlan> plan;
  processor::Status status = processor::LoadPlan::Make(options, &plan);
  if (status.ok()) status = processor::Servable::Load(*plan, &servable);
  if (!status.ok()) Finding("cannot load " + std::string(model) + ": " + status.message());
  std::atexit([] {
    std::fprintf(stderr, "request_fuzzer: answers 200: %ld, 400: %ld\n", answered_200, answered_400);
    std::fprintf(stderr, "request_fuzzer: tf_serving answers 200: %ld, 400: %ld\n", tf_serving_200, tf_serving_400);
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  DecodeAlone<processor::RequestView>(data, size, [](const uint8_t* d, size_t n, processor::RequestView* view) {
    return processor::ParsePredictRequest(d, n, view);
  });
  DecodeAlone<processor::TfServingRequestView>(data, size, [](const uint8_t* d, size_t n,
                                                              processor::TfServingRequestView* view) {
    return processor::ParseTfServingPredictRequest(d, n, view);
  });
  const int code = Serve(data, size, processor::RequestFormat::kDeepRec);
  ++(code == 200 ? answered_200 : answered_400);
  const int tf_serving = Serve(data, size, processor::RequestFormat::kTfServingPredict);
  ++(tf_serving == 200 ? tf_serving_200 : tf_serving_400);
  return 0;
}
