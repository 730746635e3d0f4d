// Native latency/throughput bench: the physical limit (a bare TF_SessionRun loop on the same graph)
// against process() as a host calls it.
//
//   latency_bench raw SAVEDMODEL_DIR CHECKPOINT_PREFIX REQUEST.bin ITERATIONS THREADS SECONDS
//   latency_bench process LIBRARY CONFIG.json REQUEST.bin ITERATIONS THREADS SECONDS
//
// Prints one JSON object: median/p99/mean latency in ms over ITERATIONS sequential calls, and
// requests/s with THREADS threads over SECONDS.
#include <dlfcn.h>
#include <tensorflow/c/c_api.h>
#include <tensorflow/c/tf_tstring.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "codec/predict_codec.h"
#include "common/tf_handles.h"
#include "model/meta_graph.h"

using processor::TensorPtr;

namespace {

std::string ReadFile(const char* path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "latency_bench: %s\n", message.c_str());
  std::exit(1);
}

double NowMs() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void Report(const std::function<void()>& call, int iterations, int threads, double seconds) {
  for (int i = 0; i < std::min(iterations, 200); ++i) call();  // warm up
  std::vector<double> samples(iterations);
  for (double& sample : samples) {
    const double start = NowMs();
    call();
    sample = NowMs() - start;
  }
  std::vector<double> sorted = samples;
  std::sort(sorted.begin(), sorted.end());
  double sum = 0;
  for (double s : samples) sum += s;
  std::atomic<bool> stop{false};
  std::atomic<long> done{0};
  std::vector<std::thread> workers;
  const double start = NowMs();
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      long count = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        call();
        ++count;
      }
      done += count;
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& w : workers) w.join();
  const double elapsed_s = (NowMs() - start) / 1e3;
  std::printf("{\"median_ms\": %.5f, \"p99_ms\": %.5f, \"mean_ms\": %.5f, \"threads\": %d, \"requests_per_s\": %.1f}\n",
              sorted[iterations / 2], sorted[std::min<size_t>(iterations - 1, iterations * 99 / 100)], sum / iterations,
              threads, done / elapsed_s);
}

// The bare TensorFlow path: the same SavedModel and checkpoint, inputs decoded once, then TF_SessionRun.
void RawBench(const char* savedmodel, const char* prefix, const std::string& request, int iterations, int threads,
              double seconds) {
  processor::TfStatus status;
  TF_SessionOptions* options = TF_NewSessionOptions();
  TF_Graph* graph = TF_NewGraph();
  TF_Buffer* meta = TF_NewBuffer();
  const char* tags[] = {"serve"};
  TF_Session* session = TF_LoadSessionFromSavedModel(options, nullptr, savedmodel, tags, 1, graph, meta, status.get());
  if (!status.ok()) Die(status.message());
  processor::MetaGraphSpec spec;
  processor::ParseMetaGraph(std::string_view(static_cast<const char*>(meta->data), meta->length), &spec);
  auto port = [&](const std::string& name) {
    const size_t colon = name.rfind(':');
    TF_Operation* op = TF_GraphOperationByName(graph, name.substr(0, colon).c_str());
    if (!op) Die("no tensor " + name);
    return TF_Output{op, colon == std::string::npos ? 0 : std::atoi(name.c_str() + colon + 1)};
  };
  // Restore the checkpoint through the saver, as any TF server does.
  TensorPtr path(TF_AllocateTensor(TF_STRING, nullptr, 0, sizeof(TF_TString)));
  TF_TString_Init(static_cast<TF_TString*>(TF_TensorData(path.get())));
  TF_TString_Copy(static_cast<TF_TString*>(TF_TensorData(path.get())), prefix, std::strlen(prefix));
  TF_Output filename = port(spec.saver.filename_tensor_name);
  TF_Tensor* path_value = path.get();
  const TF_Operation* restore = TF_GraphOperationByName(graph, spec.saver.restore_op_name.c_str());
  TF_SessionRun(session, nullptr, &filename, &path_value, 1, nullptr, nullptr, 0, &restore, 1, nullptr, status.get());
  if (!status.ok()) Die(status.message());

  const processor::SignatureSpec& signature = spec.signatures.at("serving_default");
  processor::RequestView view;
  if (!processor::ParsePredictRequest(request.data(), request.size(), &view).ok()) Die("bad request file");
  std::vector<TF_Output> inputs;
  std::vector<TensorPtr> owned;
  std::vector<TF_Tensor*> values;
  for (const auto& [name, array] : view.inputs) {
    for (const auto& input : signature.inputs) {
      if (input.alias != name) continue;
      TensorPtr tensor;
      if (!processor::MakeTensor(array, &tensor).ok()) Die("bad input " + std::string(name));
      inputs.push_back(port(input.tensor_name));
      values.push_back(tensor.get());
      owned.push_back(std::move(tensor));
    }
  }
  std::vector<TF_Output> outputs;
  for (const auto& output : signature.outputs) outputs.push_back(port(output.tensor_name));
  Report([&] {
    std::vector<TF_Tensor*> results(outputs.size(), nullptr);
    processor::TfStatus run_status;
    TF_SessionRun(session, nullptr, inputs.data(), values.data(), static_cast<int>(inputs.size()), outputs.data(),
                  results.data(), static_cast<int>(outputs.size()), nullptr, 0, nullptr, run_status.get());
    for (TF_Tensor* t : results) TF_DeleteTensor(t);
  }, iterations, threads, seconds);
}

// What a host does: dlopen, initialize, process().
void ProcessBench(const char* library, const char* config_path, const std::string& request, int iterations,
                  int threads, double seconds) {
  void* handle = dlopen(library, RTLD_NOW | RTLD_LOCAL);
  if (!handle) Die(dlerror());
  using Initialize = void* (*)(const char*, const char*, int*);
  using Process = int (*)(void*, const void*, int, void**, int*);
  using Finalize = void (*)(void*);
  auto initialize = reinterpret_cast<Initialize>(dlsym(handle, "initialize"));
  auto process = reinterpret_cast<Process>(dlsym(handle, "process"));
  auto finalize = reinterpret_cast<Finalize>(dlsym(handle, "finalize"));
  const std::string config = ReadFile(config_path);
  int state = -1;
  void* model = initialize("", config.c_str(), &state);
  if (!model || state != 0) Die("initialize failed");
  Report([&] {
    void* out = nullptr;
    int size = 0;
    if (process(model, request.data(), static_cast<int>(request.size()), &out, &size) != 200) Die("process failed");
    std::free(out);
  }, iterations, threads, seconds);
  finalize(model);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 8) Die("usage: latency_bench raw|process ... (see the source)");
  const std::string request = ReadFile(argv[4]);
  const int iterations = std::atoi(argv[5]), threads = std::atoi(argv[6]);
  const double seconds = std::atof(argv[7]);
  if (std::string(argv[1]) == "raw") RawBench(argv[2], argv[3], request, iterations, threads, seconds);
  else ProcessBench(argv[2], argv[3], request, iterations, threads, seconds);
  return 0;
}
