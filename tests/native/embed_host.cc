// A C++ host of the kind the library is embedded in: it links the system's libprotobuf (and, as built
// by tests/test_embedding.py, jemalloc or tcmalloc), uses its own classes generated from
// protos/predict.proto by the system's protoc, and loads the library with the flags it is given.
//
//   embed_host MODE LIBRARY CONFIG.json REQUEST.bin OUT_DIR THREADS SECONDS
//
// MODE: now (dlopen RTLD_NOW), local (RTLD_NOW | RTLD_LOCAL), global (RTLD_NOW | RTLD_GLOBAL), lazy
// (RTLD_LAZY), or linked (the host was linked with -lserving_processor; LIBRARY is not opened).
// It parses REQUEST.bin with its own protobuf, sends it back re-serialized from THREADS threads for
// SECONDS, parses every 200 answer with its own protobuf, releases every buffer with free(), and writes
// each distinct answer to OUT_DIR/answer-<i>.bin. A malformed request must get 400. It prints
// "initialized" once initialize() returned; last line, JSON:
// {"requests": N, "ok": N, "failed": N, "distinct": N, "bad_request_code": C, "first_failure": "..."}.
#include <dlfcn.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "predict.pb.h"
#include "processor.h"

namespace {

struct Abi {
  void* (*initialize)(const char*, const char*, int*);
  int (*process)(void*, const void*, int, void**, int*);
  int (*get_serving_model_info)(void*, void**, int*);
  void (*finalize)(void*);
};

std::string ReadFile(const char* path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "embed_host: %s\n", message.c_str());
  std::exit(2);
}

Abi Load(const std::string& mode, const char* library) {
  if (mode == "linked") {
#ifdef EMBED_HOST_LINKED
    return {&initialize, &process, &get_serving_model_info, &finalize};
#else
    Die("built without -DEMBED_HOST_LINKED");
#endif
  }
  int flags = 0;
  if (mode == "now") flags = RTLD_NOW;
  else if (mode == "local") flags = RTLD_NOW | RTLD_LOCAL;
  else if (mode == "global") flags = RTLD_NOW | RTLD_GLOBAL;
  else if (mode == "lazy") flags = RTLD_LAZY;
  else Die("unknown mode " + mode);
  void* handle = dlopen(library, flags);
  if (!handle) Die(std::string("dlopen: ") + dlerror());
  Abi abi;
  abi.initialize = reinterpret_cast<decltype(abi.initialize)>(dlsym(handle, "initialize"));
  abi.process = reinterpret_cast<decltype(abi.process)>(dlsym(handle, "process"));
  abi.get_serving_model_info = reinterpret_cast<decltype(abi.get_serving_model_info)>(dlsym(handle, "get_serving_model_info"));
  abi.finalize = reinterpret_cast<decltype(abi.finalize)>(dlsym(handle, "finalize"));
  if (!abi.initialize || !abi.process || !abi.get_serving_model_info || !abi.finalize) Die("a function is missing");
  return abi;
}

std::string JsonString(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) c = ' ';
    out += c;
  }
  return out + "\"";
}

}  // namespace

int main(int argc, char** argv) {
  GOOGLE_PROTOBUF_VERIFY_VERSION;
  if (argc != 8) Die("usage: embed_host MODE LIBRARY CONFIG.json REQUEST.bin OUT_DIR THREADS SECONDS");
  const std::string mode = argv[1];
  const std::string config = ReadFile(argv[3]);
  const std::string out_dir = argv[5];
  const int threads = std::atoi(argv[6]);
  const double seconds = std::atof(argv[7]);

  // The host's own protobuf reads and writes the request: its runtime is in use beside TensorFlow's.
  tensorflow::eas::PredictRequest request;
  if (!request.ParseFromString(ReadFile(argv[4]))) Die("the request file is not a PredictRequest");
  const std::string wire = request.SerializeAsString();

  Abi abi = Load(mode, argv[2]);
  int state = 1;
  void* model = abi.initialize("", config.c_str(), &state);
  if (!model || state != 0) Die("initialize failed, state " + std::to_string(state));
  std::printf("initialized\n");
  std::fflush(stdout);

  void* out = nullptr;
  int size = 0;
  const char garbage[] = "\xff\xfe\xfd";
  const int bad_request_code = abi.process(model, garbage, 3, &out, &size);
  std::free(out);

  std::atomic<long> requests{0}, ok{0}, failed{0};
  std::mutex mutex;
  std::set<std::string> distinct;
  std::string first_failure;
  std::atomic<bool> stop{false};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      tensorflow::eas::PredictResponse response;
      while (!stop.load()) {
        void* answer = nullptr;
        int answer_size = 0;
        const int code = abi.process(model, wire.data(), static_cast<int>(wire.size()), &answer, &answer_size);
        std::string bytes(static_cast<const char*>(answer), answer ? answer_size : 0);
        std::free(answer);  // the host's free(): the library's buffers come from the process's malloc
        ++requests;
        const bool parsed = code == PROCESSOR_OK && response.ParseFromString(bytes) && response.outputs().count("prob");
        if (parsed) {
          ++ok;
          std::lock_guard<std::mutex> lock(mutex);
          if (distinct.size() < 64) distinct.insert(bytes);
        } else {
          ++failed;
          std::lock_guard<std::mutex> lock(mutex);
          if (first_failure.empty()) first_failure = std::to_string(code) + ": " + (code == PROCESSOR_OK ? "unparsable response" : bytes);
        }
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& worker : workers) worker.join();

  int index = 0;
  for (const std::string& bytes : distinct) {
    std::ofstream(out_dir + "/answer-" + std::to_string(index++) + ".bin", std::ios::binary) << bytes;
  }
  abi.finalize(model);
  std::printf("{\"requests\": %ld, \"ok\": %ld, \"failed\": %ld, \"distinct\": %zu, \"bad_request_code\": %d, "
              "\"first_failure\": %s}\n",
              requests.load(), ok.load(), failed.load(), distinct.size(), bad_request_code,
              JsonString(first_failure).c_str());
  google::protobuf::ShutdownProtobufLibrary();
  return 0;
}
