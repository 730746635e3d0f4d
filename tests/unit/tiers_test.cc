// The two tiers of ev_storage_type 12: feature_store/row_cache.h (DRAM: TinyLFU over CLOCK, within a
// byte budget), feature_store/tier_file.h (disk: mapped rows, a hash index for ids) and
// feature_store/tiered_table.h (both, with default rows and deltas).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "feature_store/row_cache.h"
#include "feature_store/tier_file.h"
#include "feature_store/tiered_table.h"

namespace processor {
namespace {

constexpr int64_t kDim = 4;

std::vector<float> RowOf(int64_t id, float salt = 0) {
  std::vector<float> row(kDim);
  for (int64_t j = 0; j < kDim; ++j) row[j] = static_cast<float>(id) * 10 + j + salt;
  return row;
}

// ---- RowCache

// Looks up `ids`; rows it lacks are "read from disk" (RowOf) and offered. Returns how many it held.
size_t Read(RowCache* cache, const std::vector<int64_t>& ids) {
  std::vector<float> rows(ids.size() * kDim, -1);
  std::vector<uint32_t> missing;
  const uint64_t generation = cache->generation();
  cache->Find(ids.data(), ids.size(), rows.data(), &missing);
  for (uint32_t i : missing) {
    const std::vector<float> row = RowOf(ids[i]);
    std::copy(row.begin(), row.end(), rows.begin() + i * kDim);
  }
  for (size_t i = 0; i < ids.size(); ++i) {
    EXPECT_EQ(std::vector<float>(rows.begin() + i * kDim, rows.begin() + (i + 1) * kDim), RowOf(ids[i])) << ids[i];
  }
  cache->Admit(ids.data(), missing.data(), missing.size(), rows.data(), generation);
  return ids.size() - missing.size();
}

TEST(RowCache, StaysWithinItsBudget) {
  for (uint64_t budget : {0ull, 100ull, 5000ull, 1ull << 20}) {
    RowCache cache(kDim, budget);
    EXPECT_LE(cache.bytes(), budget);
    std::vector<int64_t> ids(5000);
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>(i) * 7919;
    for (int round = 0; round < 3; ++round) Read(&cache, ids);
    EXPECT_LE(cache.held_rows(), cache.capacity_rows());
    if (budget >= 5000) {
      EXPECT_GT(cache.held_rows(), 0u);
    }
  }
}

TEST(RowCache, HotRowsStayWhileAStreamOfOneOffIdsPasses) {
  RowCache cache(kDim, 16 * 1024);  // a few hundred rows
  const uint64_t capacity = cache.capacity_rows();
  ASSERT_GT(capacity, 64u);
  std::vector<int64_t> hot(capacity / 4);
  for (size_t i = 0; i < hot.size(); ++i) hot[i] = static_cast<int64_t>(i);
  for (int round = 0; round < 5; ++round) Read(&cache, hot);
  // 20 x capacity ids seen once each (the long tail), interleaved with the hot set.
  int64_t next = 1'000'000;
  for (int round = 0; round < 20; ++round) {
    std::vector<int64_t> tail(capacity);
    for (int64_t& id : tail) id = next++;
    Read(&cache, tail);
    Read(&cache, hot);
  }
  EXPECT_EQ(Read(&cache, hot), hot.size()) << "TinyLFU keeps the hot rows; LRU would have let the tail push them out";
  EXPECT_GT(cache.rejections(), 0u);
}

TEST(RowCache, RowsThatBecomeHotGetIn) {
  RowCache cache(kDim, 16 * 1024);
  const uint64_t capacity = cache.capacity_rows();
  std::vector<int64_t> old_hot(capacity), new_hot(capacity / 2);
  for (size_t i = 0; i < old_hot.size(); ++i) old_hot[i] = static_cast<int64_t>(i);
  for (size_t i = 0; i < new_hot.size(); ++i) new_hot[i] = 500'000 + static_cast<int64_t>(i);
  for (int round = 0; round < 5; ++round) Read(&cache, old_hot);
  for (int round = 0; round < 30; ++round) Read(&cache, new_hot);
  EXPECT_GE(Read(&cache, new_hot), new_hot.size() * 9 / 10);
  EXPECT_GT(cache.evictions(), 0u);
}

TEST(RowCache, EvictionKeepsEveryHeldRowFindable) {
  // Many admissions and evictions through linear probing's deletion: every row found is its own.
  RowCache cache(kDim, 4096);
  std::mt19937_64 rng(3);
  std::geometric_distribution<int64_t> skewed(0.01);
  for (int round = 0; round < 300; ++round) {
    std::vector<int64_t> ids(64);
    for (int64_t& id : ids) id = skewed(rng) * 1'000'003 - 5'000;  // negative ids too
    Read(&cache, ids);  // asserts each row
  }
  EXPECT_GT(cache.evictions(), 0u);
}

TEST(RowCache, UpdateRewritesHeldRowsOnly) {
  RowCache cache(kDim, 1 << 16);
  Read(&cache, {1, 2});
  const std::vector<int64_t> ids = {2, 3};
  std::vector<float> rows = RowOf(2, 0.5f);
  const std::vector<float> three = RowOf(3, 0.5f);
  rows.insert(rows.end(), three.begin(), three.end());
  cache.Update(ids.data(), ids.size(), rows.data());
  std::vector<float> out(2 * kDim);
  std::vector<uint32_t> missing;
  cache.Find(ids.data(), ids.size(), out.data(), &missing);
  EXPECT_EQ(missing, std::vector<uint32_t>{1});
  EXPECT_EQ(std::vector<float>(out.begin(), out.begin() + kDim), RowOf(2, 0.5f));
}

TEST(RowCache, ForgottenRowsAreGoneAndTheOthersStay) {
  RowCache cache(kDim, 1 << 16);
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < 300; ++i) ids.push_back(i * 7 - 50);
  Read(&cache, ids);
  ASSERT_EQ(Read(&cache, ids), ids.size());
  std::vector<int64_t> forget;
  for (size_t i = 0; i < ids.size(); i += 3) forget.push_back(ids[i]);
  cache.Forget(forget.data(), forget.size());
  std::vector<float> out(ids.size() * kDim);
  std::vector<uint32_t> missing;
  cache.Find(ids.data(), ids.size(), out.data(), &missing);
  std::sort(missing.begin(), missing.end());
  std::vector<uint32_t> expected;
  for (uint32_t i = 0; i < ids.size(); i += 3) expected.push_back(i);
  EXPECT_EQ(missing, expected);
  EXPECT_EQ(cache.held_rows(), ids.size() - forget.size());
  Read(&cache, ids);  // checks every row (the moved slots hold their own rows) and takes them back
  EXPECT_EQ(Read(&cache, ids), ids.size());
  cache.Clear();
  EXPECT_EQ(cache.held_rows(), 0u);
  EXPECT_EQ(Read(&cache, ids), 0u);
}

TEST(RowCache, RowsReadBeforeAnInvalidationAreNotAdmitted) {
  // A lookup reads a row from Redis, a delta rewrites it there and forgets it here, then the lookup
  // offers the row it read: it must not come in (it predates the delta).
  RowCache cache(kDim, 1 << 16);
  const int64_t id = 42;
  const uint64_t before = cache.generation();
  const std::vector<float> old_row = RowOf(id);
  cache.Forget(&id, 1);
  const uint32_t which = 0;
  cache.Admit(&id, &which, 1, old_row.data(), before);
  std::vector<float> out(kDim);
  std::vector<uint32_t> missing;
  cache.Find(&id, 1, out.data(), &missing);
  EXPECT_EQ(missing.size(), 1u);
  cache.Admit(&id, &which, 1, old_row.data(), cache.generation());  // read after it: admitted
  missing.clear();
  cache.Find(&id, 1, out.data(), &missing);
  EXPECT_TRUE(missing.empty());
}

// ---- TierFile

class TierFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/tier_file_test-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { std::system(("rm -rf '" + dir_ + "'").c_str()); }

  std::string Write(const std::string& name, const std::vector<int64_t>& ids, bool keyed) {
    const std::string base = dir_ + "/" + name;
    FILE* rows = std::fopen((base + ".rows").c_str(), "wb");
    for (int64_t id : ids) std::fwrite(RowOf(id).data(), sizeof(float), kDim, rows);
    std::fclose(rows);
    if (keyed) {
      FILE* out = std::fopen((base + ".ids").c_str(), "wb");
      std::fwrite(ids.data(), sizeof(int64_t), ids.size(), out);
      std::fclose(out);
    }
    return base;
  }
  bool Exists(const std::string& path) {
    struct stat st;
    return stat(path.c_str(), &st) == 0;
  }
  std::string dir_;
};

TEST_F(TierFileTest, RowsByPositionAndTheNamesGoOnceOpen) {
  const std::string base = Write("dense", {0, 1, 2, 3, 4}, false);
  std::unique_ptr<TierFile> file;
  ASSERT_TRUE(TierFile::Open(base, kDim, false, 5, &file).ok());
  EXPECT_FALSE(Exists(base + ".rows"));
  EXPECT_EQ(std::vector<float>(file->Find(3), file->Find(3) + kDim), RowOf(3));
  EXPECT_EQ(file->Find(5), nullptr);
  EXPECT_EQ(file->Find(-1), nullptr);
  const int64_t id = 2;
  const std::vector<float> row = RowOf(2, 0.25f);
  ASSERT_TRUE(file->Write(&id, 1, row.data()).ok());
  EXPECT_EQ(std::vector<float>(file->Find(2), file->Find(2) + kDim), row);
  const int64_t outside = 5;
  EXPECT_FALSE(file->Write(&outside, 1, row.data()).ok());
}

TEST_F(TierFileTest, KeyedRowsGrowWithADeltasNewIds) {
  const std::vector<int64_t> ids = {-7, 1LL << 40, 12, 99, 12};  // a later duplicate wins
  const std::string base = Write("keyed", ids, true);
  std::unique_ptr<TierFile> file;
  ASSERT_TRUE(TierFile::Open(base, kDim, true, 5, &file).ok());
  EXPECT_FALSE(Exists(base + ".ids"));
  EXPECT_EQ(std::vector<float>(file->Find(1LL << 40), file->Find(1LL << 40) + kDim), RowOf(1LL << 40));
  EXPECT_EQ(file->Find(13), nullptr);
  // Thousands of new ids: the rows file and the index grow (rehash) and every row stays.
  std::vector<int64_t> added;
  std::vector<float> rows;
  for (int64_t i = 0; i < 5000; ++i) {
    added.push_back(i * 1'000'003 + 1);
    const std::vector<float> row = RowOf(added.back());
    rows.insert(rows.end(), row.begin(), row.end());
  }
  ASSERT_TRUE(file->Write(added.data(), added.size(), rows.data()).ok());
  for (int64_t id : added) ASSERT_EQ(std::vector<float>(file->Find(id), file->Find(id) + kDim), RowOf(id)) << id;
  EXPECT_EQ(std::vector<float>(file->Find(-7), file->Find(-7) + kDim), RowOf(-7));
  EXPECT_GT(file->disk_bytes(), 5000u * kDim * sizeof(float));
}

TEST_F(TierFileTest, AFileOfTheWrongSizeIsRefused) {
  const std::string base = Write("short", {0, 1}, false);
  std::unique_ptr<TierFile> file;
  const Status status = TierFile::Open(base, kDim, false, 3, &file);
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("not 3 rows of 4 floats"), std::string::npos) << status.message();
  EXPECT_FALSE(TierFile::Open(dir_ + "/absent", kDim, false, 1, &file).ok());
}

// ---- TieredTable

TEST_F(TierFileTest, ATieredTableServesEveryRowDefaultsAndDeltas) {
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < 2000; ++i) ids.push_back(i * 3);
  std::unique_ptr<TierFile> file;
  ASSERT_TRUE(TierFile::Open(Write("t", ids, true), kDim, true, static_cast<int64_t>(ids.size()), &file).ok());
  TieredTable table("t", kDim, std::move(file), 8 * 1024);  // far fewer rows than the table
  const std::vector<float> default_row = {-1, -2, -3, -4};
  std::mt19937_64 rng(1);
  std::uniform_int_distribution<int64_t> any(0, 6000);
  for (int round = 0; round < 50; ++round) {
    std::vector<int64_t> batch(64);
    for (int64_t& id : batch) id = any(rng);
    std::vector<float> out(batch.size() * kDim);
    ASSERT_TRUE(table.Lookup(batch.data(), batch.size(), default_row.data(), out.data()).ok());
    for (size_t i = 0; i < batch.size(); ++i) {
      const std::vector<float> expected = batch[i] % 3 == 0 ? RowOf(batch[i]) : default_row;
      ASSERT_EQ(std::vector<float>(out.begin() + i * kDim, out.begin() + (i + 1) * kDim), expected) << batch[i];
    }
  }
  // A delta reaches rows in either tier: 0 was read (maybe cached), 5999 never; 1 is new.
  const std::vector<int64_t> changed = {0, 5997, 1};
  std::vector<float> rows;
  for (int64_t id : changed) {
    const std::vector<float> row = RowOf(id, 0.5f);
    rows.insert(rows.end(), row.begin(), row.end());
  }
  ASSERT_TRUE(table.WriteRows(changed.data(), changed.size(), rows.data()).ok());
  for (int pass = 0; pass < 2; ++pass) {  // from disk, then from DRAM
    std::vector<float> out(changed.size() * kDim);
    ASSERT_TRUE(table.Lookup(changed.data(), changed.size(), default_row.data(), out.data()).ok());
    EXPECT_EQ(out, rows);
  }
  const TierCounters counters = table.counters();
  EXPECT_GT(counters.dram_hits, 0u);
  EXPECT_GT(counters.disk_hits, 0u);
  EXPECT_GT(counters.absent, 0u);
  EXPECT_LE(counters.dram_bytes, 8u * 1024);
}

}  // namespace
}  // namespace processor
