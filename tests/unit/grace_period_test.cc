// common/grace_period.h and serving/version_manager.h: a writer waits for exactly the readers that
// may still see what it replaced.
#include "common/grace_period.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

#include "serving/version_manager.h"

namespace processor {
namespace {

using namespace std::chrono_literals;

TEST(GracePeriod, WithNoReadersSynchronizeReturnsAtOnce) {
  GracePeriod period;
  period.Synchronize("test");
  period.Exit(period.Enter());
  period.Synchronize("test");
}

// A reader on its own thread, inside the grace period from construction until Release().
class HeldReader {
 public:
  explicit HeldReader(GracePeriod& period) : thread_([this, &period] {
    const GracePeriod::ReadToken token = period.Enter();
    entered_.set_value();
    release_.get_future().wait();
    period.Exit(token);
  }) {
    entered_future_.wait();
  }
  ~HeldReader() {
    if (!released_) Release();
    thread_.join();
  }
  void Release() {
    released_ = true;
    release_.set_value();
  }

 private:
  std::promise<void> entered_, release_;
  std::future<void> entered_future_ = entered_.get_future();
  bool released_ = false;
  std::thread thread_;  // last: started once the promises exist
};

TEST(GracePeriod, SynchronizeWaitsForAReaderThatEnteredBefore) {
  GracePeriod period;
  HeldReader reader(period);
  auto writer = std::async(std::launch::async, [&] { period.Synchronize("test"); });
  EXPECT_EQ(writer.wait_for(200ms), std::future_status::timeout);
  reader.Release();
  EXPECT_EQ(writer.wait_for(10s), std::future_status::ready);
}

TEST(GracePeriod, ReadersEnteringAfterTheMoveDoNotHoldTheWriter) {
  GracePeriod period;
  HeldReader early(period);
  auto writer = std::async(std::launch::async, [&] { period.Synchronize("test"); });
  std::this_thread::sleep_for(50ms);  // the writer has moved the epoch
  const GracePeriod::ReadToken late = period.Enter();  // and stays in while the writer finishes
  early.Release();
  EXPECT_EQ(writer.wait_for(10s), std::future_status::ready);
  period.Exit(late);
}

TEST(VersionManager, AHoldKeepsItsVersionUntilItEnds) {
  VersionManager manager;
  EXPECT_EQ(VersionManager::Hold(manager).version(), nullptr);
  manager.Install(nullptr, "first");
  std::promise<void> held, release;
  std::string seen_during_swap;
  std::thread request([&] {
    VersionManager::Hold hold(manager);
    held.set_value();
    release.get_future().wait();
    seen_during_swap = hold.version()->model_info;  // still readable: the swap waits for this hold
  });
  held.get_future().wait();
  auto swap = std::async(std::launch::async, [&] { manager.Install(nullptr, "second"); });
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(VersionManager::Hold(manager).version()->model_info, "second");  // new requests see it at once
  EXPECT_EQ(swap.wait_for(100ms), std::future_status::timeout);  // the old one is not released yet
  release.set_value();
  EXPECT_EQ(swap.wait_for(10s), std::future_status::ready);
  request.join();
  EXPECT_EQ(seen_during_swap, "first");
}

TEST(VersionManager, ModelInfoAndUnload) {
  VersionManager manager;
  manager.SetModelInfo("ignored: nothing serves");
  EXPECT_EQ(VersionManager::Hold(manager).version(), nullptr);
  manager.Install(nullptr, "a");
  manager.SetModelInfo("b");
  EXPECT_EQ(VersionManager::Hold(manager).version()->model_info, "b");
  manager.Unload();
  EXPECT_EQ(VersionManager::Hold(manager).version(), nullptr);
}

}  // namespace
}  // namespace processor
