// Servable, loading: a SavedModel (or the feature store's rewritten graph, servable_feature_store.cc)
// into a session, its signatures bound, its init op run, the main signature's TF callables made (one per
// serving pool; the others' on their first requests).
#include "model/servable.h"

#include <tensorflow/c/tf_tstring.h>

#include <unistd.h>

#include "common/json_writer.h"
#include "common/logging.h"
#include "common/quote.h"
#include "feature_store/embedding_variables.h"
#include "feature_store/table_registry.h"
#include "model/graph_names.h"

namespace processor {
namespace {

// Each serving pool's RunOptions.inter_op_thread_pool: -1 is the caller's thread; kDefaultPool, TF's
// defaults (pool 0, with no RunOptions to parse per run).
std::vector<int> ServingPools(const SessionSettings& settings) {
  if (settings.enable_inline_execute) return {-1};
  if (settings.session_num == 1) return {CallableRunner::kDefaultPool};
  std::vector<int> pools;
  for (int pool = 0; pool < settings.session_num; ++pool) pools.push_back(pool);
  return pools;
}

}  // namespace

std::atomic<int64_t> Servable::live_count_{0};

Status LoadPlan::Make(LoadOptions options, std::unique_ptr<LoadPlan>* plan) {
  auto made = std::make_unique<LoadPlan>();
  made->options = std::move(options);
  FeatureStoreOptions& store = made->options.feature_store;
  std::string_view serialized;  // the MetaGraphDef, read once here; PlanEmbeddings parses it
  PROCESSOR_RETURN_IF_ERROR(ReadSavedModelMetaGraph(made->options.savedmodel_dir, made->options.tags,
                                                    &made->meta_graph_bytes, &serialized));
  if (store.type.empty()) {
    // TensorFlow's SavedModel loader reads the graph itself when no feature store rewrites it, unless
    // it holds DeepRec's EmbeddingVariables: only the feature store can serve those.
    if (!MentionsEmbeddingVariables(serialized)) {
      made->meta_graph_bytes = std::string();  // TensorFlow's loader reads the file itself; free it
      *plan = std::move(made);
      return Status::Ok();
    }
    Log(LogLevel::kInfo, "the SavedModel holds DeepRec EmbeddingVariables: serving them from local tables");
    store.type = "local";
  }
  PROCESSOR_RETURN_IF_ERROR(PlanEmbeddings(made.get(), serialized));
  *plan = std::move(made);
  return Status::Ok();
}

Status Servable::Load(const LoadPlan& plan, std::shared_ptr<Servable>* servable) {
  const LoadOptions& options = plan.options;
  std::shared_ptr<Servable> s(new Servable());
  SessionOptionsPtr session_options;
  PROCESSOR_RETURN_IF_ERROR(MakeSessionOptions(options.session, &session_options));

  auto run_options = [](int pool, bool full_trace = false) {
    const std::string encoded = EncodeRunOptions(pool, full_trace);
    return BufferPtr(TF_NewBufferFromString(encoded.data(), encoded.size()));
  };
  s->update_run_options_ = run_options(UpdatePoolIndex(options.session));
  for (int pool : ServingPools(options.session)) {
    s->serving_run_options_.push_back(pool == CallableRunner::kDefaultPool ? BufferPtr() : run_options(pool));
  }
  s->policy_ = options.session.select_session_policy;
  s->traced_run_options_ = run_options(options.session.enable_inline_execute ? -1 : 0, /*full_trace=*/true);
  s->graph_.reset(TF_NewGraph());
  std::string loaded_bytes;  // the MetaGraphDef TensorFlow's loader read (without a feature store)
  MetaGraphSpec loaded;
  const MetaGraphSpec* meta_graph = &plan.meta_graph;
  if (options.feature_store.type.empty()) {
    PROCESSOR_RETURN_IF_ERROR(s->LoadSavedModel(options, session_options.get(), &loaded_bytes, &loaded));
    meta_graph = &loaded;
  } else {
    PROCESSOR_RETURN_IF_ERROR(s->LoadWithFeatureStore(plan, session_options.get()));
  }

  // TensorFlow's loader serves a graph whose variables/ is missing as if it had none, every request then
  // failing on uninitialized variables: a SavedModel still being copied (TF Serving #1086, #631).
  const bool restores_from_savedmodel = options.feature_store.type.empty() && options.checkpoint_prefix.empty();
  if (restores_from_savedmodel && !meta_graph->saver.restore_op_name.empty() &&
      access((options.savedmodel_dir + "/variables/variables.index").c_str(), R_OK) != 0) {
    return Status::Internal("SavedModel " + Quote(options.savedmodel_dir) + " has variables to restore but no " +
                            "variables/variables.index: an incomplete copy?");
  }
  s->saved_slices_ = meta_graph->saved_slices;
  s->strict_signature_name_ = options.strict_signature_name;
  PROCESSOR_RETURN_IF_ERROR(
      s->BindSignatures(*meta_graph, options.signature_name, plan.unserved_signatures, options.savedmodel_dir));
  s->saver_ = meta_graph->saver;
  if (!options.checkpoint_prefix.empty() && !s->feature_store_) {
    PROCESSOR_RETURN_IF_ERROR(s->Restore(options.checkpoint_prefix, options.checkpoint_tensors));
  }
  // Initializers are idempotent for the same data, so running them after the SavedModel's own init op
  // is safe, and it covers graphs that register tables without one.
  PROCESSOR_RETURN_IF_ERROR(
      s->RunTargets(meta_graph->table_initializers, "table initializers", *meta_graph, options.savedmodel_dir));
  s->MakeCallables(options.session);
  s->MakeBatcher(options.batching);
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

Servable::~Servable() {
  live_count_.fetch_sub(1, std::memory_order_relaxed);
  batcher_.reset();
  callables_.clear();  // released while the session is open
  for (const std::string& key : table_keys_) TableRegistry::Global().Unregister(key);
  if (session_) {
    TfStatus status;
    TF_CloseSession(session_, status.get());
    TF_DeleteSession(session_, status.get());
  }
}

Status Servable::BindSignatures(const MetaGraphSpec& meta_graph, const std::string& main,
                                const std::map<std::string, std::string>& unserved, const std::string& savedmodel_dir) {
  const auto it = meta_graph.signatures.find(main);
  if (it == meta_graph.signatures.end()) {
    return Status::Internal(MissingSignatureMessage(meta_graph, main, savedmodel_dir));
  }
  std::unique_ptr<const BoundSignature> bound;
  PROCESSOR_RETURN_IF_ERROR(BoundSignature::Bind(graph_.get(), main, it->second, &bound));
  signatures_.push_back(std::move(bound));
  std::string others;
  for (const auto& [name, spec] : meta_graph.signatures) {
    // The init op's pseudo-signature is the loader's (meta_graph.h's init_op), not a request's.
    if (name == main || name == kSavedModelInitOpSignature) continue;
    const auto left_out = unserved.find(name);
    Status status = left_out == unserved.end() ? BoundSignature::Bind(graph_.get(), name, spec, &bound)
                                               : Status::InvalidArgument(left_out->second);
    if (!status.ok()) {
      Log(LogLevel::kWarning, "signature " + Quote(name) + " is not served: " + status.message());
      continue;
    }
    (others += others.empty() ? "" : ",") += bound->json();
    signatures_.push_back(std::move(bound));
  }
  const std::string& json = signature().json();
  description_json_ = json.substr(0, json.size() - 1) + ",\"other_signatures\":[" + others + "]}";
  return Status::Ok();
}

Status Servable::RunTargets(const std::vector<std::string>& op_names, const std::string& what,
                            const MetaGraphSpec& meta_graph, const std::string& savedmodel_dir) {
  if (op_names.empty()) return Status::Ok();
  std::vector<const TF_Operation*> targets;
  for (const std::string& name : op_names) {
    TF_Operation* op = TF_GraphOperationByName(graph_.get(), name.c_str());
    if (!op) return Status::Internal(what + ": the graph has no op '" + name + "'");
    targets.push_back(op);
  }
  // Each asset's path tensor gets this SavedModel's assets/ copy, as TensorFlow's loader feeds it to
  // the init op: vocabularies are read from the SavedModel wherever it was moved, never from the
  // training-time path the graph holds.
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
  TfStatus status;
  TF_SessionRun(session_, update_run_options_.get(), ports.data(), paths.data(), static_cast<int>(ports.size()),
                nullptr, nullptr, 0, targets.data(), static_cast<int>(targets.size()), nullptr, status.get());
  if (!status.ok()) return Status::Internal("running " + what + " failed: " + status.message());
  return Status::Ok();
}

void Servable::MakeCallables(const SessionSettings& settings) {
  // A callable needs the session to hold the graph, which TF_SessionRun hands it lazily: a load that ran
  // nothing yet (a feature-store graph with no dense variable and no init op) runs a NoOp first.
  TfStatus status;
  TF_OperationDescription* extend = TF_NewOperation(graph_.get(), "NoOp", "processor/extend_session");
  const TF_Operation* target = TF_FinishOperation(extend, status.get());
  if (status.ok()) {
    TF_SessionRun(session_, update_run_options_.get(), nullptr, nullptr, 0, nullptr, nullptr, 0, &target, 1, nullptr,
                  status.get());
  }
  if (!status.ok()) {
    callable_error_ = "cannot hand the graph to the session: " + status.message();
    return;
  }
  std::vector<int> pools = ServingPools(settings);
  pools.push_back(-1);  // caller_slot()
  for (const auto& signature : signatures_) {
    std::vector<std::string> feeds, fetches;
    for (const BoundTensor& input : signature->inputs()) feeds.push_back(input.spec.tensor_name);
    for (const BoundTensor& output : signature->outputs()) fetches.push_back(output.spec.tensor_name);
    // The main signature's refusal is the load's to report (callable_error()); the others' are logged.
    const bool main = signature.get() == &this->signature();
    callables_.push_back(std::make_unique<LazyCallables>(session_, std::move(feeds), std::move(fetches), pools,
                                                         main ? "" : "signature " + Quote(signature->name())));
  }
  // The main signature's are made now, as its first requests would make them.
  for (size_t slot = 0; slot < caller_slot(); ++slot) callables_.front()->Get(slot);
  callable_error_ = callables_.front()->error();
}

}  // namespace processor
