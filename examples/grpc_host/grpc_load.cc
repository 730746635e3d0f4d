// A closed-loop load client for grpc_host: CONNECTIONS threads, each with its own channel, send one
// serialized PredictRequest for SECONDS and keep every latency; prints the same line as c_host --bench
// (requests/s, p50, p99, max, errors), so the two compare directly (benchmarks/embedding.py).
// It also prints the library's own mean time in process() over the run ("library: mean X ms"), from
// the host's GetMetrics before and after. With --model-info the threads call GetModelInfo instead:
// the round trip of gRPC with the library answering without running the model; with --echo, Echo:
// the request back without the library (the transport's floor; any server of processor.Processor).
// With --raw METHOD, the file's bytes go unparsed to METHOD of any service (for instance
// /tensorflow.serving.PredictionService/Predict with a serialized TF Serving PredictRequest), and the
// answer's bytes are kept unparsed: the client's own protobuf work is left out.
//
//   grpc_load HOST:PORT REQUEST.bin [SECONDS [CONNECTIONS [--model-info|--echo|--raw METHOD]]]
//
// Every connection is made before the clock starts. Exit status 0 when every call answered OK, 1 when
// one did not or a connection was not ready within 10 s. Build: make load (see Makefile).
#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/client_unary_call.h>
#include <grpcpp/impl/rpc_method.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "processor_service.grpc.pb.h"

namespace {

using Clock = std::chrono::steady_clock;

// The sum (microseconds) and count of the library's request_latency histogram, from GetMetrics.
struct LatencyTotals {
  double sum_us = 0, count = 0;
};

double Value(const std::string& text, const std::string& name) {
  double total = 0;
  for (size_t at = text.find(name); at != std::string::npos; at = text.find(name, at + 1)) {
    if (at > 0 && text[at - 1] != '\n') continue;
    const size_t space = text.find(' ', text.find('}', at));
    total += std::atof(text.c_str() + space + 1);
  }
  return total;
}

bool FetchLatency(processor::Processor::Stub* stub, LatencyTotals* totals) {
  grpc::ClientContext context;
  processor::Metrics metrics;
  if (!stub->GetMetrics(&context, processor::MetricsRequest(), &metrics).ok()) return false;
  totals->sum_us = Value(metrics.text(), ":tensorflow:serving:request_latency_sum{");
  totals->count = Value(metrics.text(), ":tensorflow:serving:request_latency_count{");
  return true;
}

struct Worker {
  std::vector<double> latencies;  // seconds
  long errors = 0;
  std::string first_error;
};

enum class Call { kPredict, kModelInfo, kEcho, kRaw };

void Record(const grpc::Status& status, Clock::time_point started, Worker* worker) {
  const std::chrono::duration<double> elapsed = Clock::now() - started;
  if (status.ok()) {
    worker->latencies.push_back(elapsed.count());
  } else if (worker->errors++ == 0) {
    worker->first_error = std::to_string(status.error_code()) + ": " + status.error_message();
  }
}

// --raw: the bytes to `method`, the answer kept as bytes.
void RunRaw(const std::shared_ptr<grpc::Channel>& channel, const std::string& method, const std::string& wire,
            Clock::time_point deadline, Worker* worker) {
  const grpc::internal::RpcMethod rpc(method.c_str(), grpc::internal::RpcMethod::NORMAL_RPC);
  grpc::Slice slice(wire);
  const grpc::ByteBuffer request(&slice, 1);
  while (Clock::now() < deadline) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    grpc::ByteBuffer response;
    const auto started = Clock::now();
    Record(grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(channel.get(), rpc, &context,
                                                                                 request, &response),
           started, worker);
  }
}

// A channel of its own (a distinct argument keeps gRPC from sharing one connection), connected before
// the clock starts. Debian's gRPC 1.51 client sometimes fails a connect that succeeded: it reads errno
// after calls that overwrite it ("No such file or directory"; fixed upstream in grpc/grpc#35064), then
// waits its reconnect backoff; a short backoff and waiting for READY keep that out of the measurement.
std::shared_ptr<grpc::Channel> Connect(const std::string& address, int index, std::string* error) {
  grpc::ChannelArguments arguments;
  arguments.SetInt("processor.load.connection", index);
  arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
  arguments.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 50);
  auto channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), arguments);
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
    *error = "connection " + std::to_string(index) + " to " + address + " not ready within 10 s";
    return nullptr;
  }
  return channel;
}

void Run(const std::shared_ptr<grpc::Channel>& channel, const tensorflow::eas::PredictRequest& request, Call call,
         const std::string& raw_method, const std::string& wire, Clock::time_point deadline, Worker* worker) {
  if (call == Call::kRaw) return RunRaw(channel, raw_method, wire, deadline, worker);
  auto stub = processor::Processor::NewStub(channel);
  while (Clock::now() < deadline) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    tensorflow::eas::PredictResponse response;
    tensorflow::eas::ServingModelInfo info;
    tensorflow::eas::PredictRequest echo;
    const auto started = Clock::now();
    const grpc::Status status = call == Call::kModelInfo ? stub->GetModelInfo(&context, processor::ModelInfoRequest(), &info)
                                : call == Call::kEcho    ? stub->Echo(&context, request, &echo)
                                                         : stub->Predict(&context, request, &response);
    Record(status, started, worker);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: grpc_load HOST:PORT REQUEST.bin [SECONDS [CONNECTIONS [--model-info|--echo|--raw METHOD]]]\n");
    return 2;
  }
  const double seconds = argc > 3 ? std::atof(argv[3]) : 5;
  const int connections = argc > 4 ? std::atoi(argv[4]) : 1;
  const std::string mode = argc > 5 ? argv[5] : "";
  const Call call = mode == "--model-info" ? Call::kModelInfo
                    : mode == "--echo"     ? Call::kEcho
                    : mode == "--raw"      ? Call::kRaw
                                           : Call::kPredict;
  const std::string raw_method = call == Call::kRaw && argc > 6 ? argv[6] : "";
  if (call == Call::kRaw && raw_method.empty()) {
    std::fprintf(stderr, "grpc_load: --raw needs a METHOD (/package.Service/Method)\n");
    return 2;
  }
  std::ifstream in(argv[2], std::ios::binary);
  const std::string wire((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  tensorflow::eas::PredictRequest request;
  if (!in || (call != Call::kRaw && !request.ParseFromString(wire)) || seconds <= 0 || connections < 1) {
    std::fprintf(stderr, "grpc_load: %s is not a PredictRequest, or SECONDS <= 0 or CONNECTIONS < 1\n", argv[2]);
    return 2;
  }
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int i = 0; i <= connections; ++i) {  // the last one is for GetMetrics
    std::string error;
    channels.push_back(Connect(argv[1], i, &error));
    if (!channels.back()) {
      std::fprintf(stderr, "grpc_load: %s\n", error.c_str());
      return 1;
    }
  }
  auto metrics_stub = processor::Processor::NewStub(channels.back());
  LatencyTotals before, after;
  const bool library_times = call == Call::kPredict && FetchLatency(metrics_stub.get(), &before);
  std::vector<Worker> workers(connections);
  std::vector<std::thread> threads;
  const auto started = Clock::now();
  const auto deadline = started + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  for (int i = 0; i < connections; ++i) {
    threads.emplace_back(Run, channels[i], std::cref(request), call, std::cref(raw_method), std::cref(wire), deadline,
                         &workers[i]);
  }
  for (auto& t : threads) t.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - started).count();
  std::vector<double> all;
  long errors = 0;
  for (const Worker& w : workers) {
    all.insert(all.end(), w.latencies.begin(), w.latencies.end());
    errors += w.errors;
    if (!w.first_error.empty()) std::fprintf(stderr, "grpc_load: %s\n", w.first_error.c_str());
  }
  if (all.empty()) {
    std::printf("bench: no request answered OK (%ld errors)\n", errors);
    return 1;
  }
  std::sort(all.begin(), all.end());
  const size_t n = all.size();
  std::printf("bench: %zu requests in %.2f s on %d connection(s): %.0f requests/s, p50 %.3f ms, p99 %.3f ms, "
              "max %.3f ms, %ld errors\n", n, elapsed, connections, n / elapsed, all[n / 2] * 1e3,
              all[n * 99 / 100] * 1e3, all[n - 1] * 1e3, errors);
  if (library_times && FetchLatency(metrics_stub.get(), &after) && after.count > before.count) {
    std::printf("library: mean %.3f ms over %.0f requests\n",
                (after.sum_us - before.sum_us) / (after.count - before.count) / 1e3, after.count - before.count);
  }
  return errors ? 1 : 0;
}
