// codec/model_spec.h and codec/tf_serving_codec.h: ModelSpec's oneof and merge rules (which the gRPC
// server's label pinning relies on), and a TensorProto's parse and tensor.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "codec/model_spec.h"
#include "codec/tf_serving_codec.h"
#include "common/wire_format.h"

namespace processor {
namespace {

std::string Version(int64_t version) {
  wire::StringWriter value;
  value.Varint(1, static_cast<uint64_t>(version));
  return value.str();
}

// A PredictRequest holding these ModelSpecs, one model_spec field each (protobuf merges them).
std::string RequestWithSpecs(std::initializer_list<std::string> specs) {
  wire::StringWriter request;
  for (const std::string& spec : specs) request.Bytes(1, spec);
  return request.str();
}

TEST(ModelSpec, NameVersionAndSignature) {
  wire::StringWriter spec;
  spec.Bytes(1, "rec");
  spec.Bytes(2, Version(7));
  spec.Bytes(3, "serving_default");
  ModelSpecView view;
  ASSERT_TRUE(ParseModelSpec(spec.str(), &view).ok());
  EXPECT_EQ(view.name, "rec");
  EXPECT_TRUE(view.has_version);
  EXPECT_EQ(view.version, 7);
  EXPECT_EQ(view.signature_name, "serving_default");
  EXPECT_TRUE(view.version_label.empty());
}

TEST(ModelSpec, TheLaterOfVersionAndLabelCounts) {
  wire::StringWriter version_then_label;
  version_then_label.Bytes(2, Version(7));
  version_then_label.Bytes(4, "canary");
  ModelSpecView view;
  ASSERT_TRUE(ParseModelSpec(version_then_label.str(), &view).ok());
  EXPECT_FALSE(view.has_version);
  EXPECT_EQ(view.version_label, "canary");

  wire::StringWriter label_then_version;
  label_then_version.Bytes(4, "canary");
  label_then_version.Bytes(2, Version(7));
  view = {};
  ASSERT_TRUE(ParseModelSpec(label_then_version.str(), &view).ok());
  EXPECT_TRUE(view.has_version);
  EXPECT_EQ(view.version, 7);
  EXPECT_TRUE(view.version_label.empty());
}

// The gRPC server pins a labelled request by appending a model_spec with the label's version: merged,
// the request names that version and no label, and keeps its name and signature.
TEST(ModelSpec, AnAppendedModelSpecMergesIntoTheFirst) {
  wire::StringWriter first;
  first.Bytes(1, "rec");
  first.Bytes(3, "serving_default");
  first.Bytes(4, "stable");
  wire::StringWriter pin;
  pin.Bytes(2, Version(3));
  const std::string request = RequestWithSpecs({first.str(), pin.str()});
  ModelSpecView view;
  ASSERT_TRUE(PeekModelSpec(request.data(), request.size(), &view).ok());
  EXPECT_EQ(view.name, "rec");
  EXPECT_EQ(view.signature_name, "serving_default");
  EXPECT_TRUE(view.has_version);
  EXPECT_EQ(view.version, 3);
  EXPECT_TRUE(view.version_label.empty());

  TfServingRequestView parsed;
  ASSERT_TRUE(ParseTfServingPredictRequest(request.data(), request.size(), &parsed).ok());
  EXPECT_EQ(parsed.model_spec.version, 3);
  EXPECT_TRUE(parsed.model_spec.version_label.empty());
}

TEST(ModelSpec, MalformedIsRefused) {
  const std::string truncated = "\x0a\x05\x0a\x03re";
  ModelSpecView view;
  EXPECT_FALSE(PeekModelSpec(truncated.data(), truncated.size(), &view).ok());
}

// A TensorProto of DT_FLOAT [2, 3] with `values` in float_val (packed).
std::string FloatTensor(const std::vector<float>& values) {
  wire::StringWriter dim2, dim3, shape, tensor;
  dim2.Varint(1, 2);
  dim3.Varint(1, 3);
  shape.Bytes(2, dim2.str());
  shape.Bytes(2, dim3.str());
  tensor.Varint(1, 1);  // DT_FLOAT
  tensor.Bytes(2, shape.str());
  tensor.Bytes(5, std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float)));
  return tensor.str();
}

// Parses a request of one input "x"; the view points into *bytes, which must outlive it.
TfServingRequestView ParseOneInput(const std::string& tensor, std::string* bytes) {
  wire::StringWriter entry, request;
  entry.Bytes(1, "x");
  entry.Bytes(2, tensor);
  request.Bytes(2, entry.str());
  *bytes = request.str();
  TfServingRequestView view;
  EXPECT_TRUE(ParseTfServingPredictRequest(bytes->data(), bytes->size(), &view).ok());
  return view;
}

TEST(TensorProto, FewerValuesRepeatTheLastAsTensorFlowDoes) {
  std::string bytes;
  TfServingRequestView view = ParseOneInput(FloatTensor({1.5f, 2.5f}), &bytes);
  ASSERT_EQ(view.inputs.size(), 1u);
  const TensorProtoView& tensor = view.inputs[0].second;
  EXPECT_EQ(tensor.dims.size(), 2u);
  EXPECT_EQ(tensor.counts[tensor_proto::kFloatVal], 2);
  TensorPtr made;
  ASSERT_TRUE(MakeTensor(tensor, &made).ok());
  const float* data = static_cast<const float*>(TF_TensorData(made.get()));
  const float expected[] = {1.5f, 2.5f, 2.5f, 2.5f, 2.5f, 2.5f};
  EXPECT_EQ(0, std::memcmp(data, expected, sizeof(expected)));
}

TEST(TensorProto, MoreValuesThanTheShapeAreRefused) {
  std::string bytes;
  TfServingRequestView view = ParseOneInput(FloatTensor({1, 2, 3, 4, 5, 6, 7}), &bytes);
  TensorPtr made;
  const Status status = MakeTensor(view.inputs[0].second, &made);
  EXPECT_FALSE(status.ok());
  EXPECT_EQ(status.message(), "shape [2,3] holds 6 values but 7 were sent in float_val");
  EXPECT_FALSE(made);
}

}  // namespace
}  // namespace processor
