// processor._core: the pybind11 binding the Python control plane drives the data plane with.
// It speaks to the engine (libserving_processor_engine.so) only through C (processor.h and abi/control_api.h).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "abi/control_api.h"
#include "common/crc32c.h"
#include "common/dtypes.h"
#include "feature_store/monolith_dump.h"
#include "numpy_codec.h"

namespace py = pybind11;

namespace {

struct LoadFailure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Takes ownership of a buffer from the library and turns it into Python bytes.
py::bytes TakeBuffer(void* data, int size) {
  std::unique_ptr<void, decltype(&free_buffer)> owned(data, &free_buffer);
  return py::bytes(static_cast<const char*>(data), data ? size : 0);
}

// Runs `serve` (a process()-shaped call) on a bytes-like request, viewed without copying, with the GIL
// released; returns (code, response bytes).
template <typename Serve>
std::pair<int, py::bytes> ServeWithoutGil(const py::buffer& request, Serve&& serve) {
  py::buffer_info info = request.request();
  if (info.ndim > 1 && info.strides.back() != info.itemsize) throw py::value_error("request buffer is not contiguous");
  const py::ssize_t size = info.size * info.itemsize;
  if (size > INT32_MAX) throw py::value_error("request is larger than 2 GiB, the ABI's limit");
  void* output = nullptr;
  int output_size = 0;
  int code;
  {
    py::gil_scoped_release release;  // the buffer stays alive: `info` holds it
    code = serve(info.ptr, static_cast<int>(size), &output, &output_size);
  }
  return {code, TakeBuffer(output, output_size)};
}

[[noreturn]] void ThrowLoadFailure(char* error) {
  std::string message = error ? error : "unknown load failure";
  free_buffer(error);
  throw LoadFailure(message);
}

class Servable {
 public:
  explicit Servable(processor_servable* servable) : servable_(servable, &processor_control_release) {}
  processor_servable* get() const { return servable_.get(); }

  std::pair<int, py::bytes> Process(const py::buffer& request, int format) const {
    return ServeWithoutGil(request, [this, format](const void* data, int size, void** output, int* output_size) {
      return processor_control_servable_process(servable_.get(), format, data, size, output, output_size);
    });
  }

  // variables: (name, sparse, key dtype) triples.
  void ApplyDelta(const std::string& prefix, const std::vector<std::tuple<std::string, bool, int>>& variables) {
    std::vector<const char*> names;
    std::vector<int> sparse, key_dtypes;
    for (const auto& [name, is_sparse, key_dtype] : variables) {
      names.push_back(name.c_str());
      sparse.push_back(is_sparse);
      key_dtypes.push_back(key_dtype);
    }
    char* error = nullptr;
    int code;
    {
      py::gil_scoped_release release;
      code = processor_control_servable_apply_delta(servable_.get(), prefix.c_str(), names.data(), sparse.data(),
                                                    key_dtypes.data(), static_cast<int>(names.size()), &error);
    }
    if (code != 0) ThrowLoadFailure(error);
  }

  // request: a serialized RestoreRequest.
  void Restore(const py::bytes& request) {
    const std::string_view bytes(request);
    char* error = nullptr;
    int code;
    {
      py::gil_scoped_release release;
      code = processor_control_servable_restore(servable_.get(), bytes.data(), static_cast<int>(bytes.size()), &error);
    }
    if (code != 0) ThrowLoadFailure(error);
  }

  // ids: int64, or None for all the table's (all tables' with variable "").
  void ForgetRows(const std::string& variable, const std::optional<py::array_t<int64_t, py::array::c_style | py::array::forcecast>>& ids) {
    const long long* data = ids ? reinterpret_cast<const long long*>(ids->data()) : nullptr;
    const long long count = ids ? static_cast<long long>(ids->size()) : 0;
    py::gil_scoped_release release;
    processor_control_servable_forget_rows(servable_.get(), variable.c_str(), data, count);
  }

  // signature: None for the main one. Raises KeyError for a signature the version does not serve.
  std::pair<std::string, std::string> RunInterface(const std::optional<std::string>& signature) const {
    void* reason = nullptr;
    int size = 0;
    const char* interface = processor_control_servable_run_interface(
        servable_.get(), signature ? signature->c_str() : nullptr, &reason, &size);
    if (!interface) throw py::key_error("no signature " + *signature);
    const std::string why(static_cast<const char*>(reason), reason ? size : 0);
    free_buffer(reason);
    return {interface, why};
  }

  // A serialized VariableList; the graph never changes once loaded, so it is read once.
  py::bytes Variables() {
    if (!variables_) {
      void* output = nullptr;
      int size = 0;
      processor_control_servable_variables(servable_.get(), &output, &size);
      variables_ = TakeBuffer(output, size);
    }
    return *variables_;
  }

 private:
  std::unique_ptr<processor_servable, decltype(&processor_control_release)> servable_;
  std::optional<py::bytes> variables_;
};

// Step 1 of a load (processor_control_plan_load): the request read and, with a feature store, the
// SavedModel's graph read and its embeddings planned; load() is step 2.
class LoadPlan {
 public:
  explicit LoadPlan(const py::bytes& request) : plan_(nullptr, &processor_control_release_plan) {
    const std::string_view bytes(request);
    char* error = nullptr;
    processor_load_plan* plan;
    {
      py::gil_scoped_release release;  // reads saved_model.pb
      plan = processor_control_plan_load(bytes.data(), static_cast<int>(bytes.size()), &error);
    }
    if (!plan) ThrowLoadFailure(error);
    plan_.reset(plan);
  }

  py::bytes Embeddings() const {
    void* output = nullptr;
    int size = 0;
    processor_control_plan_embeddings(plan_.get(), &output, &size);
    return TakeBuffer(output, size);
  }

  std::shared_ptr<Servable> Load(const py::bytes& sources) {
    const std::string_view bytes(sources);
    char* error = nullptr;
    processor_servable* servable;
    {
      py::gil_scoped_release release;  // loading takes seconds; the control plane's threads keep running
      servable = processor_control_load(plan_.get(), bytes.data(), static_cast<int>(bytes.size()), &error);
    }
    if (!servable) ThrowLoadFailure(error);
    return std::make_shared<Servable>(servable);
  }

 private:
  std::unique_ptr<processor_load_plan, decltype(&processor_control_release_plan)> plan_;
};

py::bytes SessionConfig(const py::bytes& settings) {
  const std::string_view bytes(settings);
  void* output = nullptr;
  int output_size = 0;
  char* error = nullptr;
  if (processor_control_session_config(bytes.data(), static_cast<int>(bytes.size()), &output, &output_size,
                                       &error) != 0) {
    ThrowLoadFailure(error);
  }
  return TakeBuffer(output, output_size);
}

bool SavedModelRestoresVariables(const py::bytes& saved_model) {
  const std::string_view bytes(saved_model);
  return processor_control_savedmodel_restores_variables(bytes.data(), static_cast<int>(bytes.size())) != 0;
}

class ModelHandle {
 public:
  explicit ModelHandle(const std::string& model_name) : handle_(processor_control_new_handle(model_name.c_str())) {}
  ~ModelHandle() { processor_control_delete_handle(handle_); }
  ModelHandle(const ModelHandle&) = delete;
  ModelHandle& operator=(const ModelHandle&) = delete;

  uintptr_t address() const { return reinterpret_cast<uintptr_t>(handle_); }

  // A swap waits for the requests still on the version it replaces: without the GIL, which a Python
  // host's other threads need meanwhile.
  void Install(const Servable& servable, const py::bytes& model_info) {
    std::string info = model_info;
    py::gil_scoped_release release;
    processor_control_install(handle_, servable.get(), info.data(), static_cast<int>(info.size()));
  }

  void SetModelInfo(const py::bytes& model_info) {
    std::string info = model_info;
    py::gil_scoped_release release;
    processor_control_set_model_info(handle_, info.data(), static_cast<int>(info.size()));
  }

  void Unload() {
    py::gil_scoped_release release;
    processor_control_unload(handle_);
  }

  void SetLimits(long long max_request_bytes, long long max_tensor_elements) {
    processor_control_set_limits(handle_, max_request_bytes, max_tensor_elements);
  }

  // Raises LoadError when the file cannot be opened.
  void SetRequestLog(const std::string& path, double sample_rate, long long max_records, long long max_bytes,
                     int backups) {
    char* error = nullptr;
    if (processor_control_set_request_log(handle_, path.c_str(), sample_rate, max_records, max_bytes, backups,
                                          &error) != 0) {
      ThrowLoadFailure(error);
    }
  }

  void SetTimeline(long long start, long long interval, long long count, const std::string& path) {
    processor_control_set_timeline(handle_, start, interval, count, path.c_str());
  }

  std::pair<int, py::bytes> Process(const py::buffer& request, int format) const {
    return ServeWithoutGil(request, [this, format](const void* data, int size, void** output, int* output_size) {
      return process_as(handle_, format, data, size, output, output_size);
    });
  }

  // Processor.predict(): numpy in, numpy out; returns (200, {name: array}) or (code, message bytes).
  // `version` >= 0: answered only by that version, else 404; `strict_signature_name`: a signature_name the
  // version lacks gets 400, not the main signature (processor_control_process_version).
  py::tuple Predict(const py::dict& inputs, const std::vector<std::string>& output_filter,
                    const std::string& signature_name, long long version, bool strict_signature_name) const {
    const std::string request = processor_binding::EncodeRequest(inputs, output_filter, signature_name);
    if (request.size() > INT32_MAX) throw py::value_error("request is larger than 2 GiB, the ABI's limit");
    void* output = nullptr;
    int output_size = 0;
    int code;
    {
      py::gil_scoped_release release;
      code = version < 0 && !strict_signature_name
                 ? process(handle_, request.data(), static_cast<int>(request.size()), &output, &output_size)
                 : processor_control_process_version(handle_, PROCESSOR_FORMAT_DEEPREC, version, strict_signature_name,
                                                     request.data(), static_cast<int>(request.size()), &output,
                                                     &output_size);
    }
    std::unique_ptr<void, decltype(&free_buffer)> owned(output, &free_buffer);
    std::string_view response(static_cast<const char*>(output), output ? output_size : 0);
    if (code != 200) return py::make_tuple(code, py::bytes(response.data(), response.size()));
    return py::make_tuple(code, processor_binding::DecodeResponse(response));
  }

  std::pair<int, py::bytes> Metrics() const {
    void* output = nullptr;
    int output_size = 0;
    const int code = get_metrics(handle_, &output, &output_size);
    return {code, TakeBuffer(output, output_size)};
  }

  std::pair<int, py::bytes> ModelInfo() const {
    void* output = nullptr;
    int output_size = 0;
    const int code = get_serving_model_info(handle_, &output, &output_size);
    return {code, TakeBuffer(output, output_size)};
  }

 private:
  void* handle_;
};

// A Monolith dump's shard, read a block at a time for the Redis importer: the data plane's own reader
// (feature_store/monolith_dump.cc, compiled into this module too), so both stores read one format one way.
class MonolithShard {
 public:
  explicit MonolithShard(const std::string& path) {
    processor::Status status = processor::MonolithShardReader::Open(path, &reader_);
    if (!status.ok()) throw LoadFailure(status.message());
  }

  // (ids int64 [n], rows float32 [n, dim]) of up to `max_entries` entries; None at the end.
  py::object Read(size_t max_entries) {
    std::vector<int64_t> ids;
    std::vector<float> numbers;
    processor::Status status;
    {
      py::gil_scoped_release release;
      status = reader_->Read(max_entries, &ids, &numbers);
    }
    if (!status.ok()) throw LoadFailure(status.message());
    if (ids.empty()) return py::none();
    const py::ssize_t n = static_cast<py::ssize_t>(ids.size()), dim = reader_->dim();
    py::array_t<int64_t> id_array(n);
    std::copy(ids.begin(), ids.end(), id_array.mutable_data());
    py::array_t<float> rows({n, dim});
    std::copy(numbers.begin(), numbers.end(), rows.mutable_data());
    return py::make_tuple(std::move(id_array), std::move(rows));
  }

 private:
  std::unique_ptr<processor::MonolithShardReader> reader_;
};

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "Processor's data plane (libserving_processor_engine.so), as the control plane sees it.";
  py::register_exception<LoadFailure>(m, "LoadError", PyExc_RuntimeError);

  py::class_<Servable, std::shared_ptr<Servable>>(m, "Servable", "One loaded model version.")
      .def("process", &Servable::Process, py::arg("request"), py::arg("format") = 0,
           "Serves a serialized request of `format` (PROCESSOR_FORMAT_*) on this version alone, a TF Serving "
           "request's version unchecked; returns (code, bytes).")
      .def("apply_delta", &Servable::ApplyDelta, py::arg("prefix"), py::arg("variables"),
           "Applies an incremental checkpoint atomically; variables are (name, sparse, key dtype). Raises LoadError.")
      .def_property_readonly(
          "run_interface", [](const Servable& s) { return s.RunInterface(std::nullopt); },
          "(\"callable\" or \"session_run\", why TensorFlow made no callable or \"\"): how requests of the main "
          "signature reach TensorFlow.")
      .def("signature_run_interface", &Servable::RunInterface, py::arg("signature"),
           "run_interface of another signature, also \"unmade\" before its first request. KeyError if not served.")
      .def("variables", &Servable::Variables, "The graph's variables: a serialized control.VariableList.")
      .def("forget_rows", &Servable::ForgetRows, py::arg("variable"), py::arg("ids"),
           "A delta changed these rows (int64 ids; None: all of the table's; variable \"\": every table's) in Redis: "
           "the hot-row cache forgets them.")
      .def("restore", &Servable::Restore, py::arg("request"),
           "Restores a checkpoint (a serialized control.RestoreRequest) into the live session, not atomically for "
           "requests in flight; nothing is restored unless it fits the graph. Raises LoadError.");

  py::class_<LoadPlan>(m, "LoadPlan", "Step 1 of a load: the request read and, with a feature store, the SavedModel's "
                                       "graph read and its embeddings planned.")
      .def(py::init<const py::bytes&>(), py::arg("request"), "From a serialized control.LoadRequest; raises LoadError.")
      .def_property_readonly("embeddings", &LoadPlan::Embeddings,
                             "A serialized control.EmbeddingPlan: what the feature store serves.")
      .def("load", &LoadPlan::Load, py::arg("sources") = py::bytes(),
           "Step 2: loads the version; sources is a serialized control.TableSources. Raises LoadError.");

  py::class_<MonolithShard>(m, "MonolithShard", "A Monolith hash-table dump's shard (TFRecord of EntryDump), "
                                                 "every record's CRC checked.")
      .def(py::init<const std::string&>(), py::arg("path"), "Opens the shard; raises LoadError.")
      .def("read", &MonolithShard::Read, py::arg("max_entries"),
           "(ids int64 [n], rows float32 [n, dim]) of the next entries, None at the end; raises LoadError naming the "
           "record.");

  m.def("crc32c", [](const py::buffer& data, uint32_t crc) {
          py::buffer_info info = data.request();
          py::gil_scoped_release release;
          return processor::Crc32cExtend(crc, info.ptr, static_cast<size_t>(info.size * info.itemsize));
        }, py::arg("data"), py::arg("crc") = 0,
        "CRC-32C (unmasked) of bytes following bytes whose CRC is `crc` (the data plane's; checkpoints and "
        "TFRecords store it masked).");

  m.def("engine_functions", [] {
    py::dict functions;
    functions["process_as"] = reinterpret_cast<uintptr_t>(&process_as);
    functions["free_buffer"] = reinterpret_cast<uintptr_t>(&free_buffer);
    return functions;
  }, "The addresses of the engine's C functions, for processor._grpc (which does not link the engine).");
  m.def("dtype_table", [] {
          std::vector<std::tuple<int, std::string, std::string, std::string, int>> table;
          for (const processor::CarriedDtype& dtype : processor::kCarriedDtypes) {
            table.emplace_back(dtype.number, processor::DataTypeName(dtype.number),
                               processor::kArrayFieldNames[dtype.value_field], std::string(1, dtype.numpy_kind),
                               dtype.numpy_itemsize);
          }
          return table;
        },
        "(number, name, value field, numpy kind, numpy item size) of each dtype the protocol carries: "
        "cpp/common/dtypes.h, for the test that ties Python's table to it.");

  m.def("savedmodel_restores_variables", &SavedModelRestoresVariables, py::arg("saved_model"),
        "Whether saved_model.pb's bytes describe a graph with variables to restore (a saver_def).");
  m.def("session_config", &SessionConfig, py::arg("settings"),
        "The serialized tensorflow.ConfigProto a load with these settings (a serialized control.SessionSettings) "
        "gives its session.");

  py::class_<ModelHandle>(m, "ModelHandle", "The model handle the C ABI serves from (abi/model_handle.h).")
      .def(py::init<const std::string&>(), py::arg("model_name"))
      .def_property_readonly("address", &ModelHandle::address, "The handle as the C ABI's void*.")
      .def("install", &ModelHandle::Install, py::arg("servable"), py::arg("model_info"))
      .def("set_model_info", &ModelHandle::SetModelInfo, py::arg("model_info"))
      .def("unload", &ModelHandle::Unload)
      .def("set_limits", &ModelHandle::SetLimits, py::arg("max_request_bytes"), py::arg("max_tensor_elements"))
      .def("set_request_log", &ModelHandle::SetRequestLog, py::arg("path"), py::arg("sample_rate"), py::arg("max_records"),
           py::arg("max_bytes"), py::arg("backups"))
      .def("set_timeline", &ModelHandle::SetTimeline, py::arg("start"), py::arg("interval"), py::arg("count"), py::arg("path"))
      .def("process", &ModelHandle::Process, py::arg("request"), py::arg("format") = 0)
      .def("model_info", &ModelHandle::ModelInfo)
      .def("metrics", &ModelHandle::Metrics)
      .def("predict", &ModelHandle::Predict, py::arg("inputs"), py::arg("output_filter"), py::arg("signature_name"),
           py::arg("version") = -1, py::arg("strict_signature_name") = false);
}
