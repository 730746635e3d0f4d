#include "abi/control_messages.h"

#include <cstring>

#include "common/wire_format.h"

namespace processor::control {
namespace {

// Reads one message's fields strictly (see the header).
class MessageReader {
 public:
  MessageReader(std::string_view bytes, const char* message) : reader_(bytes), message_(message) {}

  bool Next() { return error_.empty() && reader_.NextField(&field_, &wire_type_); }
  uint32_t field() const { return field_; }

  int64_t Int() { return Expect(wire::kVarint) ? static_cast<int64_t>(reader_.Varint()) : 0; }
  int32_t Int32() { return static_cast<int32_t>(Int()); }
  bool Bool() { return Int() != 0; }
  float Float() {
    if (!Expect(wire::kFixed32)) return 0;
    const std::string_view bytes = reader_.Fixed(4);
    float value = 0;
    if (bytes.size() == 4) std::memcpy(&value, bytes.data(), 4);
    return value;
  }
  std::string_view Bytes() { return Expect(wire::kLengthDelimited) ? reader_.LengthDelimited() : std::string_view(); }
  std::string String() { return std::string(Bytes()); }
  // A repeated int64, packed (proto3's way) or one value per field.
  void AppendInts(std::vector<int64_t>* values) {
    if (wire_type_ != wire::kLengthDelimited) {
      values->push_back(Int());
      return;
    }
    wire::Reader packed(reader_.LengthDelimited());
    while (packed.ok() && packed.remaining() > 0) values->push_back(static_cast<int64_t>(packed.Varint()));
    if (!packed.ok()) reader_.MarkMalformed();
  }
  void Unknown() { Fail("field " + std::to_string(field_) + " is unknown to this data plane"); }

  Status Finish() {
    if (error_.empty() && !reader_.ok()) error_ = "it is malformed";
    if (error_.empty()) return Status::Ok();
    return Status::InvalidArgument(std::string("control message ") + message_ + ": " + error_ +
                                   " (protos/control.proto and cpp/abi/control_messages.cc out of step?)");
  }

 private:
  bool Expect(uint32_t wire_type) {
    if (wire_type_ == wire_type) return true;
    Fail("field " + std::to_string(field_) + " has wire type " + std::to_string(wire_type_) + ", not " +
         std::to_string(wire_type));
    return false;
  }
  void Fail(std::string error) {
    if (error_.empty()) error_ = std::move(error);
  }

  wire::Reader reader_;
  const char* message_;
  uint32_t field_ = 0, wire_type_ = 0;
  std::string error_;
};

Status ParseSavedTensor(std::string_view bytes, SavedTensor* tensor) {
  MessageReader m(bytes, "SavedTensor");
  while (m.Next()) {
    switch (m.field()) {
      case 1: tensor->name = m.String(); break;
      case 2: tensor->dtype = m.Int32(); break;
      case 3: m.AppendInts(&tensor->shape); break;
      default: m.Unknown();
    }
  }
  return m.Finish();
}

Status ParseFeatureStore(std::string_view bytes, FeatureStoreOptions* store) {
  MessageReader m(bytes, "FeatureStore");
  std::string redis_url;
  while (m.Next()) {
    switch (m.field()) {
      case 1: store->type = m.String(); break;
      case 2: store->selection.names.push_back(m.String()); break;
      case 3: store->selection.min_rows = m.Int(); break;
      case 4: store->selection.default_value = m.Float(); break;
      case 5: redis_url = m.String(); break;
      case 6: store->redis.password = m.String(); break;
      case 7: store->redis.connections_per_node = m.Int32(); break;
      case 8: store->cache_bytes = m.Int(); break;
      default: m.Unknown();
    }
  }
  PROCESSOR_RETURN_IF_ERROR(m.Finish());
  if (store->type.empty()) return Status::InvalidArgument("feature_store_type is required with a feature store");
  if (store->type != "local" && store->type != "redis") {
    return Status::InvalidArgument("unknown feature_store_type '" + store->type + "'");
  }
  if (store->type == "redis") {
    if (redis_url.empty()) return Status::InvalidArgument("redis_url is required with feature_store_type 'redis'");
    PROCESSOR_RETURN_IF_ERROR(ParseRedisUrl(redis_url, &store->redis.seeds));
    if (store->redis.connections_per_node < 1) return Status::InvalidArgument("read_thread_num must be >= 1");
  }
  if (store->cache_bytes < 0) return Status::InvalidArgument("feature_store_cache_bytes must be >= 0");
  return Status::Ok();
}

}  // namespace

Status ParseSessionSettings(std::string_view bytes, SessionSettings* settings) {
  MessageReader m(bytes, "SessionSettings");
  std::string policy;
  while (m.Next()) {
    switch (m.field()) {
      case 1: settings->intra_op_parallelism_threads = m.Int32(); break;
      case 2: settings->inter_op_parallelism_threads = m.Int32(); break;
      case 3: settings->session_num = m.Int32(); break;
      case 4: policy = m.String(); break;
      case 5: settings->use_per_session_threads = m.Bool(); break;
      case 6: settings->enable_inline_execute = m.Bool(); break;
      case 7: settings->model_update_inter_threads = m.Int32(); break;
      default: m.Unknown();
    }
  }
  PROCESSOR_RETURN_IF_ERROR(m.Finish());
  if (settings->session_num == 0) settings->session_num = 1;
  if (settings->session_num < 1) return Status::InvalidArgument("session_num must be >= 1");
  if (!policy.empty() && policy != "MOD" && policy != "RR") {
    return Status::InvalidArgument("select_session_policy is '" + policy + "', not MOD or RR");
  }
  settings->select_session_policy = policy == "RR" ? SessionPolicy::kRoundRobin : SessionPolicy::kMod;
  return Status::Ok();
}

Status ParseBatching(std::string_view bytes, BatchingOptions* batching) {
  MessageReader m(bytes, "Batching");
  while (m.Next()) {
    switch (m.field()) {
      case 1: batching->enabled = m.Bool(); break;
      case 2: batching->max_batch_size = m.Int(); break;
      case 3: batching->batch_timeout_micros = m.Int(); break;
      case 4: batching->max_enqueued_batches = m.Int(); break;
      case 5: batching->num_batch_threads = m.Int32(); break;
      case 6: m.AppendInts(&batching->allowed_batch_sizes); break;
      default: m.Unknown();
    }
  }
  PROCESSOR_RETURN_IF_ERROR(m.Finish());
  if (batching->max_batch_size < 1 || batching->batch_timeout_micros < 0 || batching->max_enqueued_batches < 1 ||
      batching->num_batch_threads < 0) {
    return Status::InvalidArgument("batching: max_batch_size and max_enqueued_batches must be >= 1, "
                                   "batch_timeout_micros and num_batch_threads >= 0");
  }
  return Status::Ok();
}

Status ParseLoadRequest(std::string_view bytes, LoadOptions* options) {
  MessageReader m(bytes, "LoadRequest");
  std::vector<std::string> tags;
  while (m.Next()) {
    switch (m.field()) {
      case 1: options->savedmodel_dir = m.String(); break;
      case 2: options->signature_name = m.String(); break;
      case 3: tags.push_back(m.String()); break;
      case 4: options->checkpoint_prefix = m.String(); break;
      case 5: PROCESSOR_RETURN_IF_ERROR(ParseSavedTensor(m.Bytes(), &options->checkpoint_tensors.emplace_back())); break;
      case 6: PROCESSOR_RETURN_IF_ERROR(ParseSessionSettings(m.Bytes(), &options->session)); break;
      case 7: PROCESSOR_RETURN_IF_ERROR(ParseFeatureStore(m.Bytes(), &options->feature_store)); break;
      case 8: options->strict_signature_name = m.Bool(); break;
      case 9: PROCESSOR_RETURN_IF_ERROR(ParseBatching(m.Bytes(), &options->batching)); break;
      default: m.Unknown();
    }
  }
  PROCESSOR_RETURN_IF_ERROR(m.Finish());
  if (!tags.empty()) options->tags = std::move(tags);
  if (options->signature_name.empty()) options->signature_name = "serving_default";
  if (options->savedmodel_dir.empty()) return Status::InvalidArgument("savedmodel_dir is required");
  return Status::Ok();
}

Status ParseTableSources(std::string_view bytes, FeatureStoreOptions* store) {
  MessageReader m(bytes, "TableSources");
  while (m.Next()) {
    switch (m.field()) {
      case 1: {
        MessageReader table(m.Bytes(), "MonolithTable");
        std::string variable;
        std::vector<std::string> shards;
        while (table.Next()) {
          switch (table.field()) {
            case 1: variable = table.String(); break;
            case 2: shards.push_back(table.String()); break;
            default: table.Unknown();
          }
        }
        PROCESSOR_RETURN_IF_ERROR(table.Finish());
        store->monolith_shards[variable] = std::move(shards);
        break;
      }
      case 2: {
        MessageReader table(m.Bytes(), "RedisTable");
        std::string variable, key_prefix;
        while (table.Next()) {
          switch (table.field()) {
            case 1: variable = table.String(); break;
            case 2: key_prefix = table.String(); break;
            default: table.Unknown();
          }
        }
        PROCESSOR_RETURN_IF_ERROR(table.Finish());
        store->redis_key_prefixes[variable] = std::move(key_prefix);
        break;
      }
      case 3: store->redis_versions_key = m.String(); break;
      case 4: store->version = m.Int(); break;
      case 5: store->partitions = m.Int32(); break;
      case 6: store->token = m.String(); break;
      case 7: {
        MessageReader table(m.Bytes(), "TierTable");
        std::string variable;
        FeatureStoreOptions::TierSource source;
        while (table.Next()) {
          switch (table.field()) {
            case 1: variable = table.String(); break;
            case 2: source.path = table.String(); break;
            case 3: source.keyed = table.Bool(); break;
            case 4: source.rows = table.Int(); break;
            default: table.Unknown();
          }
        }
        PROCESSOR_RETURN_IF_ERROR(table.Finish());
        store->tier_tables[variable] = std::move(source);
        break;
      }
      case 8: store->tier_dram_bytes = m.Int(); break;
      case 9: store->tier_directory = m.String(); break;
      default: m.Unknown();
    }
  }
  PROCESSOR_RETURN_IF_ERROR(m.Finish());
  if (store->partitions < 1) return Status::InvalidArgument("redis_partitions must be >= 1");
  if (store->tier_dram_bytes < 0) return Status::InvalidArgument("tier_dram_bytes must be >= 0");
  return Status::Ok();
}

Status ParseRestoreRequest(std::string_view bytes, std::string* checkpoint_prefix, std::vector<SavedTensor>* tensors) {
  MessageReader m(bytes, "RestoreRequest");
  while (m.Next()) {
    switch (m.field()) {
      case 1: *checkpoint_prefix = m.String(); break;
      case 2: PROCESSOR_RETURN_IF_ERROR(ParseSavedTensor(m.Bytes(), &tensors->emplace_back())); break;
      default: m.Unknown();
    }
  }
  PROCESSOR_RETURN_IF_ERROR(m.Finish());
  if (checkpoint_prefix->empty()) return Status::InvalidArgument("checkpoint_prefix is required");
  return Status::Ok();
}

namespace {

void PutInt(wire::StringWriter* w, uint32_t field, int64_t value) {
  if (value) w->Varint(field, static_cast<uint64_t>(value));
}
void PutString(wire::StringWriter* w, uint32_t field, const std::string& value) {
  if (!value.empty()) w->Bytes(field, value);
}

}  // namespace

std::string EncodeEmbeddingPlan(const std::vector<EmbeddingVariable>& embeddings) {
  wire::StringWriter plan;
  for (const EmbeddingVariable& embedding : embeddings) {
    wire::StringWriter e;
    PutString(&e, 1, embedding.name);
    PutInt(&e, 2, embedding.rows);
    PutInt(&e, 3, embedding.dim);
    PutString(&e, 4, embedding.saved_name);
    PutInt(&e, 5, embedding.first_row);
    PutInt(&e, 6, embedding.keyed_by_id);
    plan.Bytes(1, e.str());
  }
  return plan.str();
}

std::string EncodeVariableList(const std::vector<VariableSpec>& variables) {
  wire::StringWriter list;
  for (const VariableSpec& variable : variables) {
    wire::StringWriter v;
    PutString(&v, 1, variable.name);
    PutInt(&v, 2, variable.dtype);
    PutInt(&v, 3, variable.known_rank);
    std::string dims;
    for (int64_t dim : variable.shape) wire::AppendVarint(&dims, static_cast<uint64_t>(dim));
    PutString(&v, 4, dims);  // packed
    PutString(&v, 5, variable.saved_name);
    list.Bytes(1, v.str());
  }
  return list.str();
}

}  // namespace processor::control
