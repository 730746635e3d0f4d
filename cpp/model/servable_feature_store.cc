// Servable, loading with a feature store: the rewritten graph, the dense variables alone, the tables
// (local, from the checkpoint or a Monolith dump, or in Redis), the SavedModel's init op.
#include <tensorflow/c/tf_tstring.h>

#include <unistd.h>

#include <algorithm>

#include "common/logging.h"
#include "common/quote.h"
#include "feature_store/embedding_variables.h"
#include "feature_store/lookup_op.h"
#include "feature_store/monolith_dump.h"
#if PROCESSOR_WITH_REDIS
#include "feature_store/redis_table.h"
#endif
#include "feature_store/table_registry.h"
#include "feature_store/tiered_table.h"
#include "model/graph_names.h"
#include "model/servable.h"

namespace processor {

namespace {

std::vector<std::string> OutputOps(const SignatureSpec& signature) {
  std::vector<std::string> ops;
  for (const TensorSpec& output : signature.outputs) {
    std::string op;
    int index = 0;
    if (ParseTensorName(output.tensor_name, &op, &index)) ops.push_back(op);
  }
  return ops;
}

// The other signatures are served where the main one's plan holds for them too: every embedding it
// serves from the store is still read by gathers alone (a signature reading a table whole, say, would
// read a variable never restored). One by one, each is planned with those accepted so far; the plan
// that covers them all (its gathers included) is the one the graph is rewritten with.
void PlanOtherSignatures(LoadPlan* load, std::vector<std::string> output_ops, const EmbeddingSelection& selection) {
  RewritePlan* plan = &load->rewrite;
  for (const auto& [name, signature] : load->meta_graph.signatures) {
    if (name == load->options.signature_name || name == kSavedModelInitOpSignature) continue;
    std::vector<std::string> wider_ops = output_ops;
    for (std::string& op : OutputOps(signature)) wider_ops.push_back(std::move(op));
    RewritePlan wider;
    Status status = PlanRewrite(load->meta_graph.graph_def, wider_ops, selection, &wider);
    for (const EmbeddingVariable& embedding : plan->embeddings) {
      const auto how = wider.not_gathered.find(embedding.name);
      if (how == wider.not_gathered.end()) continue;
      status = Status::InvalidArgument("it reads the feature store's variable " + Quote(embedding.name) +
                                       " otherwise than by gathering rows: " + how->second);
      break;
    }
    if (!status.ok()) {
      load->unserved_signatures[name] = status.message();
      continue;
    }
    *plan = std::move(wider);
    output_ops = std::move(wider_ops);
  }
}

}  // namespace

Status PlanEmbeddings(LoadPlan* load, std::string_view serialized) {
  const LoadOptions& options = load->options;
  MetaGraphSpec* meta_graph = &load->meta_graph;
  RewritePlan* plan = &load->rewrite;
  PROCESSOR_RETURN_IF_ERROR(ParseMetaGraph(serialized, meta_graph));
  auto signature = meta_graph->signatures.find(options.signature_name);
  if (signature == meta_graph->signatures.end()) {
    return Status::Internal(MissingSignatureMessage(*meta_graph, options.signature_name, options.savedmodel_dir));
  }
  std::vector<std::string> output_ops = OutputOps(signature->second);
  EmbeddingSelection selection = options.feature_store.selection;
  std::map<std::string, DeepRecEmbedding> evs;
  if (MentionsEmbeddingVariables(meta_graph->graph_def)) {
    std::vector<DeepRecEmbedding> found;
    PROCESSOR_RETURN_IF_ERROR_WITH_CONTEXT(
        RewriteEmbeddingVariables(meta_graph->graph_def, output_ops, &load->ev_graph_def, &found),
        "DeepRec EmbeddingVariables");
    meta_graph->graph_def = load->ev_graph_def;
    for (DeepRecEmbedding& ev : found) {
      selection.keyed_by_id.insert(ev.name);
      evs[ev.name] = std::move(ev);
    }
  }
  PROCESSOR_RETURN_IF_ERROR(
      PlanRewrite(meta_graph->graph_def, output_ops, selection, plan).WithContext("feature store"));
  PlanOtherSignatures(load, output_ops, selection);
  for (EmbeddingVariable& embedding : plan->embeddings) {
    auto ev = evs.find(embedding.name);
    if (ev != evs.end()) {
      embedding.default_value = ev->second.default_value;
      embedding.default_value_dim = ev->second.default_value_dim;
      embedding.key_dtype = ev->second.key_dtype;
      for (GatherSite& site : embedding.gathers) {
        auto tensor = ev->second.default_value_tensors.find(site.node);
        if (tensor != ev->second.default_value_tensors.end()) site.default_input = tensor->second;
      }
    }
    auto slice = meta_graph->saved_slices.find(embedding.name);
    if (ev != evs.end()) {
      embedding.saved_name = ev->second.saved_name;
    } else if (slice == meta_graph->saved_slices.end()) {
      embedding.saved_name = embedding.name;
    } else {
      embedding.saved_name = slice->second.full_name;
      embedding.shape_and_slice = slice->second.shape_and_slice;
      embedding.first_row = slice->second.first_row;
    }
  }
  return Status::Ok();
}

Status Servable::LoadWithFeatureStore(const LoadPlan& load, TF_SessionOptions* session_options) {
  const LoadOptions& options = load.options;
  const RewritePlan& plan = load.rewrite;
  feature_store_ = true;
  PROCESSOR_RETURN_IF_ERROR(RegisterEmbeddingLookupOp());
  std::map<std::string, std::string> keys;
  for (const EmbeddingVariable& embedding : plan.embeddings) {
    table_keys_.push_back(TableRegistry::Global().NewKey(embedding.name));
    keys[embedding.name] = table_keys_.back();
  }
  std::string rewritten;
  PROCESSOR_RETURN_IF_ERROR(RewriteGraph(load.meta_graph.graph_def, plan, keys, options.feature_store.selection.default_value,
                                         &rewritten));
  BufferPtr graph_def(TF_NewBufferFromString(rewritten.data(), rewritten.size()));
  std::unique_ptr<TF_ImportGraphDefOptions, CallDeleter<TF_DeleteImportGraphDefOptions>> import(TF_NewImportGraphDefOptions());
  TfStatus status;
  TF_GraphImportGraphDef(graph_.get(), graph_def.get(), import.get(), status.get());
  if (!status.ok()) return Status::Internal("cannot import the feature store's rewritten graph: " + status.message());
  session_ = TF_NewSession(graph_.get(), session_options, status.get());
  if (!status.ok()) {
    session_ = nullptr;
    return Status::Internal("cannot create a session: " + status.message());
  }
  const std::string prefix = options.checkpoint_prefix.empty() ? options.savedmodel_dir + "/variables/variables"
                                                               : options.checkpoint_prefix;
  if (!options.checkpoint_prefix.empty()) {
    PROCESSOR_RETURN_IF_ERROR(CheckCheckpointFits(Variables(), options.checkpoint_tensors));
  }
  std::vector<DeltaVariable> dense;
  for (const std::string& name : plan.dense_variables) {
    DeltaVariable variable{name, /*sparse=*/false};
    ReadFromSavedSlice(load.meta_graph.saved_slices, &variable);
    dense.push_back(std::move(variable));
  }
  PROCESSOR_RETURN_IF_ERROR_WITH_CONTEXT(delta_applier().Apply(prefix, dense), "restoring the dense variables");
  std::map<std::string, std::vector<float>> default_rows;
  PROCESSOR_RETURN_IF_ERROR(ComputeDefaultRows(plan, &default_rows));
  PROCESSOR_RETURN_IF_ERROR(LoadTables(options.feature_store, plan, prefix, keys, default_rows));
  return RunInitOp(load.meta_graph, options.savedmodel_dir);
}

Status Servable::LoadTables(const FeatureStoreOptions& options, const RewritePlan& plan, const std::string& prefix,
                            const std::map<std::string, std::string>& keys,
                            const std::map<std::string, std::vector<float>>& default_rows) {
  if (options.type == "redis") return ConnectRedisTables(options, plan, keys, default_rows);
  if (options.type != "local") return Status::InvalidArgument("unknown feature store type " + Quote(options.type));
  for (const auto& shards : options.monolith_shards) {
    const std::string& variable = shards.first;
    if (!std::any_of(plan.embeddings.begin(), plan.embeddings.end(),
                     [&variable](const EmbeddingVariable& e) { return e.name == variable; })) {
      return Status::InvalidArgument("Monolith table for " + Quote(variable) + ", which is not among the embeddings "
                                     "served from the feature store");
    }
  }
  std::vector<const EmbeddingVariable*> from_checkpoint;
  std::vector<std::string> names, slices;
  for (const EmbeddingVariable& embedding : plan.embeddings) {
    if (!options.tier_tables.empty()) {
      PROCESSOR_RETURN_IF_ERROR(OpenTieredTable(options, embedding, &local_tables_[embedding.name]));
      continue;
    }
    auto shards = options.monolith_shards.find(embedding.name);
    if (shards != options.monolith_shards.end()) {
      PROCESSOR_RETURN_IF_ERROR(LoadMonolithTable(embedding, shards->second, &local_tables_[embedding.name]));
      continue;
    }
    if (embedding.keyed_by_id) {
      PROCESSOR_RETURN_IF_ERROR(LoadEmbeddingVariableTable(embedding, prefix, &local_tables_[embedding.name]));
      continue;
    }
    from_checkpoint.push_back(&embedding);
    names.push_back(embedding.saved_name);
    slices.push_back(embedding.shape_and_slice);
  }
  std::vector<TensorPtr> tensors;
  if (!names.empty()) {
    PROCESSOR_RETURN_IF_ERROR_WITH_CONTEXT(
        delta_applier().Read(prefix, names, slices, std::vector<TF_DataType>(names.size(), TF_FLOAT), &tensors),
        "reading the embedding tables");
  }
  for (size_t i = 0; i < names.size(); ++i) {
    const EmbeddingVariable& embedding = *from_checkpoint[i];
    TF_Tensor* rows = tensors[i].get();
    if (TF_NumDims(rows) != 2 || TF_Dim(rows, 0) != embedding.rows || TF_Dim(rows, 1) != embedding.dim) {
      return Status::InvalidArgument("embedding " + Quote(embedding.name) + " in checkpoint " + Quote(prefix) +
                                     " does not have the graph's shape [" + std::to_string(embedding.rows) + ", " +
                                     std::to_string(embedding.dim) + "]");
    }
    local_tables_[embedding.name] = std::make_shared<DenseTable>(embedding.name, std::move(tensors[i]));
  }
  if (!options.tier_directory.empty()) rmdir(options.tier_directory.c_str());  // its files are open and unlinked
  for (const auto& [name, table] : local_tables_) {
    auto rows = default_rows.find(name);
    if (rows != default_rows.end()) table->SetDefaultRows(rows->second);
    TableRegistry::Global().Register(keys.at(name), table);
  }
  return Status::Ok();
}

Status Servable::OpenTieredTable(const FeatureStoreOptions& options, const EmbeddingVariable& embedding,
                                 std::shared_ptr<LocalTable>* table) {
  auto source = options.tier_tables.find(embedding.name);
  if (source == options.tier_tables.end()) {
    return Status::InvalidArgument("no disk tier for embedding " + Quote(embedding.name));
  }
  const FeatureStoreOptions::TierSource& tier = source->second;
  if (!embedding.keyed_by_id && !tier.keyed && tier.rows != embedding.rows) {
    return Status::InvalidArgument("the disk tier of embedding " + Quote(embedding.name) + " has " +
                                   std::to_string(tier.rows) + " rows, the graph " + std::to_string(embedding.rows));
  }
  std::unique_ptr<TierFile> file;
  PROCESSOR_RETURN_IF_ERROR_WITH_CONTEXT(TierFile::Open(tier.path, embedding.dim, tier.keyed, tier.rows, &file),
                                         "embedding " + Quote(embedding.name));
  const bool populated = file->populated();
  auto tiered = std::make_shared<TieredTable>(embedding.name, embedding.dim, std::move(file),
                                              static_cast<uint64_t>(options.tier_dram_bytes));
  const TierCounters counters = tiered->counters();
  Log(LogLevel::kInfo, "embedding " + Quote(embedding.name) + ": " + std::to_string(tier.rows) + " rows on disk (" +
                           std::to_string(counters.disk_bytes >> 20) + " MiB, " +
                           (populated ? "mapped whole" : "larger than half the free memory: mapped as read") +
                           "), up to " +
                           std::to_string(tiered->cache_rows()) + " in DRAM (" + std::to_string(counters.dram_bytes >> 20) +
                           " MiB)");
  *table = std::move(tiered);
  return Status::Ok();
}

TierReport Servable::Tiers() const {
  TierReport report;
  for (const auto& [name, table] : local_tables_) {
    if (auto* tiered = dynamic_cast<const TieredTable*>(table.get())) report.tables.emplace_back(name, tiered->counters());
  }
#if PROCESSOR_WITH_REDIS
  for (const auto& [name, table] : redis_tables_) {
    auto* redis = static_cast<const RedisTable*>(table.get());
    if (redis->cached()) report.tables.emplace_back(name, redis->counters());
  }
#endif
  return report;
}

void Servable::ForgetRows(const std::string& variable, const int64_t* ids, size_t n) const {
#if PROCESSOR_WITH_REDIS
  for (const auto& [name, table] : redis_tables_) {
    if (!variable.empty() && name != variable) continue;
    auto* redis = static_cast<const RedisTable*>(table.get());
    if (ids != nullptr) redis->Forget(ids, n);
    else redis->ForgetAll();
  }
#else
  (void)variable, (void)ids, (void)n;
#endif
}

Status Servable::LoadEmbeddingVariableTable(const EmbeddingVariable& embedding, const std::string& prefix,
                                            std::shared_ptr<LocalTable>* table) {
  // DeepRec's checkpoint of an EV (embedding_var_ckpt_data.cc, ExportToCkpt): <name>-keys [n] and
  // <name>-values [n, dim] are the rows it admitted; the filtered keys, versions and freqs are not served.
  std::vector<TensorPtr> tensors;
  PROCESSOR_RETURN_IF_ERROR_WITH_CONTEXT(
      delta_applier().Read(prefix, {embedding.saved_name + "-keys", embedding.saved_name + "-values"}, {"", ""},
                           {embedding.key_dtype, TF_FLOAT}, &tensors),
      "reading EmbeddingVariable " + Quote(embedding.name));
  TF_Tensor* keys = tensors[0].get();
  TF_Tensor* values = tensors[1].get();
  const int64_t n = TF_NumDims(keys) == 1 ? TF_Dim(keys, 0) : -1;
  if (n < 0 || TF_NumDims(values) != 2 || TF_Dim(values, 0) != n || TF_Dim(values, 1) != embedding.dim) {
    return Status::InvalidArgument("EmbeddingVariable " + Quote(embedding.name) + " in checkpoint " + Quote(prefix) +
                                   " does not hold [n] keys and [n, " + std::to_string(embedding.dim) + "] values");
  }
  std::vector<int64_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    ids[i] = embedding.key_dtype == TF_INT32 ? static_cast<const int32_t*>(TF_TensorData(keys))[i]
                                             : static_cast<const int64_t*>(TF_TensorData(keys))[i];
  }
  auto hashed = std::make_shared<HashedTable>(embedding.name, embedding.dim);
  PROCESSOR_RETURN_IF_ERROR(hashed->WriteRows(ids.data(), ids.size(), static_cast<const float*>(TF_TensorData(values))));
  Log(LogLevel::kInfo, "EmbeddingVariable " + Quote(embedding.name) + ": " + std::to_string(n) + " rows");
  *table = std::move(hashed);
  return Status::Ok();
}

// In one session run, as DeepRec runs its EVs' initializers together: EVs (the parts of a partitioned
// one) sharing a random initializer get the same sample of it.
Status Servable::ComputeDefaultRows(const RewritePlan& plan, std::map<std::string, std::vector<float>>* rows) {
  std::vector<std::string> tensors;  // distinct, in the order of the embeddings
  std::vector<TF_Output> ports;
  for (const EmbeddingVariable& embedding : plan.embeddings) {
    if (embedding.default_value.empty() ||
        std::find(tensors.begin(), tensors.end(), embedding.default_value) != tensors.end()) {
      continue;
    }
    TF_Output port;
    PROCESSOR_RETURN_IF_ERROR_WITH_CONTEXT(ResolvePort(graph_.get(), embedding.default_value, &port),
                                           "the default values of EmbeddingVariable " + Quote(embedding.name));
    tensors.push_back(embedding.default_value);
    ports.push_back(port);
  }
  if (ports.empty()) return Status::Ok();
  OwnedTensors values;
  values.Reset(ports.size());
  TfStatus status;
  TF_SessionRun(session_, update_run_options_.get(), nullptr, nullptr, 0, ports.data(), values.data(),
                static_cast<int>(ports.size()), nullptr, 0, nullptr, status.get());
  if (!status.ok()) return Status::Internal("cannot compute the EmbeddingVariables' default values: " + status.message());
  for (const EmbeddingVariable& embedding : plan.embeddings) {
    if (embedding.default_value.empty()) continue;
    const size_t i = std::find(tensors.begin(), tensors.end(), embedding.default_value) - tensors.begin();
    TF_Tensor* value = values.data()[i];
    const int64_t count = TF_TensorElementCount(value);
    if (TF_TensorType(value) != TF_FLOAT || count == 0 || count % embedding.dim != 0) {
      return Status::InvalidArgument("the default values of EmbeddingVariable " + Quote(embedding.name) +
                                     " are not rows of " + std::to_string(embedding.dim) + " floats");
    }
    const float* data = static_cast<const float*>(TF_TensorData(value));
    (*rows)[embedding.name].assign(data, data + count);
  }
  return Status::Ok();
}

Status Servable::LoadMonolithTable(const EmbeddingVariable& embedding, const std::vector<std::string>& shards,
                                   std::shared_ptr<LocalTable>* table) {
  auto hashed = std::make_shared<HashedTable>(embedding.name, embedding.dim);
  constexpr size_t kBlockEntries = 8192;
  std::vector<int64_t> ids;
  std::vector<float> numbers;
  for (const std::string& path : shards) {
    std::unique_ptr<MonolithShardReader> reader;
    PROCESSOR_RETURN_IF_ERROR(MonolithShardReader::Open(path, &reader));
    do {
      ids.clear();
      numbers.clear();
      PROCESSOR_RETURN_IF_ERROR(reader->Read(kBlockEntries, &ids, &numbers));
      if (!ids.empty() && reader->dim() != embedding.dim) {
        return Status::InvalidArgument("Monolith shard " + Quote(path) + " has rows of " + std::to_string(reader->dim()) +
                                       " numbers, embedding " + Quote(embedding.name) + " of " +
                                       std::to_string(embedding.dim));
      }
      PROCESSOR_RETURN_IF_ERROR(hashed->WriteRows(ids.data(), ids.size(), numbers.data()));
    } while (!ids.empty());
  }
  Log(LogLevel::kInfo, "embedding " + Quote(embedding.name) + ": " + std::to_string(hashed->rows()) +
                           " rows from " + std::to_string(shards.size()) + " Monolith shard(s)");
  *table = std::move(hashed);
  return Status::Ok();
}

Status Servable::ConnectRedisTables(const FeatureStoreOptions& options, const RewritePlan& plan,
                                    const std::map<std::string, std::string>& keys,
                                    const std::map<std::string, std::vector<float>>& default_rows) {
#if !PROCESSOR_WITH_REDIS
  return Status::InvalidArgument("this build of Processor has no Redis feature store: install hiredis "
                                 "(apt-get install libhiredis-dev) and rebuild");
#else
  if (options.token.empty() || options.redis_versions_key.empty()) {
    return Status::InvalidArgument("the tables' import in Redis (its token and versions key) is required to load from Redis");
  }
  std::shared_ptr<RedisRouter> router;
  PROCESSOR_RETURN_IF_ERROR(RedisRouter::Connect(options.redis, &router));
  // Serve only a complete version (the importer's marker), whatever the control plane believes.
  RedisRouter::Lease lease;
  PROCESSOR_RETURN_IF_ERROR(router->Borrow(router->NodeFor(options.redis_versions_key), &lease));
  ReplyPtr marker;
  PROCESSOR_RETURN_IF_ERROR(lease->Command({"ZSCORE", options.redis_versions_key, std::to_string(options.version)}, &marker));
  if (marker->type != REDIS_REPLY_STRING) {
    return Status::Unavailable("version " + std::to_string(options.version) + " is not complete in Redis (" +
                               Quote(options.redis_versions_key) + ")");
  }
  for (const EmbeddingVariable& embedding : plan.embeddings) {
    auto prefix = options.redis_key_prefixes.find(embedding.name);
    if (prefix == options.redis_key_prefixes.end()) {
      return Status::InvalidArgument("no table in Redis for embedding " + Quote(embedding.name));
    }
    auto table = std::make_shared<RedisTable>(embedding.name, embedding.dim, prefix->second, options.partitions,
                                              options.token, router);
    auto rows = default_rows.find(embedding.name);
    if (rows != default_rows.end()) table->SetDefaultRows(rows->second);
    // The cache's bytes are shared evenly among the version's tables.
    table->UseCache(static_cast<uint64_t>(options.cache_bytes) / plan.embeddings.size());
    redis_tables_[embedding.name] = table;
    TableRegistry::Global().Register(keys.at(embedding.name), std::move(table));
  }
  return Status::Ok();
#endif
}

Status Servable::RunInitOp(const MetaGraphSpec& meta_graph, const std::string& savedmodel_dir) {
  if (meta_graph.init_op.empty()) return Status::Ok();
  return RunTargets({meta_graph.init_op}, "the SavedModel's init op", meta_graph, savedmodel_dir);
}

}  // namespace processor
