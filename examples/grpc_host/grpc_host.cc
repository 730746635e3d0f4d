// A C++ gRPC server that embeds Processor: Debian's gRPC and protobuf, its own classes generated from
// protos/predict.proto, and libserving_processor.so loaded with a plain dlopen().
//
//   grpc_host LIBRARY CONFIG.json [--address HOST:PORT] [--threads N]
//
// Serves processor.Processor (processor_service.proto): Predict, GetModelInfo, GetMetrics and Echo, from up
// to N server threads (default 8). The library's codes become gRPC codes (400 INVALID_ARGUMENT, 503
// UNAVAILABLE, anything else INTERNAL) with the library's message. Prints "listening on HOST:PORT"
// once it serves (port 0 picks a free one); SIGTERM or SIGINT stops it: in-flight calls finish (up to
// 5 s), the model is finalized, it prints "stopped" and exits 0. Build: make (see Makefile).
#include <dlfcn.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>

#include "processor.h"
#include "processor_service.grpc.pb.h"

namespace {

// The C ABI, resolved from the library.
struct Library {
  void* (*initialize)(const char*, const char*, int*);
  int (*process)(void*, const void*, int, void**, int*);
  int (*get_serving_model_info)(void*, void**, int*);
  int (*get_metrics)(void*, void**, int*);
  void (*free_buffer)(void*);
  void (*finalize)(void*);

  bool Load(const char* path) {
    void* handle = dlopen(path, RTLD_NOW);
    if (!handle) {
      std::fprintf(stderr, "grpc_host: %s\n", dlerror());
      return false;
    }
    initialize = reinterpret_cast<decltype(initialize)>(dlsym(handle, "initialize"));
    process = reinterpret_cast<decltype(process)>(dlsym(handle, "process"));
    get_serving_model_info = reinterpret_cast<decltype(get_serving_model_info)>(dlsym(handle, "get_serving_model_info"));
    get_metrics = reinterpret_cast<decltype(get_metrics)>(dlsym(handle, "get_metrics"));
    free_buffer = reinterpret_cast<decltype(free_buffer)>(dlsym(handle, "free_buffer"));
    finalize = reinterpret_cast<decltype(finalize)>(dlsym(handle, "finalize"));
    return initialize && process && get_serving_model_info && get_metrics && free_buffer && finalize;
  }
};

// A buffer the library returned, released with free_buffer().
class Answer {
 public:
  explicit Answer(const Library& library) : library_(library) {}
  ~Answer() { library_.free_buffer(data_); }
  Answer(const Answer&) = delete;
  Answer& operator=(const Answer&) = delete;
  void** data() { return &data_; }
  int* size() { return &size_; }
  std::string text() const { return std::string(static_cast<const char*>(data_), data_ ? size_ : 0); }
  bool ParseInto(google::protobuf::Message* message) const { return message->ParseFromArray(data_, size_); }

 private:
  const Library& library_;
  void* data_ = nullptr;
  int size_ = 0;
};

grpc::Status ToGrpc(int code, const Answer& answer) {
  switch (code) {
    case PROCESSOR_BAD_REQUEST: return {grpc::StatusCode::INVALID_ARGUMENT, answer.text()};
    case PROCESSOR_UNAVAILABLE: return {grpc::StatusCode::UNAVAILABLE, answer.text()};
    default: return {grpc::StatusCode::INTERNAL, answer.text()};
  }
}

class ProcessorService final : public processor::Processor::Service {
 public:
  ProcessorService(const Library& library, void* model) : library_(library), model_(model) {}

  grpc::Status Predict(grpc::ServerContext*, const tensorflow::eas::PredictRequest* request,
                       tensorflow::eas::PredictResponse* response) override {
    std::string wire;
    if (!request->SerializeToString(&wire)) return {grpc::StatusCode::INTERNAL, "cannot serialize the request"};
    Answer answer(library_);
    const int code = library_.process(model_, wire.data(), static_cast<int>(wire.size()), answer.data(), answer.size());
    if (code != PROCESSOR_OK) return ToGrpc(code, answer);
    if (wire.empty()) return grpc::Status::OK;  // an empty request answers with the signature as JSON
    return answer.ParseInto(response) ? grpc::Status::OK
                                      : grpc::Status(grpc::StatusCode::INTERNAL, "unparsable PredictResponse");
  }

  grpc::Status GetModelInfo(grpc::ServerContext*, const processor::ModelInfoRequest*,
                            tensorflow::eas::ServingModelInfo* info) override {
    Answer answer(library_);
    const int code = library_.get_serving_model_info(model_, answer.data(), answer.size());
    if (code != PROCESSOR_OK) return ToGrpc(code, answer);
    return answer.ParseInto(info) ? grpc::Status::OK
                                  : grpc::Status(grpc::StatusCode::INTERNAL, "unparsable ServingModelInfo");
  }

  grpc::Status Echo(grpc::ServerContext*, const tensorflow::eas::PredictRequest* request,
                    tensorflow::eas::PredictRequest* echo) override {
    *echo = *request;
    return grpc::Status::OK;
  }

  grpc::Status GetMetrics(grpc::ServerContext*, const processor::MetricsRequest*,
                          processor::Metrics* metrics) override {
    Answer answer(library_);
    const int code = library_.get_metrics(model_, answer.data(), answer.size());
    if (code != PROCESSOR_OK) return ToGrpc(code, answer);
    metrics->set_text(answer.text());
    return grpc::Status::OK;
  }

 private:
  const Library& library_;
  void* const model_;
};

std::string ReadFile(const char* path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

}  // namespace

int main(int argc, char** argv) {
  GOOGLE_PROTOBUF_VERIFY_VERSION;
  if (argc < 3) {
    std::fprintf(stderr, "usage: grpc_host LIBRARY CONFIG.json [--address HOST:PORT] [--threads N]\n");
    return 2;
  }
  std::string address = "127.0.0.1:8500";
  int threads = 8;
  for (int i = 3; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--address")) address = argv[i + 1];
    else if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[i + 1]);
  }
  // Signals go to the waiting thread below; block them before any thread (gRPC's, TF's) starts.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  Library library;
  if (!library.Load(argv[1])) return 1;
  const std::string config = ReadFile(argv[2]);
  int state = -1;
  void* model = library.initialize("", config.c_str(), &state);
  if (!model) return 1;  // the library said why on stderr

  ProcessorService service(library, model);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MAX_POLLERS, threads);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    std::fprintf(stderr, "grpc_host: cannot listen on %s\n", address.c_str());
    library.finalize(model);
    return 1;
  }
  std::printf("listening on %s:%d\n", address.substr(0, address.rfind(':')).c_str(), port);
  std::fflush(stdout);

  std::thread stopper([&] {
    int signal_number = 0;
    sigwait(&stop_signals, &signal_number);
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  });
  server->Wait();
  stopper.join();
  library.finalize(model);
  std::printf("stopped\n");
  return 0;
}
