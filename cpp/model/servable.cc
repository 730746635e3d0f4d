#include "model/servable.h"

#include <tensorflow/c/tf_tstring.h>

#include <cstdlib>
#include <shared_mutex>

#include "common/json_writer.h"
#include "common/quote.h"
#include "feature_store/lookup_op.h"
#if PROCESSOR_WITH_REDIS
#include "feature_store/redis_table.h"
#endif
#include "feature_store/table_registry.h"

namespace processor {
namespace {

// "op:1" -> ("op", 1); "op" -> ("op", 0).
bool ParseTensorName(const std::string& name, std::string* op, int* index) {
  const size_t colon = name.rfind(':');
  if (colon == std::string::npos) {
    *op = name;
    *index = 0;
    return !name.empty();
  }
  *op = name.substr(0, colon);
  char* end = nullptr;
  const long value = std::strtol(name.c_str() + colon + 1, &end, 10);
  *index = static_cast<int>(value);
  return !op->empty() && end && *end == '\0' && value >= 0;
}

Status ResolvePort(TF_Graph* graph, const std::string& tensor_name, TF_Output* port) {
  std::string op_name;
  int index = 0;
  if (!ParseTensorName(tensor_name, &op_name, &index)) return Status::Internal("bad tensor name '" + tensor_name + "'");
  TF_Operation* op = TF_GraphOperationByName(graph, op_name.c_str());
  if (!op || index >= TF_OperationNumOutputs(op)) return Status::Internal("the graph has no tensor '" + tensor_name + "'");
  *port = TF_Output{op, index};
  return Status::Ok();
}

void AppendTensorsJson(std::string* out, const std::vector<BoundTensor>& tensors) {
  out->push_back('[');
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorSpec& spec = tensors[i].spec;
    if (i) out->push_back(',');
    out->append("{\"alias\":");
    AppendJsonString(out, spec.alias);
    out->append(",\"name\":");
    AppendJsonString(out, spec.tensor_name);
    out->append(",\"dtype\":");
    AppendJsonString(out, DataTypeName(spec.dtype));
    out->append(",\"shape\":");
    if (spec.unknown_rank) {
      out->append("null");
    } else {
      out->push_back('[');
      for (size_t d = 0; d < spec.dims.size(); ++d) out->append((d ? "," : "") + std::to_string(spec.dims[d]));
      out->push_back(']');
    }
    out->push_back('}');
  }
  out->push_back(']');
}

std::string MissingSignature(const MetaGraphSpec& meta_graph, const std::string& signature_name,
                             const std::string& savedmodel_dir) {
  std::string available;
  for (const auto& [name, unused] : meta_graph.signatures) available += (available.empty() ? "'" : ", '") + name + "'";
  return "SavedModel '" + savedmodel_dir + "' has no signature '" + signature_name + "' (it has: " +
         (available.empty() ? "none" : available) + ")";
}

}  // namespace

std::atomic<int64_t> Servable::live_count_{0};

Status Servable::Load(const LoadOptions& options, std::shared_ptr<Servable>* servable) {
  std::shared_ptr<Servable> s(new Servable());
  SessionOptionsPtr session_options;
  PROCESSOR_RETURN_IF_ERROR(MakeSessionOptions(options.session, &session_options));

  auto run_options = [](int pool, bool full_trace = false) {
    const std::string encoded = EncodeRunOptions(pool, full_trace);
    return BufferPtr(TF_NewBufferFromString(encoded.data(), encoded.size()));
  };
  s->update_run_options_ = run_options(UpdatePoolIndex(options.session));
  if (options.session.inline_execute) {
    s->serving_run_options_.push_back(run_options(-1));  // -1: the caller's thread
  } else if (options.session.session_num == 1) {
    s->serving_run_options_.emplace_back();  // no RunOptions: pool 0 is TF's default, and nothing to parse per run
  } else {
    for (int pool = 0; pool < options.session.session_num; ++pool) s->serving_run_options_.push_back(run_options(pool));
  }
  s->policy_ = options.session.policy;
  s->traced_run_options_ = run_options(options.session.inline_execute ? -1 : 0, /*full_trace=*/true);
  s->graph_.reset(TF_NewGraph());
  std::string meta_graph_bytes;
  MetaGraphSpec meta_graph;
  if (options.feature_store.type.empty()) {
    PROCESSOR_RETURN_IF_ERROR(s->LoadSavedModel(options, session_options.get(), &meta_graph_bytes, &meta_graph));
  } else {
    PROCESSOR_RETURN_IF_ERROR(s->LoadWithFeatureStore(options, session_options.get(), &meta_graph_bytes, &meta_graph));
  }

  s->signature_name_ = options.signature_name;
  PROCESSOR_RETURN_IF_ERROR(s->BindSignature(meta_graph, options.savedmodel_dir));
  s->saver_ = meta_graph.saver;
  if (!options.checkpoint_prefix.empty() && !s->feature_store_) PROCESSOR_RETURN_IF_ERROR(s->Restore(options.checkpoint_prefix));
  // Initializers are idempotent for the same data, so running them after the SavedModel's own init op
  // is safe, and it covers graphs that register tables without one.
  PROCESSOR_RETURN_IF_ERROR(s->RunTargets(meta_graph.table_initializers, "table initializers"));
  *servable = std::move(s);
  return Status::Ok();
}

Status Servable::LoadSavedModel(const LoadOptions& options, TF_SessionOptions* session_options, std::string* bytes,
                                MetaGraphSpec* meta_graph) {
  std::vector<const char*> tags;
  for (const std::string& tag : options.tags) tags.push_back(tag.c_str());
  BufferPtr meta_graph_buffer(TF_NewBuffer());
  TfStatus status;
  session_ = TF_LoadSessionFromSavedModel(session_options, update_run_options_.get(), options.savedmodel_dir.c_str(),
                                          tags.data(), static_cast<int>(tags.size()), graph_.get(),
                                          meta_graph_buffer.get(), status.get());
  if (!status.ok()) {
    session_ = nullptr;
    return Status::Internal("cannot load SavedModel '" + options.savedmodel_dir + "': " + status.message());
  }
  bytes->assign(static_cast<const char*>(meta_graph_buffer->data), meta_graph_buffer->length);
  return ParseMetaGraph(*bytes, meta_graph);
}

Status PlanEmbeddings(const LoadOptions& options, std::string* bytes, MetaGraphSpec* meta_graph, RewritePlan* plan) {
  std::string_view serialized;
  PROCESSOR_RETURN_IF_ERROR(ReadSavedModelMetaGraph(options.savedmodel_dir, options.tags, bytes, &serialized));
  PROCESSOR_RETURN_IF_ERROR(ParseMetaGraph(serialized, meta_graph));
  auto signature = meta_graph->signatures.find(options.signature_name);
  if (signature == meta_graph->signatures.end()) {
    return Status::Internal(MissingSignature(*meta_graph, options.signature_name, options.savedmodel_dir));
  }
  std::vector<std::string> output_ops;
  for (const TensorSpec& output : signature->second.outputs) {
    std::string op;
    int index = 0;
    if (ParseTensorName(output.tensor_name, &op, &index)) output_ops.push_back(op);
  }
  return PlanRewrite(meta_graph->graph_def, output_ops, options.feature_store.selection, plan).WithContext("feature store");
}

Status Servable::LoadWithFeatureStore(const LoadOptions& options, TF_SessionOptions* session_options, std::string* bytes,
                                      MetaGraphSpec* meta_graph) {
  feature_store_ = true;
  PROCESSOR_RETURN_IF_ERROR(RegisterEmbeddingLookupOp());
  RewritePlan plan;
  PROCESSOR_RETURN_IF_ERROR(PlanEmbeddings(options, bytes, meta_graph, &plan));
  std::map<std::string, std::string> keys;
  for (const EmbeddingVariable& embedding : plan.embeddings) {
    table_keys_.push_back(TableRegistry::Global().NewKey(embedding.name));
    keys[embedding.name] = table_keys_.back();
  }
  std::string rewritten;
  PROCESSOR_RETURN_IF_ERROR(RewriteGraph(meta_graph->graph_def, plan, keys, options.feature_store.selection.default_value,
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
  std::vector<DeltaVariable> dense;
  for (const std::string& name : plan.dense_variables) dense.push_back(DeltaVariable{name, /*sparse=*/false});
  PROCESSOR_RETURN_IF_ERROR_WITH_CONTEXT(delta_applier().Apply(prefix, dense), "restoring the dense variables");
  PROCESSOR_RETURN_IF_ERROR(LoadTables(options.feature_store, plan, prefix, keys));
  return RunInitOp(*meta_graph, options.savedmodel_dir);
}

Status Servable::LoadTables(const FeatureStoreOptions& options, const RewritePlan& plan, const std::string& prefix,
                            const std::map<std::string, std::string>& keys) {
  if (options.type == "redis") return ConnectRedisTables(options, plan, keys);
  if (options.type != "local") return Status::InvalidArgument("unknown feature store type " + Quote(options.type));
  std::vector<std::string> names;
  for (const EmbeddingVariable& embedding : plan.embeddings) names.push_back(embedding.name);
  std::vector<TensorPtr> tensors;
  PROCESSOR_RETURN_IF_ERROR_WITH_CONTEXT(
      delta_applier().Read(prefix, names, std::vector<TF_DataType>(names.size(), TF_FLOAT), &tensors),
      "reading the embedding tables");
  for (size_t i = 0; i < names.size(); ++i) {
    const EmbeddingVariable& embedding = plan.embeddings[i];
    TF_Tensor* rows = tensors[i].get();
    if (TF_NumDims(rows) != 2 || TF_Dim(rows, 0) != embedding.rows || TF_Dim(rows, 1) != embedding.dim) {
      return Status::InvalidArgument("embedding " + Quote(embedding.name) + " in checkpoint " + Quote(prefix) +
                                     " does not have the graph's shape [" + std::to_string(embedding.rows) + ", " +
                                     std::to_string(embedding.dim) + "]");
    }
    auto table = std::make_shared<LocalTable>(embedding.name, std::move(tensors[i]));
    TableRegistry::Global().Register(keys.at(embedding.name), table);
    local_tables_[embedding.name] = std::move(table);
  }
  return Status::Ok();
}

Status Servable::ConnectRedisTables(const FeatureStoreOptions& options, const RewritePlan& plan,
                                    const std::map<std::string, std::string>& keys) {
#if !PROCESSOR_WITH_REDIS
  return Status::InvalidArgument("this build of Processor has no Redis feature store: install hiredis "
                                 "(apt-get install libhiredis-dev) and rebuild");
#else
  std::shared_ptr<RedisRouter> router;
  PROCESSOR_RETURN_IF_ERROR(RedisRouter::Connect(options.redis, &router));
  // Serve only a complete version (the importer's marker), whatever the control plane believes.
  const std::string versions_key = "pe:{" + options.model + "}:versions";
  RedisRouter::Lease lease;
  PROCESSOR_RETURN_IF_ERROR(router->Borrow(router->NodeFor(versions_key), &lease));
  ReplyPtr marker;
  PROCESSOR_RETURN_IF_ERROR(lease->Command({"ZSCORE", versions_key, std::to_string(options.version)}, &marker));
  if (marker->type != REDIS_REPLY_STRING) {
    return Status::Unavailable("model " + Quote(options.model) + " version " + std::to_string(options.version) +
                               " is not complete in Redis");
  }
  for (const EmbeddingVariable& embedding : plan.embeddings) {
    const std::string prefix = "pe:{" + options.model + "/" + std::to_string(options.version) + "/" + embedding.name + "/";
    TableRegistry::Global().Register(keys.at(embedding.name), std::make_shared<RedisTable>(
        embedding.name, embedding.dim, prefix, options.partitions, router));
  }
  return Status::Ok();
#endif
}

Status Servable::RunInitOp(const MetaGraphSpec& meta_graph, const std::string& savedmodel_dir) {
  if (meta_graph.init_op.empty()) return Status::Ok();
  TF_Operation* init = TF_GraphOperationByName(graph_.get(), meta_graph.init_op.c_str());
  if (!init) return Status::Internal("the SavedModel's init op " + Quote(meta_graph.init_op) + " is not in its graph");
  std::vector<TF_Output> ports;
  OwnedTensors paths;
  paths.Reset(meta_graph.assets.size());
  for (size_t i = 0; i < meta_graph.assets.size(); ++i) {
    const AssetFile& asset = meta_graph.assets[i];
    ports.emplace_back();
    PROCESSOR_RETURN_IF_ERROR_WITH_CONTEXT(ResolvePort(graph_.get(), asset.tensor_name, &ports.back()), "asset file");
    const std::string path = savedmodel_dir + "/assets/" + asset.filename;
    TF_Tensor* tensor = TF_AllocateTensor(TF_STRING, nullptr, 0, sizeof(TF_TString));
    TF_TString_Init(static_cast<TF_TString*>(TF_TensorData(tensor)));
    TF_TString_Copy(static_cast<TF_TString*>(TF_TensorData(tensor)), path.data(), path.size());
    paths.data()[i] = tensor;
  }
  const TF_Operation* target = init;
  TfStatus status;
  TF_SessionRun(session_, update_run_options_.get(), ports.data(), paths.data(), static_cast<int>(ports.size()), nullptr,
                nullptr, 0, &target, 1, nullptr, status.get());
  if (!status.ok()) return Status::Internal("running the SavedModel's init op failed: " + status.message());
  return Status::Ok();
}

Servable::~Servable() {
  live_count_.fetch_sub(1, std::memory_order_relaxed);
  for (const std::string& key : table_keys_) TableRegistry::Global().Unregister(key);
  if (session_) {
    TfStatus status;
    TF_CloseSession(session_, status.get());
    TF_DeleteSession(session_, status.get());
  }
}

int Servable::Find(const std::vector<BoundTensor>& tensors, std::string_view name) {
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (tensors[i].spec.alias == name) return static_cast<int>(i);
  }
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (tensors[i].spec.tensor_name == name) return static_cast<int>(i);
  }
  return -1;
}

Status Servable::BindSignature(const MetaGraphSpec& meta_graph, const std::string& savedmodel_dir) {
  auto it = meta_graph.signatures.find(signature_name_);
  if (it == meta_graph.signatures.end()) return Status::Internal(MissingSignature(meta_graph, signature_name_, savedmodel_dir));
  for (const TensorSpec& spec : it->second.inputs) {
    BoundTensor bound{spec, {}};
    PROCESSOR_RETURN_IF_ERROR_WITH_CONTEXT(ResolvePort(graph_.get(), spec.tensor_name, &bound.port), "signature input '" + spec.alias + "'");
    inputs_.push_back(std::move(bound));
  }
  for (const TensorSpec& spec : it->second.outputs) {
    BoundTensor bound{spec, {}};
    PROCESSOR_RETURN_IF_ERROR_WITH_CONTEXT(ResolvePort(graph_.get(), spec.tensor_name, &bound.port), "signature output '" + spec.alias + "'");
    outputs_.push_back(std::move(bound));
  }
  signature_json_ = "{\"signature_name\":";
  AppendJsonString(&signature_json_, signature_name_);
  signature_json_ += ",\"method_name\":";
  AppendJsonString(&signature_json_, it->second.method_name);
  signature_json_ += ",\"inputs\":";
  AppendTensorsJson(&signature_json_, inputs_);
  signature_json_ += ",\"outputs\":";
  AppendTensorsJson(&signature_json_, outputs_);
  signature_json_ += "}";
  return Status::Ok();
}

Status Servable::Restore(const std::string& prefix) {
  if (feature_store_) {
    return Status::InvalidArgument("a version serving embeddings from the feature store is loaded whole, not restored in place");
  }
  const SaverSpec& saver = saver_;
  if (saver.filename_tensor_name.empty() || saver.restore_op_name.empty()) {
    return Status::Internal("the SavedModel has no saver_def, so checkpoint '" + prefix + "' cannot be restored");
  }
  TF_Output filename;
  PROCESSOR_RETURN_IF_ERROR_WITH_CONTEXT(ResolvePort(graph_.get(), saver.filename_tensor_name, &filename), "saver_def");
  TF_Operation* restore = TF_GraphOperationByName(graph_.get(), saver.restore_op_name.c_str());
  if (!restore) return Status::Internal("saver_def names a missing restore op '" + saver.restore_op_name + "'");

  TensorPtr prefix_tensor(TF_AllocateTensor(TF_STRING, nullptr, 0, sizeof(TF_TString)));
  TF_TString* value = static_cast<TF_TString*>(TF_TensorData(prefix_tensor.get()));
  TF_TString_Init(value);
  TF_TString_Copy(value, prefix.data(), prefix.size());
  TF_Tensor* feed = prefix_tensor.get();
  const TF_Operation* target = restore;
  TfStatus status;
  TF_SessionRun(session_, update_run_options_.get(), &filename, &feed, 1, nullptr, nullptr, 0, &target, 1, nullptr,
                status.get());
  if (!status.ok()) return Status::Internal("cannot restore checkpoint '" + prefix + "': " + status.message());
  return Status::Ok();
}

Status Servable::RunTargets(const std::vector<std::string>& op_names, const std::string& what) {
  if (op_names.empty()) return Status::Ok();
  std::vector<const TF_Operation*> targets;
  for (const std::string& name : op_names) {
    TF_Operation* op = TF_GraphOperationByName(graph_.get(), name.c_str());
    if (!op) return Status::Internal(what + ": the graph has no op '" + name + "'");
    targets.push_back(op);
  }
  TfStatus status;
  TF_SessionRun(session_, update_run_options_.get(), nullptr, nullptr, 0, nullptr, nullptr, 0, targets.data(),
                static_cast<int>(targets.size()), nullptr, status.get());
  if (!status.ok()) return Status::Internal("running " + what + " failed: " + status.message());
  return Status::Ok();
}

Status Servable::Run(const std::vector<TF_Output>& inputs, const OwnedTensors& values,
                     const std::vector<TF_Output>& outputs, OwnedTensors* results, std::string* run_metadata) const {
  results->Reset(outputs.size());
  TfStatus status;
  BufferPtr metadata(run_metadata ? TF_NewBuffer() : nullptr);
  {
    std::shared_lock<WriterPreferringLock> shared(serving_lock_);
    TF_SessionRun(session_, run_metadata ? traced_run_options_.get() : ChooseServingRunOptions(), inputs.data(),
                  values.data(), static_cast<int>(inputs.size()), outputs.data(), results->data(),
                  static_cast<int>(outputs.size()), nullptr, 0, metadata.get(), status.get());
  }
  if (metadata && metadata->data) run_metadata->assign(static_cast<const char*>(metadata->data), metadata->length);
  if (feature_store_ && !status.ok()) {
    // The store's words alone, without what TensorFlow appends (the node, the code it replaced).
    const std::string message = status.message();
    const size_t start = message.find(kStoreUnavailable);
    if (start != std::string::npos) {
      const size_t end = message.find('\n', start);
      return Status::Unavailable(message.substr(start, end == std::string::npos ? end : end - start));
    }
  }
  return status.ToStatus("running the model");
}

const TF_Buffer* Servable::ChooseServingRunOptions() const {
  const size_t pools = serving_run_options_.size();
  if (pools == 1) return serving_run_options_[0].get();
  size_t pool;
  if (policy_ == SessionPolicy::kRoundRobin) {
    pool = round_robin_.fetch_add(1, std::memory_order_relaxed) % pools;
  } else {  // MOD: a thread keeps its pool, so a host's worker threads spread over the pools
    static std::atomic<size_t> next_thread{0};
    thread_local const size_t thread_number = next_thread.fetch_add(1, std::memory_order_relaxed);
    pool = thread_number % pools;
  }
  return serving_run_options_[pool].get();
}

DeltaApplier& Servable::delta_applier() {
  std::call_once(delta_applier_once_, [this] {
    delta_applier_ = std::make_unique<DeltaApplier>(graph_.get(), session_, update_run_options_.get(), &serving_lock_);
  });
  return *delta_applier_;
}

Status Servable::ApplyDelta(const std::string& prefix, const std::vector<DeltaVariable>& variables) {
  std::vector<DeltaVariable> in_session;
  std::vector<std::string> names;
  std::vector<TF_DataType> dtypes;
  std::vector<std::pair<const DeltaVariable*, LocalTable*>> in_tables;
  for (const DeltaVariable& variable : variables) {
    auto table = local_tables_.find(variable.name);
    if (table == local_tables_.end()) {
      in_session.push_back(variable);
      continue;
    }
    in_tables.emplace_back(&variable, table->second.get());
    if (variable.sparse) {
      names.push_back(variable.name + "-sparse_incr_keys");
      dtypes.push_back(variable.key_dtype);
      names.push_back(variable.name + "-sparse_incr_values");
    } else {
      names.push_back(variable.name);
    }
    dtypes.push_back(TF_FLOAT);
  }
  if (in_tables.empty()) return delta_applier().Apply(prefix, variables);

  // The tables' rows: read and checked now, written with the session's variables under one lock.
  std::vector<TensorPtr> tensors;
  PROCESSOR_RETURN_IF_ERROR(delta_applier().Read(prefix, names, dtypes, &tensors));
  struct RowWrite {
    LocalTable* table;
    std::vector<int64_t> ids;
    const float* rows;
  };
  std::vector<RowWrite> writes;
  size_t next = 0;
  for (const auto& [variable, table] : in_tables) {
    RowWrite write{table, {}, nullptr};
    const TF_Tensor* rows;
    if (variable->sparse) {
      const TF_Tensor* keys = tensors[next++].get();
      rows = tensors[next++].get();
      const int64_t n = TF_NumDims(keys) == 1 ? TF_Dim(keys, 0) : -1;
      if (n < 0 || TF_NumDims(rows) != 2 || TF_Dim(rows, 0) != n || TF_Dim(rows, 1) != table->dim()) {
        return Status::InvalidArgument("delta " + Quote(prefix) + ": the rows of embedding " + Quote(variable->name) +
                                       " do not fit its table [" + std::to_string(table->rows()) + ", " +
                                       std::to_string(table->dim()) + "]");
      }
      if (TF_TensorType(keys) == TF_INT32) {
        const int32_t* narrow = static_cast<const int32_t*>(TF_TensorData(keys));
        write.ids.assign(narrow, narrow + n);
      } else {
        const int64_t* wide = static_cast<const int64_t*>(TF_TensorData(keys));
        write.ids.assign(wide, wide + n);
      }
    } else {
      rows = tensors[next++].get();
      if (TF_NumDims(rows) != 2 || TF_Dim(rows, 0) != table->rows() || TF_Dim(rows, 1) != table->dim()) {
        return Status::InvalidArgument("delta " + Quote(prefix) + ": embedding " + Quote(variable->name) +
                                       " does not have its table's shape");
      }
      write.ids.resize(table->rows());
      for (int64_t id = 0; id < table->rows(); ++id) write.ids[id] = id;
    }
    for (int64_t id : write.ids) {
      if (id < 0 || id >= table->rows()) {
        return Status::InvalidArgument("delta " + Quote(prefix) + ": embedding " + Quote(variable->name) + " row id " +
                                       std::to_string(id) + " is outside [0, " + std::to_string(table->rows()) + ")");
      }
    }
    write.rows = static_cast<const float*>(TF_TensorData(rows));
    writes.push_back(std::move(write));
  }
  return delta_applier().Apply(prefix, in_session, [&writes] {
    for (const RowWrite& write : writes) PROCESSOR_RETURN_IF_ERROR(write.table->WriteRows(write.ids.data(), write.ids.size(), write.rows));
    return Status::Ok();
  });
}

std::vector<VariableSpec> Servable::Variables() { return delta_applier().Variables(); }

}  // namespace processor
