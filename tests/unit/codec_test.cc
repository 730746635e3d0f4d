// codec/predict_codec.h, stage by stage: parse (no copies), MakeTensor (one copy, checks), encode.
#include "codec/predict_codec.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "codec/packed_varints.h"
#include "codec/string_runs.h"
#include "common/wire_format.h"

#include <random>

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

// The SSE2 paths and the scalar ones (what a build without SSE2 runs) give the same answers.

std::string PackedVarints(const std::vector<uint64_t>& values) {
  std::string out;
  for (uint64_t value : values) wire::AppendVarint(&out, value);
  return out;
}

std::vector<uint64_t> MixedValues(std::mt19937_64& rng, size_t n) {
  std::vector<uint64_t> values(n);
  for (uint64_t& value : values) {
    switch (rng() % 4) {
      case 0: value = rng() % 128; break;           // one byte
      case 1: value = rng() % 16384; break;         // two
      case 2: value = rng() % (1ull << 35); break;  // five
      default: value = rng(); break;                // nine or ten: hashed ids
    }
  }
  return values;
}

TEST(PackedVarints, ScalarAndVectorPathsAgree) {
  std::mt19937_64 rng(7);
  for (size_t n : {0, 1, 7, 16, 63, 64, 65, 200, 1000}) {
    for (int trial = 0; trial < 20; ++trial) {
      const std::vector<uint64_t> values = trial % 2 ? MixedValues(rng, n) : std::vector<uint64_t>(n, rng() % 16384);
      const std::string packed = PackedVarints(values);
      int64_t scalar = 0, vector = 0;
      ASSERT_TRUE(codec::CountPackedVarints<false>(packed, &scalar).ok());
      ASSERT_TRUE(codec::CountPackedVarints<codec::kSse2>(packed, &vector).ok());
      EXPECT_EQ(scalar, static_cast<int64_t>(n));
      EXPECT_EQ(vector, static_cast<int64_t>(n));
      std::vector<uint64_t> decoded_scalar, decoded_vector;
      codec::ForEachPackedVarint<false>(packed, [&](uint64_t v) { decoded_scalar.push_back(v); });
      std::vector<int64_t> widened(n);
      codec::ForEachPackedVarint<codec::kSse2>(packed, codec::Int64Writer(widened.data(), static_cast<int64_t>(n)));
      decoded_vector.assign(widened.begin(), widened.end());
      EXPECT_EQ(decoded_scalar, values);
      EXPECT_EQ(decoded_vector, values);
    }
  }
}

TEST(PackedVarints, BothPathsRefuseAnElevenByteVarintAnywhere) {
  for (size_t at : {0, 5, 60, 64, 100}) {
    std::string packed = PackedVarints(std::vector<uint64_t>(120, 1));
    packed.insert(at, std::string(10, '\x80'));
    int64_t count = 0;
    EXPECT_FALSE(codec::CountPackedVarints<false>(packed, &count).ok()) << at;
    count = 0;
    EXPECT_FALSE(codec::CountPackedVarints<codec::kSse2>(packed, &count).ok()) << at;
  }
  int64_t count = 0;
  EXPECT_EQ(codec::CountPackedVarints<false>(std::string("\x01\x80", 2), &count).message(), "packed varints are truncated");
}

// Parses a run of string_val fields with one path; returns the strings staged.
template <bool kVector>
std::vector<std::string> StagedStrings(const std::string& run, int64_t* count) {
  wire::Reader reader(run);
  uint32_t field, wire_type;
  EXPECT_TRUE(reader.NextField(&field, &wire_type));
  StringStaging staging;
  staging.Reset(run.size());
  ArrayView array;
  codec::ParseStringRun<kVector>(reader, &staging, &array);
  EXPECT_TRUE(reader.ok());
  *count = array.counts[kStringVal];
  std::vector<std::string> staged;
  for (int64_t i = 0; i < array.staged_count; ++i) {
    staged.emplace_back(TF_TString_GetDataPointer(&array.staged_strings[i]), TF_TString_GetSize(&array.staged_strings[i]));
  }
  return staged;
}

TEST(StringRuns, ScalarAndVectorStagingAgree) {
  std::mt19937_64 rng(11);
  for (size_t n : {1, 5, 100, 700}) {
    std::string run;
    std::vector<std::string> strings;
    for (size_t i = 0; i < n; ++i) {
      strings.push_back(std::string(rng() % 23, static_cast<char>('a' + rng() % 26)));  // up to the inline capacity
      wire::StringWriter field;
      field.Bytes(kStringVal, strings.back());
      run += field.str();
    }
    int64_t scalar_count = 0, vector_count = 0;
    const std::vector<std::string> scalar = StagedStrings<false>(run, &scalar_count);
    const std::vector<std::string> vector = StagedStrings<codec::kSse2>(run, &vector_count);
    EXPECT_EQ(scalar_count, static_cast<int64_t>(n));
    EXPECT_EQ(vector_count, static_cast<int64_t>(n));
    EXPECT_EQ(scalar, strings);
    EXPECT_EQ(vector, strings);
  }
}

}  // namespace
}  // namespace processor
