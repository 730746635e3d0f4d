// The op a feature-store graph rewrite puts in place of each embedding gather:
//
//   ProcessorEmbeddingLookup(ids: Tindices, default_row: float [dim]) -> rows: float, shape ids + [dim]
//   attrs: Tindices in {int32, int64}; table: the TableRegistry key of the table to read
//
// Registered with TensorFlow's C op and kernel API (CPU), once per process.
#pragma once

#include "common/status.h"

namespace processor {

inline constexpr char kEmbeddingLookupOp[] = "ProcessorEmbeddingLookup";

Status RegisterEmbeddingLookupOp();

}  // namespace processor
