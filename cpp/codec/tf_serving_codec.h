// TF Serving's Predict messages over TF tensors: the engine's second request format, beside
// protos/predict.proto's (predict_codec.h), decoded straight into tensors as that one is.
//
// A tensorflow.serving.PredictRequest (tensorflow_serving/apis/predict.proto, model.proto) carries
// TensorProtos (tensorflow/core/framework/tensor.proto, tensor_shape.proto). Each becomes a TF_Tensor
// as TensorFlow's Tensor::FromProto makes one (tensor.cc): tensor_content when it is not empty, else
// the dtype's value field, with fewer values than the shape holds filled with the last one and none at
// all with zeros. Where FromProto would turn a client's mistake into a wrong value instead, this
// refuses it with a message: more values than the shape holds (FromProto drops the rest), values in
// another dtype's field (ignored there: zeros), and integers out of their dtype's range (wrapped).
// The response is written as TF Serving writes it (Tensor::AsProtoField: values in the dtype's field),
// so clients that read `outputs["y"].float_val` keep working.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

#include "codec/model_spec.h"
#include "codec/predict_codec.h"
#include "common/small_vector.h"
#include "common/status.h"
#include "common/tf_handles.h"

namespace processor {

// TensorProto's field numbers (tensorflow/core/framework/tensor.proto).
namespace tensor_proto {
enum Field : uint32_t {
  kDtype = 1,
  kTensorShape = 2,
  kVersionNumber = 3,
  kTensorContent = 4,
  kFloatVal = 5,
  kDoubleVal = 6,
  kIntVal = 7,
  kStringVal = 8,
  kScomplexVal = 9,
  kInt64Val = 10,
  kBoolVal = 11,
  kDcomplexVal = 12,
  kHalfVal = 13,
  kResourceHandleVal = 14,
  kVariantVal = 15,
  kUint32Val = 16,
  kUint64Val = 17,
  kFloat8Val = 18,
};
inline constexpr int kFieldCount = 19;
}  // namespace tensor_proto

// A TensorProto, parsed but not copied (as ArrayView is for an ArrayProto): its bytes (several pieces
// when protobuf's merge semantics join repeated occurrences), its shape, and how many values each
// field holds.
struct TensorProtoView {
  int dtype = 0;
  SmallVector<int64_t, 4> dims;
  bool unknown_rank = false;
  std::string_view tensor_content;  // the last occurrence, as protobuf keeps a singular bytes field
  SmallVector<std::string_view, 2> pieces;
  int64_t counts[tensor_proto::kFieldCount] = {};
};

struct TfServingRequestView {
  ModelSpecView model_spec;
  // In wire order; a key given again counts last (protobuf's map semantics), as in RequestView.
  std::vector<std::pair<std::string_view, TensorProtoView>> inputs;
  std::vector<std::string_view> output_filter;

  void Clear() {
    model_spec = {};
    inputs.clear();
    output_filter.clear();
  }
};

// Parses a serialized tensorflow.serving.PredictRequest. Fails with InvalidArgument naming what is
// malformed.
Status ParseTfServingPredictRequest(const void* data, size_t size, TfServingRequestView* request);

// Number of elements the shape calls for; InvalidArgument on negative dims, unknown rank or overflow.
Status ShapeElementCount(const TensorProtoView& tensor, int64_t* count);

// Copies the values into a new tensor of the view's dtype and shape, with the checks the header's
// comment lists. `*tensor` is replaced; `*worth_keeping` is set to false (tensors of this format are not
// reused across requests); `shape` is not used. The signature matches MakeTensor(ArrayView) so that one
// binder serves both formats.
Status MakeTensor(const TensorProtoView& view, TensorPtr* tensor, bool* worth_keeping = nullptr,
                  KeptTensorShape* shape = nullptr);

// What a PredictResponse says besides its outputs: its model_spec.
struct ResponseModelSpec {
  std::string_view name;            // the request's model name
  int64_t version = -1;             // the version that answered; -1 leaves it unset
  std::string_view signature_name;  // the signature that ran
};

// Serializes a tensorflow.serving.PredictResponse of tensors[i] named names[i] into a buffer from
// malloc(); the caller frees it.
Status EncodeTfServingPredictResponse(const std::vector<std::string_view>& names, const OwnedTensors& tensors,
                                      const ResponseModelSpec& model_spec, void** data, int* size);

}  // namespace processor
