// batching/: requests' tensors merged along dimension 0 and split back (batch_tensors.h), and the
// scheduler that decides who runs with whom (batch_scheduler.h), driven by a run function that
// answers each row with its input doubled, so that every caller can check it got its own rows.
// tests/test_batching.py runs real models through it.
#include <gtest/gtest.h>
#include <tensorflow/c/tf_tstring.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "batching/batch_scheduler.h"
#include "batching/batch_tensors.h"

namespace processor {
namespace {

TensorPtr Floats(std::vector<int64_t> dims, std::vector<float> values) {
  TensorPtr t(TF_AllocateTensor(TF_FLOAT, dims.data(), static_cast<int>(dims.size()), values.size() * sizeof(float)));
  std::copy(values.begin(), values.end(), static_cast<float*>(TF_TensorData(t.get())));
  return t;
}

std::vector<float> ValuesOf(const TF_Tensor* t) {
  const float* data = static_cast<const float*>(TF_TensorData(t));
  return std::vector<float>(data, data + TF_TensorElementCount(t));
}

TensorPtr Strings(const std::vector<std::string>& values) {
  const int64_t dims[] = {static_cast<int64_t>(values.size())};
  TensorPtr t(TF_AllocateTensor(TF_STRING, dims, 1, values.size() * sizeof(TF_TString)));
  auto* out = static_cast<TF_TString*>(TF_TensorData(t.get()));
  for (size_t i = 0; i < values.size(); ++i) {
    TF_TString_Init(&out[i]);
    TF_TString_Copy(&out[i], values[i].data(), values[i].size());
  }
  return t;
}

std::vector<std::string> StringsOf(const TF_Tensor* t) {
  const auto* data = static_cast<const TF_TString*>(TF_TensorData(t));
  std::vector<std::string> values;
  for (int64_t i = 0; i < TF_TensorElementCount(t); ++i) {
    values.emplace_back(TF_TString_GetDataPointer(&data[i]), TF_TString_GetSize(&data[i]));
  }
  return values;
}

TEST(BatchTensors, ConcatenatesPadsAndSlicesBack) {
  TensorPtr a = Floats({1, 2}, {1, 2}), b = Floats({2, 2}, {3, 4, 5, 6}), c = Floats({2, 3}, {0, 0, 0, 0, 0, 0});
  EXPECT_TRUE(SameRowShape(a.get(), b.get()));
  EXPECT_FALSE(SameRowShape(a.get(), c.get()));
  const TF_Tensor* parts[] = {a.get(), b.get()};
  TensorPtr merged = ConcatRows(parts, 2, 4);  // 3 rows padded to 4: the last row again
  ASSERT_EQ(LeadingRows(merged.get()), 4);
  EXPECT_EQ(ValuesOf(merged.get()), (std::vector<float>{1, 2, 3, 4, 5, 6, 5, 6}));
  EXPECT_EQ(ValuesOf(SliceRows(merged.get(), 1, 2).get()), (std::vector<float>{3, 4, 5, 6}));
  EXPECT_EQ(ValuesOf(SliceRows(merged.get(), 0, 1).get()), (std::vector<float>{1, 2}));
}

TEST(BatchTensors, StringsAreCopiedInlineAndOnTheHeap) {
  const std::string longer(100, 'x');  // beyond TString's 22 inline bytes
  TensorPtr a = Strings({"a", longer}), b = Strings({"", longer + "y"});
  const TF_Tensor* parts[] = {a.get(), b.get()};
  TensorPtr merged = ConcatRows(parts, 2, 5);
  a.reset();  // the merged tensor owns copies
  b.reset();
  EXPECT_EQ(StringsOf(merged.get()), (std::vector<std::string>{"a", longer, "", longer + "y", longer + "y"}));
  TensorPtr slice = SliceRows(merged.get(), 1, 3);
  merged.reset();
  EXPECT_EQ(StringsOf(slice.get()), (std::vector<std::string>{longer, "", longer + "y"}));
}

// A request of `values` floats as one input [n]; the run doubles each value.
struct Request {
  std::vector<TF_Output> inputs{TF_Output{nullptr, 0}};
  std::vector<TF_Output> outputs{TF_Output{nullptr, 0}};
  OwnedTensors values, results;
  explicit Request(std::vector<float> v) {
    values.Reset(1);
    values.Set(0, Floats({static_cast<int64_t>(v.size())}, v));
  }
};

// Runs that double their input, counting calls and rows; the first `held` calls wait for Release().
class Doubler {
 public:
  explicit Doubler(int held = 0) : held_(held) {}
  BatchScheduler::RunFn Fn() {
    return [this](const std::vector<TF_Output>&, const OwnedTensors& values, const std::vector<TF_Output>&,
                  OwnedTensors* results, bool in_caller) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        ++calls_;
        rows_.push_back(LeadingRows(values[0]));
        in_caller_.push_back(in_caller);
        cv_.notify_all();
        cv_.wait(lock, [&] { return calls_ > held_ || released_; });
      }
      std::vector<float> doubled = ValuesOf(values[0]);
      for (float& v : doubled) v *= 2;
      results->Reset(1);
      results->Set(0, Floats({static_cast<int64_t>(doubled.size())}, doubled));
      return Status::Ok();
    };
  }
  void AwaitCalls(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return calls_ >= n; });
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    released_ = true;
    cv_.notify_all();
  }
  std::vector<int64_t> rows() {
    std::lock_guard<std::mutex> lock(mu_);
    return rows_;
  }
  std::vector<bool> in_caller() {
    std::lock_guard<std::mutex> lock(mu_);
    return in_caller_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int held_, calls_ = 0;
  bool released_ = false;
  std::vector<int64_t> rows_;
  std::vector<bool> in_caller_;
};

BatchingOptions Options(int slots, int64_t max_batch_size = 1000) {
  BatchingOptions options;
  options.enabled = true;
  options.num_batch_threads = slots;
  options.max_batch_size = max_batch_size;
  return options;
}

TEST(BatchScheduler, AnIdleModelRunsARequestAtOnceOnItsPools) {
  Doubler doubler;
  BatchScheduler scheduler(Options(1), doubler.Fn());
  Request r({1, 2});
  ASSERT_TRUE(scheduler.Run(r.inputs, r.values, r.outputs, &r.results).ok());
  EXPECT_EQ(ValuesOf(r.results[0]), (std::vector<float>{2, 4}));
  EXPECT_EQ(doubler.in_caller(), std::vector<bool>{false});
  const BatchScheduler::Stats stats = scheduler.Read();
  EXPECT_EQ(stats.runs, 1u);
  EXPECT_EQ(stats.queued, 0u);
}

TEST(BatchScheduler, RequestsQueuedDuringARunMergeAndEachGetsItsRows) {
  Doubler doubler(/*held=*/1);
  BatchScheduler scheduler(Options(1), doubler.Fn());
  std::vector<std::unique_ptr<Request>> requests;
  for (int i = 0; i < 6; ++i) requests.push_back(std::make_unique<Request>(std::vector<float>(i % 3 + 1, i + 1.0f)));
  std::vector<Status> statuses(requests.size());
  std::thread first([&] { statuses[0] = scheduler.Run(requests[0]->inputs, requests[0]->values, requests[0]->outputs,
                                                      &requests[0]->results); });
  doubler.AwaitCalls(1);  // the slot is taken: the others queue
  std::vector<std::thread> others;
  for (size_t i = 1; i < requests.size(); ++i) {
    others.emplace_back([&, i] {
      statuses[i] = scheduler.Run(requests[i]->inputs, requests[i]->values, requests[i]->outputs, &requests[i]->results);
    });
  }
  while (scheduler.Read().queued_rows < 2 + 3 + 1 + 2 + 3) std::this_thread::yield();
  doubler.Release();
  first.join();
  for (auto& t : others) t.join();
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_TRUE(statuses[i].ok()) << statuses[i].message();
    EXPECT_EQ(ValuesOf(requests[i]->results[0]), std::vector<float>(i % 3 + 1, 2 * (i + 1.0f))) << i;
  }
  EXPECT_EQ(doubler.rows(), (std::vector<int64_t>{1, 11}));  // the first alone, then the five queued together
  EXPECT_EQ(doubler.in_caller(), (std::vector<bool>{false, true}));
  EXPECT_EQ(scheduler.Read().merged_runs, 1u);
}

TEST(BatchScheduler, AMergedRunStopsAtMaxBatchSize) {
  Doubler doubler(/*held=*/1);
  BatchScheduler scheduler(Options(1, /*max_batch_size=*/4), doubler.Fn());
  std::vector<std::unique_ptr<Request>> requests;
  for (int i = 0; i < 5; ++i) requests.push_back(std::make_unique<Request>(std::vector<float>(2, float(i))));
  std::vector<std::thread> threads;
  threads.emplace_back([&] { (void)scheduler.Run(requests[0]->inputs, requests[0]->values, requests[0]->outputs,
                                                 &requests[0]->results); });
  doubler.AwaitCalls(1);
  for (size_t i = 1; i < requests.size(); ++i) {
    threads.emplace_back([&, i] {
      (void)scheduler.Run(requests[i]->inputs, requests[i]->values, requests[i]->outputs, &requests[i]->results);
    });
  }
  while (scheduler.Read().queued_rows < 8) std::this_thread::yield();
  doubler.Release();
  for (auto& t : threads) t.join();
  EXPECT_EQ(doubler.rows(), (std::vector<int64_t>{2, 4, 4}));
  for (size_t i = 0; i < requests.size(); ++i) EXPECT_EQ(ValuesOf(requests[i]->results[0]), std::vector<float>(2, 2.0f * i));
}

TEST(BatchScheduler, ALeaderWaitsBatchTimeoutMicrosForAFullBatch) {
  Doubler doubler;
  BatchingOptions options = Options(1, 8);
  options.batch_timeout_micros = 30000;
  BatchScheduler scheduler(options, doubler.Fn());
  Request r({1});
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(scheduler.Run(r.inputs, r.values, r.outputs, &r.results).ok());
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::microseconds(30000));  // never sooner
  EXPECT_EQ(ValuesOf(r.results[0]), std::vector<float>{2});
}

}  // namespace
}  // namespace processor
