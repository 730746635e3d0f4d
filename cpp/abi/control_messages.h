// The control plane's messages (protos/control.proto), read and written with the wire reader: the one
// place the data plane spells their field numbers. Every reader is strict: a field it does not know, or
// one of another wire type, fails the message with a message naming both, so that a field added to the
// .proto and not here fails tests/test_control_messages.py instead of being dropped.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "model/checkpoint_fit.h"
#include "model/servable.h"

namespace processor::control {

// LoadRequest: everything but the feature store's table sources (step 2).
Status ParseLoadRequest(std::string_view bytes, LoadOptions* options);
// TableSources, into the options' feature store.
Status ParseTableSources(std::string_view bytes, FeatureStoreOptions* store);
Status ParseSessionSettings(std::string_view bytes, SessionSettings* settings);
Status ParseRestoreRequest(std::string_view bytes, std::string* checkpoint_prefix, std::vector<SavedTensor>* tensors);

std::string EncodeEmbeddingPlan(const std::vector<EmbeddingVariable>& embeddings);
std::string EncodeVariableList(const std::vector<VariableSpec>& variables);

}  // namespace processor::control
