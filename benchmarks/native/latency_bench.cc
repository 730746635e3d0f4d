// Native latency/throughput bench: the physical limit (a bare TF_SessionRun loop on the same graph)
// against process() as a host calls it.
//
//   latency_bench raw SAVEDMODEL_DIR CHECKPOINT_PREFIX REQUEST.bin ITERATIONS THREADS SECONDS [inline] [callable]
//   (CHECKPOINT_PREFIX "": the SavedModel's own variables)
//   latency_bench process LIBRARY CONFIG.json REQUEST.bin ITERATIONS THREADS SECONDS
//   latency_bench compare LIBRARY CONFIG.json SAVEDMODEL_DIR CHECKPOINT_PREFIX REQUEST.bin ITERATIONS ROUNDS [inline] [decoding] [callable]
//   latency_bench codec SAVEDMODEL_DIR CHECKPOINT_PREFIX REQUEST.bin ITERATIONS [inline]
//   latency_bench load LIBRARY CONFIG_A.json CONFIG_B.json REQUEST.bin THREADS SECONDS ROUNDS
//   latency_bench cold LIBRARY CONFIG.json REQUEST.bin ITERATIONS ROUNDS MB...
//
// `inline` runs the bare loop's graph in the calling thread (RunOptions.inter_op_thread_pool = -1), as
// process() does with "enable_inline_execute": pass it when CONFIG.json sets that, so that both sides
// run alike. `callable` runs the bare loop through TensorFlow's callable interface (Session::RunCallable,
// as process() does) instead of TF_SessionRun: the limit of the C++ API rather than of the C API.
// raw/process print one JSON object: median/p99/mean latency in ms over ITERATIONS sequential calls,
// and requests/s with THREADS threads over SECONDS.
// compare loads both paths into one process and alternates them in ROUNDS blocks of ITERATIONS calls
// (order swapped every round), so that both see the same CPU frequency, cache and neighbour noise;
// it prints {"raw": {...}, "process": {...}, "ratio": median of the per-round median ratios}. With
// `decoding`, the bare loop also decodes the request into its input tensors and encodes the outputs
// into a response at every call, with this project's codec: the ratio is then what the serving
// machinery (checks, version lookup, metrics, buffers) costs beyond the codec.
// load initializes two models in one process (A and B: batching off and on) and runs THREADS threads
// sending the request for SECONDS against each in turn, ROUNDS times (order swapped every round); it
// prints {"a": {...}, "b": {...}, "b_metrics": B's get_metrics() text}: requests/s (median over rounds)
// and the median and p99 latency of every request of every round.
// codec times, in one process, what process() adds to the bare run in wall time: parsing the request,
// parsing it and writing its values into the input tensors (reused from call to call, as process()
// reuses a thread's), and encoding the model's outputs into a response; then the bare run itself. It
// prints {"parse": {...}, "decode": {...}, "encode": {...}, "raw": {...}}.
// cold times process() on one thread as a server calls it between its other work: before each call
// it writes one byte in every cache line of MB megabytes (0: nothing, the caches stay warm, as in a
// tight loop), which evicts process()'s code and data from the caches as a server's network stack
// and kernel do between two requests; only the call is timed. The MB values alternate in ROUNDS
// blocks of ITERATIONS calls; it prints {"MB": {...}, ...}, each the median over rounds.
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
#include <initializer_list>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "codec/predict_codec.h"
#include "common/tf_handles.h"
#include "model/callable_runner.h"
#include "model/meta_graph.h"
#include "model/session_settings.h"

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

struct Latency {
  double median_ms, p99_ms, mean_ms;
};

Latency Sample(const std::function<void()>& call, int iterations) {
  std::vector<double> samples(iterations);
  for (double& sample : samples) {
    const double start = NowMs();
    call();
    sample = NowMs() - start;
  }
  double sum = 0;
  for (double s : samples) sum += s;
  std::sort(samples.begin(), samples.end());
  return {samples[iterations / 2], samples[std::min<size_t>(iterations - 1, iterations * 99 / 100)], sum / iterations};
}

void WarmUp(const std::function<void()>& call, int iterations) {
  for (int i = 0; i < std::min(iterations, 200); ++i) call();
}

double RequestsPerSecond(const std::function<void()>& call, int threads, double seconds) {
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
  return done / ((NowMs() - start) / 1e3);
}

std::string Json(const Latency& l) {
  char text[160];
  std::snprintf(text, sizeof text, "{\"median_ms\": %.5f, \"p99_ms\": %.5f, \"mean_ms\": %.5f}", l.median_ms, l.p99_ms,
                l.mean_ms);
  return text;
}

void Report(const std::function<void()>& call, int iterations, int threads, double seconds) {
  WarmUp(call, iterations);
  const Latency latency = Sample(call, iterations);
  const double rate = RequestsPerSecond(call, threads, seconds);
  std::string json = Json(latency);
  json.pop_back();
  std::printf("%s, \"threads\": %d, \"requests_per_s\": %.1f}\n", json.c_str(), threads, rate);
}

// Alternates the two calls in blocks; the ratio is the median over rounds of process/raw medians.
void Compare(const std::function<void()>& raw, const std::function<void()>& process, int iterations, int rounds) {
  WarmUp(raw, iterations);
  WarmUp(process, iterations);
  std::vector<Latency> raw_rounds, process_rounds;
  std::vector<double> ratios;
  for (int round = 0; round < rounds; ++round) {
    if (round % 2 == 0) {
      raw_rounds.push_back(Sample(raw, iterations));
      process_rounds.push_back(Sample(process, iterations));
    } else {
      process_rounds.push_back(Sample(process, iterations));
      raw_rounds.push_back(Sample(raw, iterations));
    }
    ratios.push_back(process_rounds.back().median_ms / raw_rounds.back().median_ms);
  }
  auto median_of = [](std::vector<Latency> v, double Latency::*field) {
    std::vector<double> values;
    for (const Latency& l : v) values.push_back(l.*field);
    std::sort(values.begin(), values.end());
    return values[values.size() / 2];
  };
  auto summary = [&](const std::vector<Latency>& v) {
    return Latency{median_of(v, &Latency::median_ms), median_of(v, &Latency::p99_ms), median_of(v, &Latency::mean_ms)};
  };
  std::sort(ratios.begin(), ratios.end());
  std::printf("{\"raw\": %s, \"process\": %s, \"ratio\": %.4f, \"ratio_min\": %.4f, \"ratio_max\": %.4f}\n",
              Json(summary(raw_rounds)).c_str(), Json(summary(process_rounds)).c_str(), ratios[ratios.size() / 2],
              ratios.front(), ratios.back());
}

// The bare TensorFlow path: the same SavedModel and checkpoint, inputs decoded once, then TF_SessionRun
// (or, with `callable`, Session::RunCallable).
class RawPath {
 public:
  RawPath(const char* savedmodel, const char* prefix, const std::string& request, bool run_inline, bool use_callable = false)
      : request_(request) {
    if (run_inline) {
      const std::string options = processor::EncodeRunOptions(-1);
      run_options_.reset(TF_NewBufferFromString(options.data(), options.size()));
    }
    processor::TfStatus status;
    TF_SessionOptions* options = TF_NewSessionOptions();
    TF_Buffer* meta = TF_NewBuffer();
    const char* tags[] = {"serve"};
    session_ = TF_LoadSessionFromSavedModel(options, nullptr, savedmodel, tags, 1, graph_, meta, status.get());
    TF_DeleteSessionOptions(options);
    if (!status.ok()) Die(status.message());
    processor::MetaGraphSpec spec;
    processor::ParseMetaGraph(std::string_view(static_cast<const char*>(meta->data), meta->length), &spec);
    TF_DeleteBuffer(meta);
    if (*prefix) Restore(spec, prefix);  // "": the SavedModel's own variables (or none)
    const processor::SignatureSpec& signature = spec.signatures.at("serving_default");
    processor::RequestView view;
    if (!processor::ParsePredictRequest(request.data(), request.size(), &view).ok()) Die("bad request file");
    std::vector<std::string> feeds, fetches;  // for the callable
    for (const auto& [name, array] : view.inputs) {
      for (const auto& input : signature.inputs) {
        if (input.alias != name) continue;
        TensorPtr tensor;
        if (!processor::MakeTensor(array, &tensor).ok()) Die("bad input " + std::string(name));
        inputs_.push_back(Port(input.tensor_name));
        feeds.push_back(input.tensor_name);
        values_.push_back(tensor.get());
        owned_.push_back(std::move(tensor));
      }
    }
    if (inputs_.size() != view.inputs.size()) Die("the request names an input the signature lacks");
    for (const auto& output : signature.outputs) {
      outputs_.push_back(Port(output.tensor_name));
      output_names_.push_back(output.alias);
      fetches.push_back(output.tensor_name);
    }
    output_name_views_.assign(output_names_.begin(), output_names_.end());
    if (use_callable) {
      const processor::Status made = processor::CallableRunner::Create(
          session_, feeds, fetches, run_inline ? -1 : processor::CallableRunner::kDefaultPool, &callable_);
      if (!made.ok()) Die(made.message());
    }
  }

  // Restores the checkpoint through the saver, as any TF server does.
  void Restore(const processor::MetaGraphSpec& spec, const char* prefix) {
    TensorPtr path(TF_AllocateTensor(TF_STRING, nullptr, 0, sizeof(TF_TString)));
    TF_TString_Init(static_cast<TF_TString*>(TF_TensorData(path.get())));
    TF_TString_Copy(static_cast<TF_TString*>(TF_TensorData(path.get())), prefix, std::strlen(prefix));
    TF_Output filename = Port(spec.saver.filename_tensor_name);
    TF_Tensor* path_value = path.get();
    const TF_Operation* restore = TF_GraphOperationByName(graph_, spec.saver.restore_op_name.c_str());
    processor::TfStatus status;
    TF_SessionRun(session_, nullptr, &filename, &path_value, 1, nullptr, nullptr, 0, &restore, 1, nullptr, status.get());
    if (!status.ok()) Die(status.message());
  }

  // One run's outputs, named as the signature names them, for the encoder to time.
  void RunOnce(std::vector<std::string_view>* names, processor::OwnedTensors* results) {
    results->Reset(outputs_.size());
    processor::TfStatus status;
    Run(results->data(), status);
    if (!status.ok()) Die(status.message());
    *names = output_name_views_;
  }

  // Not inlined, so that a profiler can count exactly one call (make profile).
  __attribute__((noinline)) void Call() {
    std::vector<TF_Tensor*> results(outputs_.size(), nullptr);
    processor::TfStatus status;
    Run(results.data(), status);
    for (TF_Tensor* t : results) TF_DeleteTensor(t);
  }

  // Call() with the request decoded into the input tensors first (written in place, as process()
  // writes a thread's) and the outputs encoded into a response after.
  __attribute__((noinline)) void CallDecoding() {
    if (!processor::ParsePredictRequest(request_.data(), request_.size(), &view_).ok()) Die("bad request file");
    for (size_t i = 0; i < owned_.size(); ++i) {  // the view lists the inputs in the order the constructor took them
      if (!processor::MakeTensor(view_.inputs[i].second, &owned_[i]).ok()) Die("bad input");
      values_[i] = owned_[i].get();
    }
    processor::OwnedTensors results;
    results.Reset(outputs_.size());
    processor::TfStatus status;
    Run(results.data(), status);
    if (!status.ok()) Die(status.message());
    void* response = nullptr;
    int size = 0;
    if (!processor::EncodePredictResponse(output_name_views_, results, &response, &size).ok()) Die("cannot encode");
    std::free(response);
  }

 private:
  void Run(TF_Tensor** results, processor::TfStatus& status) {
    if (callable_) return callable_->Run(values_.data(), results, status.get());
    TF_SessionRun(session_, run_options_.get(), inputs_.data(), values_.data(), static_cast<int>(inputs_.size()), outputs_.data(),
                  results, static_cast<int>(outputs_.size()), nullptr, 0, nullptr, status.get());
  }

  TF_Output Port(const std::string& name) {
    const size_t colon = name.rfind(':');
    TF_Operation* op = TF_GraphOperationByName(graph_, name.substr(0, colon).c_str());
    if (!op) Die("no tensor " + name);
    return TF_Output{op, colon == std::string::npos ? 0 : std::atoi(name.c_str() + colon + 1)};
  }

  TF_Graph* graph_ = TF_NewGraph();  // the bench exits without closing the session: nothing to tear down
  TF_Session* session_ = nullptr;
  processor::BufferPtr run_options_;  // null: TF's defaults
  std::unique_ptr<processor::CallableRunner> callable_;  // null: TF_SessionRun
  std::vector<TF_Output> inputs_, outputs_;
  std::vector<std::string> output_names_;
  std::vector<std::string_view> output_name_views_;
  const std::string request_;
  processor::RequestView view_;
  std::vector<TensorPtr> owned_;
  std::vector<TF_Tensor*> values_;
};

// What a host does: dlopen, initialize, process().
class ProcessPath {
 public:
  ProcessPath(const char* library, const char* config_path, const std::string& request) : request_(request) {
    void* handle = dlopen(library, RTLD_NOW | RTLD_LOCAL);
    if (!handle) Die(dlerror());
    using Initialize = void* (*)(const char*, const char*, int*);
    auto initialize = reinterpret_cast<Initialize>(dlsym(handle, "initialize"));
    process_ = reinterpret_cast<Process>(dlsym(handle, "process"));
    finalize_ = reinterpret_cast<Finalize>(dlsym(handle, "finalize"));
    get_metrics_ = reinterpret_cast<int (*)(void*, void**, int*)>(dlsym(handle, "get_metrics"));
    const std::string config = ReadFile(config_path);
    int state = -1;
    model_ = initialize("", config.c_str(), &state);
    if (!model_ || state != 0) Die("initialize failed");
  }
  ~ProcessPath() { finalize_(model_); }

  std::string Metrics() {
    void* out = nullptr;
    int size = 0;
    if (get_metrics_(model_, &out, &size) != 200) Die("get_metrics failed");
    std::string text(static_cast<const char*>(out), size);
    std::free(out);
    return text;
  }

  __attribute__((noinline)) void Call() {
    void* out = nullptr;
    int size = 0;
    if (process_(model_, request_.data(), static_cast<int>(request_.size()), &out, &size) != 200) Die("process failed");
    std::free(out);
  }

 private:
  using Process = int (*)(void*, const void*, int, void**, int*);
  using Finalize = void (*)(void*);
  const std::string request_;
  Process process_ = nullptr;
  Finalize finalize_ = nullptr;
  int (*get_metrics_)(void*, void**, int*) = nullptr;
  void* model_ = nullptr;
};

// THREADS threads calling `call` for SECONDS: requests/s, and every call's latency appended to `latencies`.
double TimedLoad(const std::function<void()>& call, int threads, double seconds, std::vector<double>* latencies) {
  std::atomic<bool> stop{false};
  std::vector<std::vector<double>> per_thread(threads);
  std::vector<std::thread> workers;
  const double start = NowMs();
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      while (!stop.load(std::memory_order_relaxed)) {
        const double begun = NowMs();
        call();
        per_thread[t].push_back(NowMs() - begun);
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& w : workers) w.join();
  const double elapsed_s = (NowMs() - start) / 1e3;
  size_t done = 0;
  for (const auto& samples : per_thread) {
    done += samples.size();
    latencies->insert(latencies->end(), samples.begin(), samples.end());
  }
  return done / elapsed_s;
}

void CompareUnderLoad(ProcessPath& a, ProcessPath& b, int threads, double seconds, int rounds) {
  std::vector<double> rates[2], latencies[2];
  ProcessPath* paths[2] = {&a, &b};
  for (ProcessPath* path : paths) WarmUp([&] { path->Call(); }, 200);
  for (int round = 0; round < rounds; ++round) {
    for (int k = 0; k < 2; ++k) {
      const int which = round % 2 ? 1 - k : k;
      rates[which].push_back(TimedLoad([&] { paths[which]->Call(); }, threads, seconds, &latencies[which]));
    }
  }
  std::string json = "{";
  for (int which = 0; which < 2; ++which) {
    std::sort(rates[which].begin(), rates[which].end());
    std::vector<double>& l = latencies[which];
    std::sort(l.begin(), l.end());
    char text[200];
    std::snprintf(text, sizeof text, "\"%s\": {\"requests_per_s\": %.1f, \"median_ms\": %.5f, \"p99_ms\": %.5f}, ",
                  which ? "b" : "a", rates[which][rates[which].size() / 2], l[l.size() / 2], l[l.size() * 99 / 100]);
    json += text;
  }
  std::string metrics;
  for (char c : b.Metrics()) {
    if (c == '"' || c == '\\') metrics += '\\', metrics += c;
    else if (c == '\n') metrics += "\\n";
    else metrics += c;
  }
  std::printf("%s\"threads\": %d, \"b_metrics\": \"%s\"}\n", json.c_str(), threads, metrics.c_str());
}

// The codec's share of process(), stage by stage, against the bare run in the same process.
void TimeCodec(RawPath& raw, const std::string& request, int iterations) {
  processor::RequestView view;
  std::vector<TensorPtr> tensors;
  const auto parse = [&] {
    if (!processor::ParsePredictRequest(request.data(), request.size(), &view).ok()) Die("bad request file");
  };
  const auto decode = [&] {
    parse();
    tensors.resize(view.inputs.size());
    for (size_t i = 0; i < view.inputs.size(); ++i) {
      if (!processor::MakeTensor(view.inputs[i].second, &tensors[i]).ok()) Die("bad input");
    }
  };
  std::vector<std::string_view> names;
  processor::OwnedTensors outputs;
  raw.RunOnce(&names, &outputs);
  const auto encode = [&] {
    void* data = nullptr;
    int size = 0;
    if (!processor::EncodePredictResponse(names, outputs, &data, &size).ok()) Die("cannot encode");
    std::free(data);
  };
  const auto run = [&] { raw.Call(); };
  std::string json = "{";
  for (const auto& [label, call] : {std::pair<const char*, std::function<void()>>{"parse", parse}, {"decode", decode},
                                    {"encode", encode}, {"raw", run}}) {
    WarmUp(call, iterations);
    json += std::string(json.size() > 1 ? ", " : "") + "\"" + label + "\": " + Json(Sample(call, iterations));
  }
  std::printf("%s}\n", json.c_str());
}

void TimeCold(ProcessPath& process, int iterations, int rounds, const std::vector<int>& megabytes) {
  const size_t most = static_cast<size_t>(*std::max_element(megabytes.begin(), megabytes.end())) << 20;
  std::vector<char> dirt(most + 64);
  std::vector<std::vector<double>> medians(megabytes.size());
  std::vector<double> samples(iterations);
  WarmUp([&] { process.Call(); }, iterations);
  for (int round = 0; round < rounds; ++round) {
    for (size_t k = 0; k < megabytes.size(); ++k) {
      const size_t index = round % 2 == 0 ? k : megabytes.size() - 1 - k;
      const size_t bytes = static_cast<size_t>(megabytes[index]) << 20;
      for (double& sample : samples) {
        for (size_t i = 0; i < bytes; i += 64) dirt[i]++;
        asm volatile("" : : "r"(dirt.data()) : "memory");  // the writes happen before the call
        const double start = NowMs();
        process.Call();
        sample = NowMs() - start;
      }
      std::sort(samples.begin(), samples.end());
      medians[index].push_back(samples[iterations / 2]);
    }
  }
  std::string json = "{";
  for (size_t k = 0; k < megabytes.size(); ++k) {
    std::vector<double>& m = medians[k];
    std::sort(m.begin(), m.end());
    char entry[96];
    std::snprintf(entry, sizeof entry, "%s\"%d\": {\"median_ms\": %.5f}", k ? ", " : "", megabytes[k], m[m.size() / 2]);
    json += entry;
  }
  std::printf("%s}\n", json.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  // The option words from argv[first] on, each one of `allowed`.
  const auto options = [&](int first, std::initializer_list<std::string> allowed) {
    std::set<std::string> words;
    for (int i = first; i < argc; ++i) {
      if (std::find(allowed.begin(), allowed.end(), argv[i]) == allowed.end()) Die(std::string("unknown option ") + argv[i]);
      words.insert(argv[i]);
    }
    return words;
  };
  const auto inline_flag = [&](int index) { return options(index, {"inline"}).count("inline") > 0; };
  if (mode == "compare" && argc >= 9 && argc <= 12) {
    const std::string request = ReadFile(argv[6]);
    const std::set<std::string> chosen = options(9, {"inline", "decoding", "callable"});
    RawPath raw(argv[4], argv[5], request, chosen.count("inline") > 0, chosen.count("callable") > 0);
    ProcessPath process(argv[2], argv[3], request);
    const std::function<void()> bare = chosen.count("decoding") ? std::function<void()>([&] { raw.CallDecoding(); })
                                                                 : std::function<void()>([&] { raw.Call(); });
    Compare(bare, [&] { process.Call(); }, std::atoi(argv[7]), std::atoi(argv[8]));
    return 0;
  }
  if (mode == "load" && argc == 9) {
    const std::string request = ReadFile(argv[5]);
    ProcessPath a(argv[2], argv[3], request), b(argv[2], argv[4], request);
    CompareUnderLoad(a, b, std::atoi(argv[6]), std::atof(argv[7]), std::atoi(argv[8]));
    return 0;
  }
  if (mode == "cold" && argc >= 8) {
    std::vector<int> megabytes;
    for (int i = 7; i < argc; ++i) megabytes.push_back(std::atoi(argv[i]));
    if (std::atoi(argv[5]) < 1 || std::atoi(argv[6]) < 1 || *std::min_element(megabytes.begin(), megabytes.end()) < 0) {
      Die("cold: ITERATIONS and ROUNDS must be >= 1 and every MB >= 0");
    }
    ProcessPath process(argv[2], argv[3], ReadFile(argv[4]));
    TimeCold(process, std::atoi(argv[5]), std::atoi(argv[6]), megabytes);
    return 0;
  }
  if (mode == "codec" && (argc == 6 || argc == 7)) {
    const std::string request = ReadFile(argv[4]);
    RawPath raw(argv[2], argv[3], request, inline_flag(6));
    TimeCodec(raw, request, std::atoi(argv[5]));
    return 0;
  }
  if ((mode != "raw" || argc < 8 || argc > 10) && (mode != "process" || argc != 8)) {
    Die("usage: latency_bench raw|process|compare|codec|load|cold ... (see the source)");
  }
  const std::string request = ReadFile(argv[4]);
  const int iterations = std::atoi(argv[5]), threads = std::atoi(argv[6]);
  const double seconds = std::atof(argv[7]);
  if (mode == "raw") {
    const std::set<std::string> chosen = options(8, {"inline", "callable"});
    RawPath raw(argv[2], argv[3], request, chosen.count("inline") > 0, chosen.count("callable") > 0);
    Report([&] { raw.Call(); }, iterations, threads, seconds);
  } else {
    ProcessPath process(argv[2], argv[3], request);
    Report([&] { process.Call(); }, iterations, threads, seconds);
  }
  return 0;
}
