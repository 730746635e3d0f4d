// The disk tier's engine, chosen by measurement: the same rows (ids 0..N-1, 64 float32 each) written
// into LMDB, RocksDB and the library's own mapped file (feature_store/tier_file.h), then read in batches
// of 512 ids drawn Zipf(1.1) and uniformly, with the page cache warm and with the file evicted from it
// (posix_fadvise DONTNEED) before every batch. Reports import seconds, bytes on disk and per-batch
// median / p99 microseconds. `make bench` builds and runs it (target disk_engines); the table is in
// docs/feature_store.md.
//
//   disk_engines <dir> [rows]
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "feature_store/tier_file.h"

#if DISK_ENGINES_WITH_ROCKSDB
#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/sst_file_writer.h>
#include <rocksdb/table.h>
#endif

namespace {

constexpr int kDim = 64;
constexpr size_t kRowBytes = kDim * sizeof(float);
constexpr size_t kBatch = 512;

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void Die(const std::string& what) {
  std::fprintf(stderr, "disk_engines: %s\n", what.c_str());
  std::exit(1);
}

void RowOf(uint64_t id, float* row) {
  for (int j = 0; j < kDim; ++j) row[j] = static_cast<float>(id) + j * 0.001f;
}

// Big-endian keys sort as the ids do (LMDB's and RocksDB's byte order), so a sorted import appends.
void KeyOf(uint64_t id, char* key) {
  for (int b = 0; b < 8; ++b) key[b] = static_cast<char>(id >> (56 - 8 * b));
}

uint64_t DiskBytes(const std::string& path) {
  std::string command = "du -sb '" + path + "' | cut -f1";
  FILE* pipe = popen(command.c_str(), "r");
  unsigned long long bytes = 0;
  if (pipe != nullptr) {
    if (std::fscanf(pipe, "%llu", &bytes) != 1) bytes = 0;
    pclose(pipe);
  }
  return bytes;
}

// Drops `path`'s pages from the page cache: its files, and every mapping of this process under it
// (a mapped page is not evicted by fadvise alone, and an unlinked file is reached through
// /proc/self/map_files).
void Evict(const std::string& path) {
  std::string command = "find '" + path + "' -type f";
  FILE* pipe = popen(command.c_str(), "r");
  char line[4096];
  while (pipe != nullptr && std::fgets(line, sizeof(line), pipe) != nullptr) {
    line[std::strcspn(line, "\n")] = 0;
    int fd = open(line, O_RDONLY);
    if (fd >= 0) {
      posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
      close(fd);
    }
  }
  if (pipe != nullptr) pclose(pipe);
  FILE* maps = std::fopen("/proc/self/maps", "r");
  while (maps != nullptr && std::fgets(line, sizeof(line), maps) != nullptr) {
    if (std::strstr(line, path.c_str()) == nullptr) continue;
    unsigned long long begin = 0, end = 0;
    if (std::sscanf(line, "%llx-%llx", &begin, &end) != 2) continue;
    if (madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED) != 0) Die("madvise: " + std::string(std::strerror(errno)));
    char file[128];
    std::snprintf(file, sizeof(file), "/proc/self/map_files/%llx-%llx", begin, end);
    int fd = open(file, O_RDONLY);
    if (fd < 0) Die(std::string("cannot open ") + file + " (needs root): " + std::strerror(errno));
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
  }
  if (maps != nullptr) std::fclose(maps);
}

struct Engine {
  std::string name;
  std::string path;
  std::function<void(uint64_t rows)> import;
  // Reads the rows of ids into out; returns how many were found.
  std::function<size_t(const std::vector<uint64_t>& ids, float* out)> read;
  // Bytes on disk, when du cannot see them (files already unlinked).
  std::function<uint64_t()> disk_bytes;
};

std::vector<std::vector<uint64_t>> Batches(uint64_t rows, bool zipf, size_t count, std::mt19937_64* rng) {
  std::vector<std::vector<uint64_t>> batches(count, std::vector<uint64_t>(kBatch));
  std::vector<double> cdf;
  if (zipf) {
    cdf.resize(rows);
    double sum = 0;
    for (uint64_t r = 0; r < rows; ++r) cdf[r] = (sum += std::pow(static_cast<double>(r + 1), -1.1));
    for (double& c : cdf) c /= sum;
  }
  std::uniform_real_distribution<double> unit(0, 1);
  std::uniform_int_distribution<uint64_t> any(0, rows - 1);
  for (auto& batch : batches) {
    for (uint64_t& id : batch) {
      if (!zipf) {
        id = any(*rng);
        continue;
      }
      const uint64_t rank = std::lower_bound(cdf.begin(), cdf.end(), unit(*rng)) - cdf.begin();
      // Hot ids spread over the key space, as hashed feature ids are: rank -> id is a bijection.
      id = (rank * 0x9E3779B97F4A7C15ull + 12345) % rows;
    }
  }
  return batches;
}

void Measure(const Engine& engine, uint64_t rows) {
  double start = Now();
  engine.import(rows);
  const double import_s = Now() - start;
  std::printf("%-8s import %6.1f s  %7.1f MB on disk\n", engine.name.c_str(), import_s,
              (engine.disk_bytes ? engine.disk_bytes() : DiskBytes(engine.path)) / 1e6);
  std::mt19937_64 rng(7);
  std::vector<float> out(kBatch * kDim);
  for (bool zipf : {true, false}) {
    for (bool cold : {false, true}) {
      auto batches = Batches(rows, zipf, cold ? 20 : 400, &rng);
      if (!cold) {
        for (const auto& batch : batches) engine.read(batch, out.data());  // warm the page cache
      }
      std::vector<double> us;
      for (const auto& batch : batches) {
        if (cold) Evict(engine.path);
        start = Now();
        const size_t found = engine.read(batch, out.data());
        us.push_back((Now() - start) * 1e6);
        if (found != kBatch) Die(engine.name + ": lost rows");
        for (size_t i = 0; i < kBatch; ++i) {
          if (out[i * kDim + 1] != static_cast<float>(batch[i]) + 0.001f) Die(engine.name + ": wrong row");
        }
      }
      std::sort(us.begin(), us.end());
      std::printf("%-8s %-7s %-4s batch %zu: p50 %8.1f us  p99 %8.1f us\n", engine.name.c_str(),
                  zipf ? "zipf" : "uniform", cold ? "cold" : "warm", kBatch, us[us.size() / 2],
                  us[std::min(us.size() - 1, us.size() * 99 / 100)]);
    }
  }
}

Engine Lmdb(const std::string& dir) {
  auto* env = new MDB_env*();
  auto* dbi = new MDB_dbi();
  Engine engine{"lmdb", dir + "/lmdb", nullptr, nullptr, nullptr};
  engine.import = [env, dbi, path = engine.path](uint64_t rows) {
    mdb_env_create(env);
    mdb_env_set_mapsize(*env, size_t{1} << 40);
    if (mdb_env_open(*env, path.c_str(), MDB_NOSUBDIR | MDB_NOLOCK | MDB_NOSYNC | MDB_NORDAHEAD, 0600) != 0) Die("lmdb open");
    MDB_txn* txn;
    mdb_txn_begin(*env, nullptr, 0, &txn);
    mdb_dbi_open(txn, nullptr, 0, dbi);
    char key[8];
    for (uint64_t id = 0; id < rows; ++id) {
      KeyOf(id, key);
      MDB_val k{8, key}, v{kRowBytes, nullptr};
      if (mdb_put(txn, *dbi, &k, &v, MDB_APPEND | MDB_RESERVE) != 0) Die("lmdb put");
      RowOf(id, static_cast<float*>(v.mv_data));
    }
    if (mdb_txn_commit(txn) != 0) Die("lmdb commit");
    mdb_env_sync(*env, 1);
  };
  engine.read = [env, dbi](const std::vector<uint64_t>& ids, float* out) {
    MDB_txn* txn;
    mdb_txn_begin(*env, nullptr, MDB_RDONLY, &txn);
    size_t found = 0;
    char key[8];
    for (size_t i = 0; i < ids.size(); ++i) {
      KeyOf(ids[i], key);
      MDB_val k{8, key}, v;
      if (mdb_get(txn, *dbi, &k, &v) == 0) {
        std::memcpy(out + i * kDim, v.mv_data, kRowBytes);
        ++found;
      }
    }
    mdb_txn_abort(txn);
    return found;
  };
  return engine;
}

#if DISK_ENGINES_WITH_ROCKSDB
Engine RocksDb(const std::string& dir) {
  auto* db = new rocksdb::DB*(nullptr);
  Engine engine{"rocksdb", dir + "/rocksdb", nullptr, nullptr, nullptr};
  auto options = std::make_shared<rocksdb::Options>();
  options->create_if_missing = true;
  options->compression = rocksdb::kNoCompression;  // floats do not compress
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = rocksdb::NewLRUCache(8 << 20);  // small: the DRAM budget goes to the row cache
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  options->table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  engine.import = [db, options, path = engine.path](uint64_t rows) {
    // The bulk-load path RocksDB recommends: sorted SST files, ingested.
    rocksdb::SstFileWriter writer(rocksdb::EnvOptions(), *options);
    const std::string sst = path + ".sst";
    if (!writer.Open(sst).ok()) Die("rocksdb sst open");
    char key[8];
    std::vector<float> row(kDim);
    for (uint64_t id = 0; id < rows; ++id) {
      KeyOf(id, key);
      RowOf(id, row.data());
      if (!writer.Put(rocksdb::Slice(key, 8), rocksdb::Slice(reinterpret_cast<char*>(row.data()), kRowBytes)).ok()) {
        Die("rocksdb put");
      }
    }
    if (!writer.Finish().ok()) Die("rocksdb finish");
    if (!rocksdb::DB::Open(*options, path, db).ok()) Die("rocksdb open");
    rocksdb::IngestExternalFileOptions ingest;
    ingest.move_files = true;
    if (!(*db)->IngestExternalFile({sst}, ingest).ok()) Die("rocksdb ingest");
  };
  engine.read = [db](const std::vector<uint64_t>& ids, float* out) {
    std::vector<std::string> keys(ids.size(), std::string(8, '\0'));
    std::vector<rocksdb::Slice> slices;
    for (size_t i = 0; i < ids.size(); ++i) {
      KeyOf(ids[i], keys[i].data());
      slices.emplace_back(keys[i]);
    }
    std::vector<rocksdb::PinnableSlice> values(ids.size());
    std::vector<rocksdb::Status> statuses(ids.size());
    (*db)->MultiGet(rocksdb::ReadOptions(), (*db)->DefaultColumnFamily(), ids.size(), slices.data(), values.data(),
                    statuses.data());
    size_t found = 0;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (statuses[i].ok()) {
        std::memcpy(out + i * kDim, values[i].data(), kRowBytes);
        ++found;
      }
    }
    return found;
  };
  return engine;
}
#endif

// The library's disk tier (feature_store/tier_file.h): rows in a mapped file, row i of a checkpoint
// variable at byte i * 256 ("tierfile"), or found through its hash index of ids ("tierfile+ids", as
// for EmbeddingVariables and Monolith dumps).
Engine Tier(const std::string& dir, bool keyed) {
  auto* file = new std::unique_ptr<processor::TierFile>();
  const std::string base = dir + (keyed ? "/keyed" : "/dense");
  Engine engine{keyed ? "tierfile+ids" : "tierfile", base + ".dir", nullptr, nullptr, nullptr};
  engine.import = [file, base, keyed](uint64_t rows) {
    mkdir((base + ".dir").c_str(), 0700);
    const std::string path = base + ".dir/t";
    FILE* out = std::fopen((path + ".rows").c_str(), "wb");
    FILE* ids = keyed ? std::fopen((path + ".ids").c_str(), "wb") : nullptr;
    std::vector<float> row(kDim);
    for (uint64_t id = 0; id < rows; ++id) {
      RowOf(id, row.data());
      std::fwrite(row.data(), sizeof(float), kDim, out);
      if (ids != nullptr) std::fwrite(&id, sizeof(id), 1, ids);
    }
    std::fclose(out);
    if (ids != nullptr) std::fclose(ids);
    if (!processor::TierFile::Open(path, kDim, keyed, static_cast<int64_t>(rows), file).ok()) Die("tierfile open");
  };
  engine.disk_bytes = [file] { return (*file)->disk_bytes(); };
  engine.read = [file](const std::vector<uint64_t>& ids, float* out) {
    size_t found = 0;
    for (size_t i = 0; i < ids.size(); ++i) {
      const float* row = (*file)->Find(static_cast<int64_t>(ids[i]));
      if (row != nullptr) {
        std::memcpy(out + i * kDim, row, kRowBytes);
        ++found;
      }
    }
    return found;
  };
  return engine;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) Die("usage: disk_engines <dir> [rows]");
  const std::string dir = argv[1];
  const uint64_t rows = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 2'000'000;
  std::printf("%llu rows x %d float32 (%.0f MB of rows), batch %zu\n", static_cast<unsigned long long>(rows), kDim,
              rows * kRowBytes / 1e6, kBatch);
  Measure(Lmdb(dir), rows);
#if DISK_ENGINES_WITH_ROCKSDB
  Measure(RocksDb(dir), rows);
#else
  std::printf("rocksdb  skipped: built without librocksdb-dev\n");
#endif
  Measure(Tier(dir, false), rows);
  Measure(Tier(dir, true), rows);
  return 0;
}
