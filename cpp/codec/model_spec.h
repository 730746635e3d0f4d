// TF Serving's ModelSpec (tensorflow_serving/apis/model.proto): which model, version and signature a
// request is for. Header-only and free of TensorFlow, so that the gRPC server (cpp/grpc_server), which
// routes requests without the engine's libraries, reads it with the engine's own rules.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/status.h"
#include "common/wire_format.h"

namespace processor {

// How the engine's message for a signature the model lacks begins (TF Serving's predict_util.cc words it
// 'Serving signature key "X" not found.'). TF Serving's code for it is FAILED_PRECONDITION, which the
// engine's HTTP-style codes cannot say: the gRPC server gives that code to a 400 with this message.
inline constexpr char kUnknownSignaturePrefix[] = "Serving signature key \"";

struct ModelSpecView {
  std::string_view name;
  std::string_view signature_name;
  std::string_view version_label;
  bool has_version = false;  // version (a google.protobuf.Int64Value) is set
  int64_t version = 0;
};

// Parses a serialized ModelSpec (merging into *spec, as protobuf merges a repeated message). Of
// version and version_label (a oneof), the later one counts. Fails with InvalidArgument when malformed.
inline Status ParseModelSpec(std::string_view bytes, ModelSpecView* spec) {
  wire::Reader r(bytes);
  uint32_t field, wire_type;
  while (r.NextField(&field, &wire_type)) {
    if (field == 1 && wire_type == wire::kLengthDelimited) {
      spec->name = r.LengthDelimited();
    } else if (field == 2 && wire_type == wire::kLengthDelimited) {  // google.protobuf.Int64Value
      wire::Reader value(r.LengthDelimited());
      spec->has_version = true;
      spec->version_label = {};  // one of version and version_label: the later one counts
      uint32_t f, w;
      while (value.NextField(&f, &w)) {
        if (f == 1 && w == wire::kVarint) spec->version = static_cast<int64_t>(value.Varint());
        else value.Skip(w);
      }
      if (!value.ok()) return Status::InvalidArgument("malformed model_spec.version");
    } else if (field == 3 && wire_type == wire::kLengthDelimited) {
      spec->signature_name = r.LengthDelimited();
    } else if (field == 4 && wire_type == wire::kLengthDelimited) {
      spec->version_label = r.LengthDelimited();
      spec->has_version = false;
      spec->version = 0;
    } else {
      r.Skip(wire_type);
    }
  }
  if (!r.ok()) return Status::InvalidArgument("malformed model_spec");
  return Status::Ok();
}

// Finds the ModelSpec (field 1) of a serialized PredictRequest, ClassificationRequest,
// RegressionRequest, GetModelMetadataRequest or GetModelStatusRequest, which all keep it there, without
// parsing the rest.
inline Status PeekModelSpec(const void* data, size_t size, ModelSpecView* spec) {
  *spec = {};
  wire::Reader r(data, size);
  uint32_t field, wire_type;
  while (r.NextField(&field, &wire_type)) {
    if (field == 1 && wire_type == wire::kLengthDelimited) {
      PROCESSOR_RETURN_IF_ERROR(ParseModelSpec(r.LengthDelimited(), spec));  // a repeated message merges
    } else {
      r.Skip(wire_type);
    }
  }
  if (!r.ok()) return Status::InvalidArgument("the request is not a valid protocol buffer");
  return Status::Ok();
}

}  // namespace processor
