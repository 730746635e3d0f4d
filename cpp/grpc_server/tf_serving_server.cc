// processor._grpc: TF Serving's gRPC API (tensorflow.serving.PredictionService and ModelService) served
// from C++ with Debian's gRPC, inside `python -m processor serve`.
//
// Predict never enters Python: the request's bytes are routed by their ModelSpec (codec/model_spec.h)
// to a model handle and handed to the engine's process_as() as they came off the wire, and the
// engine's response buffer goes back as the reply's slice without a copy. Everything else
// (GetModelMetadata, GetModelStatus, HandleReloadConfigRequest, Classify, Regress) is rare and goes to
// a Python callable with the request's bytes. The control plane publishes which handle serves which
// model, version and label with set_routes(); a publication returns once no request still uses the
// routes it replaced, so the control plane may then release the handles those named.
//
// This module links Debian's gRPC and protobuf and not the engine (whose TensorFlow carries its own
// protobuf): it calls the engine through the addresses of its C functions, which processor._core
// gives (_core.engine_functions()).
#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/rpc_service_method.h>
#include <grpcpp/impl/service_type.h>
#include <grpcpp/support/method_handler.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <utility>

#include "codec/model_spec.h"
#include "common/wire_format.h"
#include "processor.h"

namespace py = pybind11;

namespace processor {
namespace {

// The engine's C functions (include/processor.h), as addresses.
struct Engine {
  int (*process_as)(void*, int, const void*, int, void**, int*) = nullptr;
  void (*free_buffer)(void*) = nullptr;
};

// Where a model's requests go. Handles are the engine's model handles (the C ABI's `void*`).
struct ModelRoutes {
  void* latest = nullptr;      // answers requests naming no version; null when none is ready
  std::map<int64_t, void*> versions;            // versions loaded side by side (specific, all, latest N)
  std::map<std::string, int64_t, std::less<>> labels;  // version_labels
};
using RouteTable = std::map<std::string, ModelRoutes, std::less<>>;

// The published routes: requests take a reference, a publication waits for the old ones to go.
class Routes {
 public:
  std::shared_ptr<const RouteTable> Get() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return table_;
  }

  void Set(std::shared_ptr<const RouteTable> table) {
    std::shared_ptr<const RouteTable> previous;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      previous = std::exchange(table_, std::move(table));
    }
    while (previous && previous.use_count() > 1) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }

 private:
  mutable std::mutex mutex_;
  std::shared_ptr<const RouteTable> table_ = std::make_shared<const RouteTable>();
};

grpc::Status FromEngine(int code, std::string message) {
  switch (code) {
    case PROCESSOR_BAD_REQUEST:
      return {message.rfind(kUnknownSignaturePrefix, 0) == 0 ? grpc::StatusCode::FAILED_PRECONDITION
                                                             : grpc::StatusCode::INVALID_ARGUMENT,
              std::move(message)};
    case PROCESSOR_NOT_FOUND: return {grpc::StatusCode::NOT_FOUND, std::move(message)};
    case PROCESSOR_UNAVAILABLE: return {grpc::StatusCode::UNAVAILABLE, std::move(message)};
    default: return {grpc::StatusCode::INTERNAL, std::move(message)};
  }
}

std::string ServableRequest(const ModelSpecView& spec) {
  if (spec.has_version) return "Specific(" + std::string(spec.name) + ", " + std::to_string(spec.version) + ")";
  return "Latest(" + std::string(spec.name) + ")";
}

// The handle a request goes to, as TF Serving's ServerCore picks the servable: a label names a version,
// a version its own servable, and no version the newest. A label on a model with one swapping handle
// sets *pinned to its version, which the engine must then check (see Pinned()).
grpc::Status Route(const RouteTable& table, const ModelSpecView& spec, void** handle, int64_t* pinned) {
  const auto model = table.find(spec.name);
  if (model == table.end()) {
    return {grpc::StatusCode::NOT_FOUND, "Servable not found for request: " + ServableRequest(spec)};
  }
  const ModelRoutes& routes = model->second;
  int64_t version = spec.version;
  bool has_version = spec.has_version;
  if (!spec.version_label.empty()) {
    const auto label = routes.labels.find(spec.version_label);
    if (label == routes.labels.end()) {
      return {grpc::StatusCode::INVALID_ARGUMENT,
              "Unrecognized servable version label: " + std::string(spec.version_label)};
    }
    version = label->second;
    has_version = true;
  }
  if (has_version && !routes.versions.empty()) {
    const auto found = routes.versions.find(version);
    if (found == routes.versions.end()) {
      return {grpc::StatusCode::NOT_FOUND, "Servable not found for request: Specific(" + std::string(spec.name) +
                                               ", " + std::to_string(version) + ")"};
    }
    *handle = found->second;
    return grpc::Status::OK;
  }
  // One swapping handle: the engine answers a request naming a version only from that version.
  if (!routes.latest) {
    return {grpc::StatusCode::NOT_FOUND, "Servable not found for request: " + ServableRequest(spec)};
  }
  if (!spec.version_label.empty()) *pinned = version;
  *handle = routes.latest;
  return grpc::Status::OK;
}

// `request` with model_spec.version set to `version`: a second model_spec appended, which protobuf
// merges into the first (and which replaces its version_label: a oneof), so the engine's version check
// applies to a labelled request too.
std::string Pinned(const grpc::Slice& request, int64_t version) {
  std::string bytes(reinterpret_cast<const char*>(request.begin()), request.size());
  std::string value;  // Int64Value { value = 1 }
  value.push_back(0x08);
  wire::AppendVarint(&value, static_cast<uint64_t>(version));
  std::string spec;  // ModelSpec { version = 2 }
  spec.push_back(0x12);
  wire::AppendVarint(&spec, value.size());
  spec += value;
  bytes.push_back(0x0a);  // PredictRequest { model_spec = 1 }
  wire::AppendVarint(&bytes, spec.size());
  bytes += spec;
  return bytes;
}

// A Python callable (method, request bytes) -> (grpc code, message, response bytes) for the rare RPCs.
using ControlCall = std::function<grpc::Status(const std::string&, const std::string&, std::string*)>;

class TfServingService final : public grpc::Service {
 public:
  TfServingService(const Engine& engine, const Routes& routes, ControlCall control)
      : engine_(engine), routes_(routes), control_(std::move(control)) {
    AddRaw("/tensorflow.serving.PredictionService/Predict",
           [](TfServingService* s, grpc::ServerContext*, const grpc::ByteBuffer* in, grpc::ByteBuffer* out) {
             return s->Predict(*in, out);
           });
    for (const char* method : {"/tensorflow.serving.PredictionService/GetModelMetadata",
                               "/tensorflow.serving.PredictionService/Classify",
                               "/tensorflow.serving.PredictionService/Regress",
                               "/tensorflow.serving.PredictionService/MultiInference",
                               "/tensorflow.serving.ModelService/GetModelStatus",
                               "/tensorflow.serving.ModelService/HandleReloadConfigRequest"}) {
      const std::string name = method;
      AddRaw(method, [name](TfServingService* s, grpc::ServerContext*, const grpc::ByteBuffer* in,
                            grpc::ByteBuffer* out) { return s->Control(name, *in, out); });
    }
  }

 private:
  template <typename Fn>
  void AddRaw(const char* method, Fn fn) {
    AddMethod(new grpc::internal::RpcServiceMethod(
        method, grpc::internal::RpcMethod::NORMAL_RPC,
        new grpc::internal::RpcMethodHandler<TfServingService, grpc::ByteBuffer, grpc::ByteBuffer, grpc::ByteBuffer,
                                             grpc::ByteBuffer>(std::move(fn), this)));
  }

  // The request's bytes in one slice: the message's own when gRPC received it in one (no copy).
  static bool ReadRequest(const grpc::ByteBuffer& in, grpc::Slice* request) {
    return in.TrySingleSlice(request).ok() || in.DumpToSingleSlice(request).ok();
  }

  grpc::Status Predict(const grpc::ByteBuffer& in, grpc::ByteBuffer* out) {
    grpc::Slice request;
    if (!ReadRequest(in, &request)) return {grpc::StatusCode::INTERNAL, "cannot read the request"};
    ModelSpecView spec;
    Status parsed = PeekModelSpec(request.begin(), request.size(), &spec);
    if (!parsed.ok()) return {grpc::StatusCode::INVALID_ARGUMENT, parsed.message()};
    const std::shared_ptr<const RouteTable> table = routes_.Get();  // keeps the handle alive until we answer
    void* handle = nullptr;
    int64_t pinned = -1;
    grpc::Status routed = Route(*table, spec, &handle, &pinned);
    if (!routed.ok()) return routed;
    const std::string pinned_request = pinned >= 0 ? Pinned(request, pinned) : std::string();
    const void* bytes = pinned >= 0 ? static_cast<const void*>(pinned_request.data()) : request.begin();
    const size_t length = pinned >= 0 ? pinned_request.size() : request.size();
    if (length > static_cast<size_t>(INT32_MAX)) {
      return {grpc::StatusCode::INVALID_ARGUMENT, "the request is larger than 2 GiB"};
    }
    void* response = nullptr;
    int size = 0;
    const int code = engine_.process_as(handle, PROCESSOR_FORMAT_TF_SERVING_PREDICT, bytes, static_cast<int>(length),
                                        &response, &size);
    if (code != PROCESSOR_OK) {
      std::string message(static_cast<const char*>(response), response ? size : 0);
      engine_.free_buffer(response);
      return FromEngine(code, std::move(message));
    }
    grpc::Slice reply(response, static_cast<size_t>(size), engine_.free_buffer);  // the engine's buffer, not copied
    *out = grpc::ByteBuffer(&reply, 1);
    return grpc::Status::OK;
  }

  grpc::Status Control(const std::string& method, const grpc::ByteBuffer& in, grpc::ByteBuffer* out) {
    grpc::Slice request;
    if (!ReadRequest(in, &request)) return {grpc::StatusCode::INTERNAL, "cannot read the request"};
    std::string response;
    grpc::Status status =
        control_(method, std::string(reinterpret_cast<const char*>(request.begin()), request.size()), &response);
    if (!status.ok()) return status;
    grpc::Slice reply(response);
    *out = grpc::ByteBuffer(&reply, 1);
    return grpc::Status::OK;
  }

  const Engine& engine_;
  const Routes& routes_;
  ControlCall control_;
};

// The server object Python holds.
class Server {
 public:
  Server(const py::dict& engine_functions, py::object control) : control_(std::move(control)) {
    engine_.process_as = reinterpret_cast<decltype(engine_.process_as)>(engine_functions["process_as"].cast<uintptr_t>());
    engine_.free_buffer =
        reinterpret_cast<decltype(engine_.free_buffer)>(engine_functions["free_buffer"].cast<uintptr_t>());
    if (!engine_.process_as || !engine_.free_buffer) throw py::value_error("engine_functions lacks an address");
  }

  ~Server() { Stop(0); }

  // Listens on `address` (host:port; port 0 picks one), and on `socket_path` (a UNIX socket) unless
  // empty, and returns the port. `channel_arguments`: (key, int or str) pairs for gRPC, after this
  // server's own (TF Serving's --grpc_channel_arguments). `ssl`: None, or (server_key, server_cert,
  // custom_ca, client_verify) as TF Serving's SSLConfig holds them (PEM text).
  int Start(const std::string& address, int threads, int max_message_bytes, const py::list& channel_arguments,
            const py::object& ssl, const std::string& socket_path) {
    if (server_) throw std::runtime_error("the gRPC server is already started");
    service_ = std::make_unique<TfServingService>(engine_, routes_, [this](const std::string& method,
                                                                           const std::string& request,
                                                                           std::string* response) {
      return CallPython(method, request, response);
    });
    std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
    if (!ssl.is_none()) {  // TF Serving's BuildServerCredentialsFromSSLConfigFile
      using SslTuple = std::tuple<std::string, std::string, std::string, bool>;
      const auto [key, cert, custom_ca, client_verify] = ssl.cast<SslTuple>();
      grpc::SslServerCredentialsOptions options;
      options.pem_key_cert_pairs.push_back({key, cert});
      options.force_client_auth = client_verify;
      if (!custom_ca.empty()) options.pem_root_certs = custom_ca;
      credentials = grpc::SslServerCredentials(options);
    }
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort(address, credentials, &port);
    if (!socket_path.empty()) builder.AddListeningPort("unix:" + socket_path, credentials);
    builder.RegisterService(service_.get());
    // A port another process holds is an error, not a port to share: gRPC's default SO_REUSEPORT would
    // let a second server take half the connections silently.
    builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    bool max_receive_given = false, max_send_given = false;
    for (const py::handle item : channel_arguments) {
      const auto pair = item.cast<py::tuple>();
      const std::string key = pair[0].cast<std::string>();
      if (py::isinstance<py::int_>(pair[1])) builder.AddChannelArgument(key, pair[1].cast<int>());
      else builder.AddChannelArgument(key, pair[1].cast<std::string>());
      max_receive_given |= key == GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
      max_send_given |= key == GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    }
    // The builder's sizes would override the channel arguments' (ServerBuilder::BuildAndStart sets them last).
    if (!max_receive_given) builder.SetMaxReceiveMessageSize(max_message_bytes);
    if (!max_send_given) builder.SetMaxSendMessageSize(INT32_MAX);
    builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MAX_POLLERS, threads);
    {
      py::gil_scoped_release release;
      server_ = builder.BuildAndStart();
    }
    if (!server_ || port == 0) {
      server_.reset();
      throw std::runtime_error("cannot listen on " + address + (socket_path.empty() ? "" : " and unix:" + socket_path) +
                               " (is the port in use?)");
    }
    return port;
  }

  // Stops taking calls; calls in flight get up to `grace_seconds` to answer.
  void Stop(double grace_seconds) {
    if (!server_) return;
    {
      py::gil_scoped_release release;  // calls in flight may need the GIL (control RPCs) to finish
      server_->Shutdown(std::chrono::system_clock::now() +
                        std::chrono::microseconds(static_cast<int64_t>(grace_seconds * 1e6)));
      server_->Wait();
    }
    server_.reset();
  }

  // routes: {model name: {"latest": handle or 0, "versions": {version: handle},
  // "labels": {label: version}}}. Returns once no request uses the routes replaced.
  void SetRoutes(const py::dict& routes) {
    auto table = std::make_shared<RouteTable>();
    for (const auto& [name, entry] : routes) {
      const py::dict model = entry.cast<py::dict>();
      ModelRoutes& r = (*table)[name.cast<std::string>()];
      r.latest = reinterpret_cast<void*>(model["latest"].cast<uintptr_t>());
      for (const auto& [version, handle] : model["versions"].cast<py::dict>()) {
        r.versions[version.cast<int64_t>()] = reinterpret_cast<void*>(handle.cast<uintptr_t>());
      }
      for (const auto& [label, version] : model["labels"].cast<py::dict>()) {
        r.labels[label.cast<std::string>()] = version.cast<int64_t>();
      }
    }
    py::gil_scoped_release release;  // requests in flight never need the GIL, but other Python threads do
    routes_.Set(std::move(table));
  }

 private:
  grpc::Status CallPython(const std::string& method, const std::string& request, std::string* response) {
    py::gil_scoped_acquire gil;
    try {
      py::tuple result = control_(method, py::bytes(request));
      const int code = result[0].cast<int>();
      if (code != 0) return {static_cast<grpc::StatusCode>(code), result[1].cast<std::string>()};
      *response = result[2].cast<std::string>();
      return grpc::Status::OK;
    } catch (const std::exception& e) {
      return {grpc::StatusCode::INTERNAL, std::string("the control plane failed: ") + e.what()};
    }
  }

  Engine engine_;
  Routes routes_;
  py::object control_;
  std::unique_ptr<TfServingService> service_;
  std::unique_ptr<grpc::Server> server_;
};

}  // namespace
}  // namespace processor

PYBIND11_MODULE(_grpc, m) {
  m.doc() = "TF Serving's gRPC API served from C++ (cpp/grpc_server/tf_serving_server.cc).";
  py::class_<processor::Server>(m, "Server")
      .def(py::init<const py::dict&, py::object>(), py::arg("engine_functions"), py::arg("control"),
           "engine_functions: _core.engine_functions(); control(method, request) -> (grpc code, message, "
           "response bytes) for every RPC but Predict.")
      .def("start", &processor::Server::Start, py::arg("address"), py::arg("threads"), py::arg("max_message_bytes"),
           py::arg("channel_arguments") = py::list(), py::arg("ssl") = py::none(), py::arg("socket_path") = "")
      .def("stop", &processor::Server::Stop, py::arg("grace_seconds") = 5.0)
      .def("set_routes", &processor::Server::SetRoutes, py::arg("routes"));
}
