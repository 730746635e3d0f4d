#include "serving/request_processor.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <vector>

#include "codec/predict_codec.h"
#include "codec/tf_serving_codec.h"
#include "common/quote.h"
#include "common/shape_string.h"

namespace processor {
namespace {

// The signature's names for an error message: the first twenty, and how many more (models with
// hundreds of inputs would otherwise bury the error under them).
std::string Names(const std::vector<BoundTensor>& tensors) {
  constexpr size_t kListed = 20;
  std::string names;
  for (size_t i = 0; i < tensors.size() && i < kListed; ++i) names += (i ? ", " : "") + Quote(tensors[i].spec.alias);
  if (tensors.size() > kListed) names += " and " + std::to_string(tensors.size() - kListed) + " more";
  return names;
}

// TF Serving's answer to a request naming a version that does not serve it.
Status VersionNotFound(std::string_view model_name, int64_t version) {
  return Status::NotFound("Servable not found for request: Specific(" + Escape(model_name) + ", " +
                          std::to_string(version) + ")");
}

// "'main'", or "'main' (and 'a', 'b')": the model's signatures, the main one first.
std::string SignatureNames(const Servable& servable) {
  std::string others;
  for (size_t i = 1; i < servable.signatures().size(); ++i) {
    others += (i > 1 ? ", " : "") + Quote(servable.signatures()[i]->name());
  }
  return Quote(servable.signature().name()) + (others.empty() ? "" : " (and " + others + ")");
}

// TF Serving's way of listing them: "{a,b}", sorted, as its messages print a std::set.
std::string TfServingNames(const std::vector<BoundTensor>& tensors) {
  std::vector<std::string_view> names;
  for (const BoundTensor& tensor : tensors) names.push_back(tensor.spec.alias);
  std::sort(names.begin(), names.end());
  std::string joined = "{";
  for (size_t i = 0; i < names.size(); ++i) (joined += i ? "," : "") += names[i];
  return joined + "}";
}

// The signature's shape is a contract: rank and every known dimension must match.
template <typename View>
Status CheckShape(const View& array, const TensorSpec& spec) {
  if (spec.unknown_rank) return Status::Ok();
  bool matches = array.dims.size() == spec.dims.size();
  for (size_t i = 0; matches && i < spec.dims.size(); ++i) {
    matches = spec.dims[i] < 0 || spec.dims[i] == array.dims[i];
  }
  if (matches) return Status::Ok();
  return Status::InvalidArgument("shape " + ShapeString(array.dims) + " does not match the signature's shape " +
                                 ShapeString(spec.dims));
}

// What one request is parsed and bound into. Each thread keeps one and reuses its capacity, so the
// request path allocates nothing for bookkeeping; the tensors are released when the request ends.
struct RequestScratch {
  RequestView view;
  TfServingRequestView tf_serving_view;
  std::vector<int> entry_of;  // per signature input, the request's entry for it
  std::vector<int> input_of;  // per request entry, its signature input
  std::vector<TF_Output> input_ports;
  OwnedTensors input_tensors;
  std::vector<KeptTensorShape> input_shapes;  // of each kept input tensor, so reusing it asks TF less
  std::vector<char> keep_input;  // whether MakeTensor found input i worth keeping for the next request
  std::vector<TF_Output> output_ports;
  std::vector<std::string_view> output_names;
  OwnedTensors output_tensors;

  // Outputs go; inputs stay for the next request to write into (MakeTensor), unless keeping them
  // would hold memory (large ones, strings on the heap).
  void Release() {
    output_tensors.Reset(0);
    input_tensors.KeepOnly(keep_input);
  }
};

// The calling thread's scratch. Not inlined on purpose: a shared library reaches a thread_local
// through __tls_get_addr, and with the variable's address known the compiler calls it again at each
// use after any call (some forty per request); behind this call the address is an ordinary pointer.
__attribute__((noinline)) RequestScratch& ThreadScratch() {
  thread_local RequestScratch scratch;
  return scratch;
}

// TensorFlow's TensorShape holds at most this many dims and aborts the process beyond it.
constexpr size_t kMaxRank = 254;

// Binds the request's inputs to the signature's in two passes: names first (unknown, given twice),
// so that an input given again under the same key is dropped before any tensor is made for it
// (protobuf's map semantics: the last one wins); then, in the request's order, each input's checks
// and tensor; then what is missing. `entries` are the request's (ArrayViews or TensorProtoViews);
// `tf_serving` words an unknown input as TF Serving does, for clients that match its message.
template <typename Entries>
Status BindInputs(const BoundSignature& signature, const RequestLimits& limits, const Entries& entries,
                  bool tf_serving, RequestScratch* scratch) {
  const auto& specs = signature.inputs();
  std::vector<int>& entry_of = scratch->entry_of;  // signature input -> its entry in the request, or -1
  std::vector<int>& input_of = scratch->input_of;  // request entry -> its signature input
  entry_of.assign(specs.size(), -1);
  input_of.resize(entries.size());
  for (size_t k = 0; k < entries.size(); ++k) {
    const std::string_view name = entries[k].first;
    const int index = signature.FindInput(name);
    if (index < 0 && tf_serving) {
      return Status::InvalidArgument("input tensor alias not found in signature: " + Escape(name) +
                                     ". Inputs expected to be in the set " + TfServingNames(specs) + ".");
    }
    if (index < 0) {
      return Status::InvalidArgument("unknown input " + Quote(name) + "; the signature's inputs are " +
                                     Names(specs));
    }
    if (entry_of[index] >= 0 && entries[entry_of[index]].first != name) {
      return Status::InvalidArgument("input " + Quote(specs[index].spec.alias) + " is given twice (as " +
                                     Quote(entries[entry_of[index]].first) + " and " + Quote(name) + ")");
    }
    entry_of[index] = static_cast<int>(k);
    input_of[k] = index;
  }
  scratch->input_ports.resize(specs.size());
  scratch->input_tensors.Resize(specs.size());  // an earlier request's tensors, for MakeTensor to reuse
  scratch->input_shapes.resize(specs.size());
  scratch->keep_input.assign(specs.size(), false);
  for (size_t k = 0; k < entries.size(); ++k) {
    const int index = input_of[k];
    if (entry_of[index] != static_cast<int>(k)) continue;  // given again later: that one counts
    const auto& array = entries[k].second;
    const TensorSpec& spec = specs[index].spec;
    Status status;
    int64_t elements = 0;
    TensorPtr tensor = scratch->input_tensors.Take(index);
    if (array.dtype != spec.dtype) {
      status = Status::InvalidArgument(std::string("dtype ") + DataTypeName(array.dtype) +
                                       " does not match the signature's " + DataTypeName(spec.dtype));
    }
    if (status.ok() && array.dims.size() > kMaxRank) {
      status = Status::InvalidArgument("rank " + std::to_string(array.dims.size()) +
                                       " is more than TensorFlow's maximum of " + std::to_string(kMaxRank));
    }
    if (status.ok()) status = ShapeElementCount(array, &elements);  // a malformed shape is the more basic error
    if (status.ok() && elements > limits.max_tensor_elements) {
      status = Status::InvalidArgument("shape " + ShapeString(array.dims) + " has " + std::to_string(elements) +
                                       " elements, more than max_tensor_elements (" +
                                       std::to_string(limits.max_tensor_elements) + ")");
    }
    if (status.ok()) status = CheckShape(array, spec);
    bool worth_keeping = false;
    if (status.ok()) status = MakeTensor(array, &tensor, &worth_keeping, &scratch->input_shapes[index]);
    if (!status.ok()) return status.WithContext("input " + Quote(spec.alias));
    scratch->input_tensors.Set(index, std::move(tensor));
    scratch->keep_input[index] = worth_keeping;
    scratch->input_ports[index] = specs[index].port;
  }
  for (size_t i = 0; i < specs.size(); ++i) {
    if (entry_of[i] < 0) return Status::InvalidArgument("missing input " + Quote(specs[i].spec.alias));
  }
  return Status::Ok();
}

// The outputs `output_filter` names (all when empty). `tf_serving`: TF Serving's messages, and a name
// given twice is refused as it refuses it (otherwise it is answered once).
Status BindOutputs(const BoundSignature& signature, const std::vector<std::string_view>& output_filter,
                   bool tf_serving, RequestScratch* scratch) {
  std::vector<TF_Output>* ports = &scratch->output_ports;
  std::vector<std::string_view>* names = &scratch->output_names;
  ports->clear();
  names->clear();
  const auto& specs = signature.outputs();
  if (output_filter.empty()) {
    for (const BoundTensor& output : specs) {
      ports->push_back(output.port);
      names->push_back(output.spec.alias);
    }
    return Status::Ok();
  }
  std::vector<bool> chosen(specs.size(), false);
  for (std::string_view name : output_filter) {
    const int index = signature.FindOutput(name);
    if (index < 0 && tf_serving) {
      return Status::InvalidArgument("output tensor alias not found in signature: " + Escape(name) +
                                     " Outputs expected to be in the set " + TfServingNames(specs) + ".");
    }
    if (index < 0) {
      return Status::InvalidArgument("unknown output " + Quote(name) + " in output_filter; the signature's outputs are " +
                                     Names(specs));
    }
    if (chosen[index] && tf_serving) return Status::InvalidArgument("duplicate output tensor alias: " + Escape(name));
    if (chosen[index]) continue;  // named twice: answer once
    chosen[index] = true;
    ports->push_back(specs[index].port);
    names->push_back(name);  // answer under the name the caller used
  }
  return Status::Ok();
}

}  // namespace

void CopyToMallocBuffer(const std::string& text, void** output, int* output_size) {
  void* buffer = std::malloc(text.size() + 1);
  if (!buffer) {
    *output = nullptr;
    *output_size = 0;
    return;
  }
  std::memcpy(buffer, text.c_str(), text.size() + 1);  // NUL-terminated for C hosts that print it
  *output = buffer;
  *output_size = static_cast<int>(text.size());
}

namespace {

// Binds the request's inputs and outputs to `signature` and runs it: traced (timeline) runs run alone.
template <typename Entries>
Status BindAndRun(const Servable& servable, const BoundSignature& signature, const RequestLimits& limits,
                  const Entries& inputs, const std::vector<std::string_view>& output_filter, bool tf_serving,
                  RequestScratch& scratch, std::string* run_metadata) {
  PROCESSOR_RETURN_IF_ERROR(BindInputs(signature, limits, inputs, tf_serving, &scratch));
  PROCESSOR_RETURN_IF_ERROR(BindOutputs(signature, output_filter, tf_serving, &scratch));
  return run_metadata ? servable.Run(scratch.input_ports, scratch.input_tensors, scratch.output_ports,
                                     &scratch.output_tensors, run_metadata)
                      : servable.Serve(signature, scratch.input_ports, scratch.input_tensors, scratch.output_ports,
                                       &scratch.output_tensors);
}

Status ProcessDeepRec(const Servable& servable, const RequestLimits& limits, const void* request, size_t size,
                      bool strict_signature_name, RequestScratch& scratch, void** output, int* output_size,
                      std::string* run_metadata) {
  if (size == 0) {
    CopyToMallocBuffer(servable.description_json(), output, output_size);
    return Status::Ok();
  }
  PROCESSOR_RETURN_IF_ERROR(ParsePredictRequest(request, size, &scratch.view));
  // A request naming one of the model's signatures gets it. DeepRec's processor serves its one signature
  // whatever a request names, and so does this one for a name the model lacks, unless
  // strict_signature_name (the config's, or the request's constraints) refuses it.
  const std::string_view signature_name = scratch.view.signature_name;
  const BoundSignature* signature = signature_name.empty() ? nullptr : servable.FindSignature(signature_name);
  if (!signature && (strict_signature_name || servable.strict_signature_name()) && !signature_name.empty()) {
    return Status::InvalidArgument("signature_name " + Quote(signature_name) + " is not served; this model serves " +
                                   SignatureNames(servable));
  }
  if (!signature) signature = &servable.signature();
  PROCESSOR_RETURN_IF_ERROR(BindAndRun(servable, *signature, limits, scratch.view.inputs, scratch.view.output_filter,
                                       false, scratch, run_metadata));
  return EncodePredictResponse(scratch.output_names, scratch.output_tensors, output, output_size);
}

Status ProcessTfServingPredict(const Servable& servable, const RequestLimits& limits, const void* request, size_t size,
                               int64_t version, RequestScratch& scratch, void** output, int* output_size,
                               std::string* run_metadata) {
  TfServingRequestView& view = scratch.tf_serving_view;
  PROCESSOR_RETURN_IF_ERROR(ParseTfServingPredictRequest(request, size, &view));
  // A request naming a version is answered by that version or not at all: a swap may have replaced
  // the one the host routed it to.
  const ModelSpecView& spec = view.model_spec;
  if (spec.has_version && version >= 0 && spec.version != version) return VersionNotFound(spec.name, spec.version);
  // TF Serving runs the signature the request names; an unnamed request gets the main one (the
  // config's signature_name, serving_default unless set).
  const std::string_view signature_name = spec.signature_name;
  const BoundSignature* signature =
      signature_name.empty() ? &servable.signature() : servable.FindSignature(signature_name);
  if (!signature) {
    return Status::InvalidArgument(std::string(kUnknownSignaturePrefix) + Escape(signature_name) + "\" not found.");
  }
  PROCESSOR_RETURN_IF_ERROR(
      BindAndRun(servable, *signature, limits, view.inputs, view.output_filter, true, scratch, run_metadata));
  return EncodeTfServingPredictResponse(scratch.output_names, scratch.output_tensors,
                                        {view.model_spec.name, version, signature->name()}, output, output_size);
}

}  // namespace

Status ProcessRequest(const Servable* servable, const RequestLimits& limits, const void* request, size_t size,
                      void** output, int* output_size, std::string* run_metadata, RequestFormat format,
                      int64_t version, RequestConstraints constraints) {
  if (!servable) return Status::Unavailable("no model version is ready to serve");
  if (constraints.version >= 0 && constraints.version != version) {
    return VersionNotFound(constraints.model_name, constraints.version);
  }
  if (size > static_cast<uint64_t>(limits.max_request_bytes)) {
    return Status::InvalidArgument("the request is " + std::to_string(size) + " bytes, more than max_request_bytes (" +
                                   std::to_string(limits.max_request_bytes) + ")");
  }
  RequestScratch& scratch = ThreadScratch();
  struct ReleaseOnExit {
    RequestScratch& scratch;
    ~ReleaseOnExit() { scratch.Release(); }
  } release{scratch};
  switch (format) {
    case RequestFormat::kDeepRec:
      return ProcessDeepRec(*servable, limits, request, size, constraints.strict_signature_name, scratch, output,
                            output_size, run_metadata);
    case RequestFormat::kTfServingPredict:
      return ProcessTfServingPredict(*servable, limits, request, size, version, scratch, output, output_size,
                                     run_metadata);
  }
  return Status::InvalidArgument("unknown request format " + std::to_string(static_cast<int>(format)));
}

int ReplyWithStatus(const Status& status, void** output, int* output_size) {
  CopyToMallocBuffer(status.message(), output, output_size);
  return status.http_code();
}

int ServeRequest(const Servable* servable, const RequestLimits& limits, const void* request, int size, void** output,
                 int* output_size, std::string* run_metadata, RequestFormat format, int64_t version,
                 RequestConstraints constraints) {
  if (!output || !output_size) return static_cast<int>(StatusCode::kInternal);  // nowhere to say why
  *output = nullptr;
  *output_size = 0;
  try {
    if (size < 0) return ReplyWithStatus(Status::InvalidArgument("input_size is negative"), output, output_size);
    Status status = ProcessRequest(servable, limits, request, static_cast<size_t>(size), output, output_size,
                                   run_metadata, format, version, constraints);
    return status.ok() ? status.http_code() : ReplyWithStatus(status, output, output_size);
  } catch (const std::bad_alloc&) {
    return ReplyWithStatus(Status::Internal("out of memory"), output, output_size);
  } catch (const std::exception& e) {
    return ReplyWithStatus(Status::Internal(std::string("unexpected exception: ") + e.what()), output, output_size);
  } catch (...) {
    return ReplyWithStatus(Status::Internal("unexpected exception"), output, output_size);
  }
}

}  // namespace processor
