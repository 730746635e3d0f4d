// Servable: one loaded model version: the graph, its session, the resolved signature and, with a
// feature store, the tables it owns. Its graph and signature never change once loaded; its variables
// and local tables do: a delta is applied atomically for requests (under serving_lock_, which they
// hold shared), an in-place restore (resource_preserving) is not. serving/version_manager.h holds the serving one: a request keeps the version
// it started on, and a swapped-out version is released on the control plane's thread once the
// requests on it have answered (the control plane and requests share it through std::shared_ptr).
#pragma once

#include <tensorflow/c/c_api.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "batching/batch_scheduler.h"
#include "common/rw_lock.h"
#include "common/status.h"
#include "common/tf_handles.h"
#include "feature_store/graph_rewrite.h"
#include "feature_store/local_table.h"
#include "feature_store/redis_settings.h"
#include "feature_store/tiered_table.h"
#include "model/bound_signature.h"
#include "model/callable_runner.h"
#include "model/checkpoint_fit.h"
#include "model/delta_applier.h"
#include "model/meta_graph.h"
#include "model/session_settings.h"

namespace processor {

// Where embeddings are served from (see feature_store/graph_rewrite.h).
struct FeatureStoreOptions {
  std::string type;  // "": in the session, as saved; "local": in this process's memory; "redis"
  EmbeddingSelection selection;
  // ---- where the planned tables come from, decided by the control plane after the plan
  // "local": variables whose table is a Monolith hash-table dump (these shards) instead of the checkpoint's rows.
  std::map<std::string, std::vector<std::string>> monolith_shards;
  // "redis": the tables of one import (feature_store/redis_tables.py, which spells every key).
  RedisSettings redis;
  std::map<std::string, std::string> redis_key_prefixes;  // variable -> its partitions' key prefix
  std::string redis_versions_key;  // the sorted set of complete versions
  int64_t version = 0;             // this version's member in it
  int partitions = 16;
  std::string token;  // the import's, which each partition holds (redis_table.h)
  int64_t cache_bytes = 0;  // the hot-row cache of the version's Redis tables, all together (0: none)
  // "local" with ev_storage_type 12: every table in two tiers, its rows in files (feature_store/tier_file.h).
  struct TierSource {
    std::string path;
    bool keyed = false;
    int64_t rows = 0;
  };
  std::map<std::string, TierSource> tier_tables;
  int64_t tier_dram_bytes = 0;  // each table's DRAM tier
  std::string tier_directory;   // holds the files alone: removed once they are open
};

struct LoadOptions {
  std::string savedmodel_dir;
  std::vector<std::string> tags{"serve"};
  std::string signature_name = "serving_default";
  std::string checkpoint_prefix;  // empty: keep the SavedModel's own variables
  std::vector<SavedTensor> checkpoint_tensors;  // the checkpoint's index, checked before restoring
  SessionSettings session;
  FeatureStoreOptions feature_store;
  bool strict_signature_name = false;  // a request naming another signature: 400, or served (DeepRec's way)
  BatchingOptions batching;            // enable_batching: concurrent requests merged (batching/batch_scheduler.h)
};

// Step 1 of a load: what the control plane needs before the version's tables can be prepared. With a
// feature store (or DeepRec EmbeddingVariables, which only the feature store serves), the SavedModel's
// graph is read and planned here once, and `rewrite` says which variables the store serves; step 2
// (Servable::Load) uses both. Does not move once planned: `meta_graph` points into
// `meta_graph_bytes`.
struct LoadPlan {
  LoadOptions options;
  std::string meta_graph_bytes;
  MetaGraphSpec meta_graph;       // its graph_def is ev_graph_def when the graph has EmbeddingVariables
  std::string ev_graph_def;       // the graph with DeepRec's EmbeddingVariables rewritten (embedding_variables.h)
  RewritePlan rewrite;
  // Signatures the feature store's plan cannot serve, and why (PlanEmbeddings): left out at load.
  std::map<std::string, std::string> unserved_signatures;

  static Status Make(LoadOptions options, std::unique_ptr<LoadPlan>* plan);
  LoadPlan() = default;
  LoadPlan(const LoadPlan&) = delete;
  LoadPlan& operator=(const LoadPlan&) = delete;
};

// Which variables a load with `plan->options.feature_store` serves from the store, DeepRec's
// EmbeddingVariables included, given the SavedModel's MetaGraphDef `serialized` (which points into
// `plan->meta_graph_bytes`). LoadPlan::Make's job with a feature store.
Status PlanEmbeddings(LoadPlan* plan, std::string_view serialized);

// Its three jobs live in three files: loading (servable_load.cc, and servable_feature_store.cc for a
// load with the feature store), serving (servable_run.cc) and updating a loaded version in place
// (servable_update.cc).
class Servable {
 public:
  // ---- loading
  // Step 2: loads the planned SavedModel, checks the checkpoint (if any) fits it and restores it, and
  // runs the table initializers. `plan.options.feature_store` has the tables' sources by now.
  static Status Load(const LoadPlan& plan, std::shared_ptr<Servable>* servable);

  ~Servable();
  Servable(const Servable&) = delete;
  Servable& operator=(const Servable&) = delete;

  // Servables alive in the process (the metric :processor:loaded_versions): what leak checks watch.
  static int64_t LiveCount() { return live_count_.load(std::memory_order_relaxed); }

  // The signature requests get unless they name another: the config's signature_name.
  const BoundSignature& signature() const { return *signatures_.front(); }
  // The signature `name` names (any SignatureDef of the version that bound); null if none.
  const BoundSignature* FindSignature(std::string_view name) const {
    for (const auto& signature : signatures_) {
      if (signature->name() == name) return signature.get();
    }
    return nullptr;
  }
  // Every bound signature: signature() first, then the others by name.
  const std::vector<std::unique_ptr<const BoundSignature>>& signatures() const { return signatures_; }
  bool strict_signature_name() const { return strict_signature_name_; }
  // What process() answers to an empty request: signature().json() with "other_signatures", a list of
  // the others' descriptions.
  const std::string& description_json() const { return description_json_; }
  // How requests of the main signature reach TensorFlow: "callable" (TF's callable interface, made at
  // load), or "session_run" (TF_SessionRun, when TensorFlow made no callable; callable_error() says why).
  const char* run_interface() const { return RunInterface(signature(), nullptr); }
  const std::string& callable_error() const { return callable_error_; }
  // The same for any bound signature; the others' callables are made on their first requests, and
  // are "unmade" before then. *reason (if given) receives why TensorFlow made none, or "".
  const char* RunInterface(const BoundSignature& signature, std::string* reason) const;

  // ---- serving
  // Runs the session. `results` receives owned tensors, one per output (on failure too: TF may have
  // filled some). With `run_metadata`, the run is fully traced and its serialized RunMetadata (step
  // stats) stored there. A run of the whole signature, untraced, goes through the callable; others
  // (an output_filter, a timeline step) through TF_SessionRun. Every signature has its callables.
  Status Run(const std::vector<TF_Output>& inputs, const OwnedTensors& values, const std::vector<TF_Output>& outputs,
             OwnedTensors* results, std::string* run_metadata = nullptr) const;
  // Run() of a host's request of `signature`: with batching on, merged with concurrent requests of the
  // same signature into one run, when every input and output of the signature has a batch dimension.
  Status Serve(const BoundSignature& signature, const std::vector<TF_Output>& inputs, const OwnedTensors& values,
               const std::vector<TF_Output>& outputs, OwnedTensors* results) const {
    return batcher_ && IsBatched(signature) ? batcher_->Run(inputs, values, outputs, results)
                                            : Run(inputs, values, outputs, results);
  }
  // The batching of this version's requests; null when off (or no signature has a batch dimension).
  const BatchScheduler* batcher() const { return batcher_.get(); }

  // ---- updating
  // Restores a checkpoint into the session through the SavedModel's saver. On a serving version it is
  // not atomic for requests running meanwhile (they may see some variables restored and others not):
  // the resource-preserving policy's trade-off. Nothing is restored unless the checkpoint (`saved`, its
  // index) fits the graph.
  Status Restore(const std::string& prefix, const std::vector<SavedTensor>& saved);

  // Applies an incremental checkpoint atomically with respect to Run() (see DeltaApplier).
  Status ApplyDelta(const std::string& prefix, const std::vector<DeltaVariable>& variables);
  std::vector<VariableSpec> Variables();
  // The counters of the tables with a DRAM tier (two local tiers, or Redis's hot-row cache).
  TierReport Tiers() const;
  // A delta changed rows of `variable` in Redis: the hot-row cache forgets `ids` (all it holds of the
  // table when ids is null; of every table when variable is empty). Nothing without a cache.
  void ForgetRows(const std::string& variable, const int64_t* ids, size_t n) const;

 private:
  Servable() { live_count_.fetch_add(1, std::memory_order_relaxed); }
  // The two ways to a session: TensorFlow's SavedModel loader, which leaves the MetaGraphDef it read in
  // `meta_graph` (pointing into `bytes`), or the feature store's rewritten graph of the plan's
  // MetaGraphDef (restoring the dense variables only).
  Status LoadSavedModel(const LoadOptions& options, TF_SessionOptions* session_options, std::string* bytes,
                        MetaGraphSpec* meta_graph);
  Status LoadWithFeatureStore(const LoadPlan& plan, TF_SessionOptions* session_options);
  // `default_rows`: by embedding, the rows ids its table lacks read (ComputeDefaultRows).
  Status LoadTables(const FeatureStoreOptions& options, const RewritePlan& plan, const std::string& prefix,
                    const std::map<std::string, std::string>& keys,
                    const std::map<std::string, std::vector<float>>& default_rows);
  Status LoadMonolithTable(const EmbeddingVariable& embedding, const std::vector<std::string>& shards,
                           std::shared_ptr<LocalTable>* table);
  // A table in two tiers (ev_storage_type 12), from the files the control plane wrote.
  Status OpenTieredTable(const FeatureStoreOptions& options, const EmbeddingVariable& embedding,
                         std::shared_ptr<LocalTable>* table);
  // A DeepRec EmbeddingVariable's rows, from the checkpoint's <saved_name>-keys and -values.
  Status LoadEmbeddingVariableTable(const EmbeddingVariable& embedding, const std::string& prefix,
                                    std::shared_ptr<LocalTable>* table);
  // The default rows of DeepRec EmbeddingVariables: their initializers' values, run once in the session.
  Status ComputeDefaultRows(const RewritePlan& plan, std::map<std::string, std::vector<float>>* rows);
  Status ConnectRedisTables(const FeatureStoreOptions& options, const RewritePlan& plan,
                            const std::map<std::string, std::string>& keys,
                            const std::map<std::string, std::vector<float>>& default_rows);
  Status RunInitOp(const MetaGraphSpec& meta_graph, const std::string& savedmodel_dir);
  // Binds `main` (which must bind) and every other SignatureDef that does and is not `unserved` (those
  // left out are logged with the reason).
  Status BindSignatures(const MetaGraphSpec& meta_graph, const std::string& main,
                        const std::map<std::string, std::string>& unserved, const std::string& savedmodel_dir);
  // Runs `op_names` with the SavedModel's asset paths fed (see the definition).
  Status RunTargets(const std::vector<std::string>& op_names, const std::string& what, const MetaGraphSpec& meta_graph,
                    const std::string& savedmodel_dir);
  DeltaApplier& delta_applier();
  // Made last in Load, when the session holds the whole graph: every signature's callables, the main
  // one's made now (callables_ stays empty if the session cannot take any).
  void MakeCallables(const SessionSettings& settings);
  // The callables of the signature whose inputs and outputs these are, in its order; null for a run
  // of part of one (an output_filter) or when there are none.
  const LazyCallables* WholeSignatureCallables(const std::vector<TF_Output>& inputs,
                                               const std::vector<TF_Output>& outputs) const;
  // Run(), on a serving pool or (in_caller) in the calling thread.
  Status RunOn(const std::vector<TF_Output>& inputs, const OwnedTensors& values, const std::vector<TF_Output>& outputs,
               OwnedTensors* results, std::string* run_metadata, bool in_caller) const;
  // The session group: the pool this request runs on.
  size_t ChooseServingPool() const;
  // With options.enabled, the batcher of the signatures whose every input and output has a batch
  // dimension (the others are served unbatched, and the log says why).
  void MakeBatcher(const BatchingOptions& options);
  bool IsBatched(const BoundSignature& signature) const {
    for (const BoundSignature* batched : batched_signatures_) {
      if (batched == &signature) return true;
    }
    return false;
  }

  GraphPtr graph_;
  TF_Session* session_ = nullptr;
  std::map<std::string, SavedSlice> saved_slices_;  // the parts of partitioned variables: where they are saved
  // One RunOptions per serving pool (or one running ops in the caller's thread; null: TF's defaults).
  std::vector<BufferPtr> serving_run_options_;
  // By signature (as signatures_), its callables: a slot per serving pool, then caller_slot() (the
  // batching's runs, in the calling thread). Empty when the session can take none.
  std::vector<std::unique_ptr<LazyCallables>> callables_;
  size_t caller_slot() const { return serving_run_options_.size(); }
  std::unique_ptr<BatchScheduler> batcher_;
  std::vector<const BoundSignature*> batched_signatures_;  // the signatures batcher_ merges
  BufferPtr caller_run_options_;  // the batching's runs without a callable, in the calling thread
  std::string callable_error_;
  BufferPtr traced_run_options_;
  SessionPolicy policy_ = SessionPolicy::kMod;
  mutable std::atomic<uint64_t> round_robin_{0};
  BufferPtr update_run_options_;   // loads, restores, initializers and deltas: the update pool
  std::vector<std::unique_ptr<const BoundSignature>> signatures_;  // the main one first, then the others by name
  std::string description_json_;
  bool strict_signature_name_ = false;
  SaverSpec saver_;
  // Requests hold it shared; a delta's write holds it exclusively.
  mutable WriterPreferringLock serving_lock_;
  std::once_flag delta_applier_once_;
  std::unique_ptr<DeltaApplier> delta_applier_;
  // Feature store: the tables this version registered (unregistered when it goes) and, when local, owns.
  bool feature_store_ = false;
  std::vector<std::string> table_keys_;
  std::map<std::string, std::shared_ptr<LocalTable>> local_tables_;
  std::map<std::string, std::shared_ptr<const EmbeddingTable>> redis_tables_;  // RedisTable (Redis builds only)

  static std::atomic<int64_t> live_count_;
};

}  // namespace processor
