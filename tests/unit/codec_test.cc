// codec/predict_codec.h, stage by stage: parse (no copies), MakeTensor (one copy, checks), encode.
#include "codec/predict_codec.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "common/wire_format.h"

namespace processor {
namespace {

std::string Packed(const void* data, size_t bytes) { return std::string(static_cast<const char*>(data), bytes); }

// An ArrayProto of float32 [rows, cols] (dtype 1 = DT_FLOAT, value field 3, packed).
std::string FloatArray(const std::vector<int64_t>& dims, const std::vector<float>& values) {
  wire::StringWriter shape;
  std::string packed_dims;
  for (int64_t dim : dims) {
    wire::StringWriter one;
    one.Varint(1, static_cast<uint64_t>(dim));
    packed_dims += one.str().substr(1);
  }
  shape.Bytes(1, packed_dims);
  wire::StringWriter array;
  array.Varint(1, 1);
  array.Bytes(2, shape.str());
  array.Bytes(3, Packed(values.data(), 4 * values.size()));
  return array.str();
}

std::string Request(const std::vector<std::pair<std::string, std::string>>& inputs, const std::string& signature = "") {
  wire::StringWriter request;
  if (!signature.empty()) request.Bytes(1, signature);
  for (const auto& [name, array] : inputs) {
    wire::StringWriter entry;
    entry.Bytes(1, name);
    entry.Bytes(2, array);
    request.Bytes(2, entry.str());
  }
  return request.str();
}

TEST(PredictCodec, ParsesWithoutCopyingAndMakesTheTensorOnce) {
  const std::string bytes = Request({{"dense", FloatArray({2, 2}, {1, 2, 3, 4})}}, "serving_default");
  RequestView view;
  view.strings.Reset(bytes.size());
  ASSERT_TRUE(ParsePredictRequest(bytes.data(), bytes.size(), &view).ok());
  EXPECT_EQ(view.signature_name, "serving_default");
  ASSERT_EQ(view.inputs.size(), 1u);
  EXPECT_EQ(view.inputs[0].first, "dense");
  EXPECT_TRUE(view.inputs[0].first.data() >= bytes.data() && view.inputs[0].first.data() < bytes.data() + bytes.size());
  const ArrayView& array = view.inputs[0].second;
  EXPECT_EQ(array.dtype, TF_FLOAT);
  EXPECT_EQ(std::vector<int64_t>(array.dims.begin(), array.dims.end()), (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(array.counts[3], 4);

  TensorPtr tensor;
  ASSERT_TRUE(MakeTensor(array, &tensor).ok());
  ASSERT_EQ(TF_NumDims(tensor.get()), 2);
  const float* values = static_cast<const float*>(TF_TensorData(tensor.get()));
  EXPECT_EQ(std::vector<float>(values, values + 4), (std::vector<float>{1, 2, 3, 4}));
}

TEST(PredictCodec, MakeTensorChecksTheCountAgainstTheShape) {
  const std::string bytes = Request({{"dense", FloatArray({2, 3}, {1, 2, 3, 4})}});
  RequestView view;
  view.strings.Reset(bytes.size());
  ASSERT_TRUE(ParsePredictRequest(bytes.data(), bytes.size(), &view).ok());
  TensorPtr tensor;
  const Status status = MakeTensor(view.inputs[0].second, &tensor);
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "shape [2,3] needs 6 values but 4 were sent in float_val");
}

TEST(PredictCodec, ATruncatedRequestIsRefused) {
  const std::string bytes = Request({{"dense", FloatArray({2, 2}, {1, 2, 3, 4})}});
  RequestView view;
  view.strings.Reset(bytes.size());
  const Status status = ParsePredictRequest(bytes.data(), bytes.size() - 3, &view);
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
}

TEST(PredictCodec, EncodesWhatItWouldParse) {
  const int64_t dims[] = {3};
  TF_Tensor* tensor = TF_AllocateTensor(TF_FLOAT, dims, 1, 3 * sizeof(float));
  const float values[] = {0.5f, -1, 2};
  std::memcpy(TF_TensorData(tensor), values, sizeof values);
  OwnedTensors tensors;
  tensors.Reset(1);
  tensors.Set(0, TensorPtr(tensor));
  void* data = nullptr;
  int size = 0;
  ASSERT_TRUE(EncodePredictResponse({"prob"}, tensors, &data, &size).ok());
  const std::string response(static_cast<const char*>(data), size);
  std::free(data);
  // PredictResponse.outputs is field 1 as PredictRequest.inputs is field 2: read it back as a request.
  std::string as_request = response;
  as_request[0] = static_cast<char>(wire::Tag(2, wire::kLengthDelimited));
  RequestView view;
  view.strings.Reset(as_request.size());
  ASSERT_TRUE(ParsePredictRequest(as_request.data(), as_request.size(), &view).ok());
  ASSERT_EQ(view.inputs.size(), 1u);
  EXPECT_EQ(view.inputs[0].first, "prob");
  TensorPtr decoded;
  ASSERT_TRUE(MakeTensor(view.inputs[0].second, &decoded).ok());
  const float* read = static_cast<const float*>(TF_TensorData(decoded.get()));
  EXPECT_EQ(std::vector<float>(read, read + 3), std::vector<float>(values, values + 3));
}

}  // namespace
}  // namespace processor
