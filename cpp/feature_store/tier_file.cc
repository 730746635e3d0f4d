#include "feature_store/tier_file.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "common/quote.h"

namespace processor {
namespace {

Status Errno(const std::string& what, const std::string& path) {  // reads errno
  return Status::Internal("disk tier: cannot " + what + " " + Quote(path) + ": " + std::strerror(errno));
}

// Maps `bytes` of fd shared (writes reach the file), or returns nullptr with errno set; `populate`
// maps every page at once.
void* MapShared(int fd, size_t bytes, bool populate = false) {
  void* map = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | (populate ? MAP_POPULATE : 0), fd, 0);
  if (map == MAP_FAILED) return nullptr;
  madvise(map, bytes, MADV_RANDOM);  // lookups touch rows at random: no readahead of neighbours
  return map;
}

// An unnamed file in `directory` (O_TMPFILE): gone when closed, whatever happens to the process.
int UnnamedFile(const std::string& directory) {
  int fd = open(directory.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd >= 0 || errno != EOPNOTSUPP) return fd;
  // A file system without O_TMPFILE: a named file, unlinked at once.
  std::string path = directory + "/index-XXXXXX";
  fd = mkostemp(path.data(), O_CLOEXEC);
  if (fd >= 0) unlink(path.c_str());
  return fd;
}

// MemAvailable of /proc/meminfo, in bytes (0 when unknown).
uint64_t AvailableMemory() {
  FILE* meminfo = std::fopen("/proc/meminfo", "r");
  if (meminfo == nullptr) return 0;
  char line[256];
  unsigned long long kb = 0;
  while (std::fgets(line, sizeof(line), meminfo) != nullptr) {
    if (std::sscanf(line, "MemAvailable: %llu kB", &kb) == 1) break;
  }
  std::fclose(meminfo);
  return kb * 1024;
}

}  // namespace

uint64_t TierFile::Mix(int64_t id) {  // splitmix64's finalizer, as HashedTable's
  uint64_t x = static_cast<uint64_t>(id);
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

Status TierFile::Open(const std::string& path, int64_t dim, bool keyed, int64_t rows, std::unique_ptr<TierFile>* out) {
  if (dim <= 0 || rows < 0) return Status::InvalidArgument("disk tier " + Quote(path) + ": bad shape");
  std::unique_ptr<TierFile> file(new TierFile(dim, keyed));
  const std::string rows_path = path + ".rows";
  file->directory_ = path.substr(0, path.rfind('/') == std::string::npos ? 0 : path.rfind('/'));
  if (file->directory_.empty()) file->directory_ = ".";
  file->rows_fd_ = open(rows_path.c_str(), O_RDWR | O_CLOEXEC);
  if (file->rows_fd_ < 0) return Errno("open", rows_path);
  struct stat st;
  if (fstat(file->rows_fd_, &st) != 0) return Errno("stat", rows_path);
  const uint64_t row_bytes = sizeof(float) * static_cast<uint64_t>(dim);
  if (static_cast<uint64_t>(st.st_size) != static_cast<uint64_t>(rows) * row_bytes) {
    return Status::InvalidArgument("disk tier " + Quote(rows_path) + " holds " + std::to_string(st.st_size) +
                                   " bytes, not " + std::to_string(rows) + " rows of " + std::to_string(dim) + " floats");
  }
  file->rows_ = rows;
  // A table that fits easily in the page cache (it was just written, so its pages are there) is mapped
  // whole at once: a page first touched by a request would cost a fault on the request path.
  // Buys: no faults after the load (benchmarks/tiers.py: p50 at batch 64 of Zipf ids; first request).
  // A larger table is faulted in as it is read, as a cache should be.
  file->populate_ = static_cast<uint64_t>(st.st_size) <= AvailableMemory() / 2;
  PROCESSOR_RETURN_IF_ERROR(file->GrowRows(rows));
  unlink(rows_path.c_str());  // from now on the file lives as long as the mapping
  if (keyed) {
    uint64_t slots = 1024;
    while (slots < 2 * static_cast<uint64_t>(rows) + 2) slots *= 2;
    PROCESSOR_RETURN_IF_ERROR(file->BuildIndex(path + ".ids", slots));
  }
  *out = std::move(file);
  return Status::Ok();
}

TierFile::~TierFile() {
  if (rows_map_ != nullptr) munmap(rows_map_, sizeof(float) * dim_ * std::max<int64_t>(rows_capacity_, 1));
  if (index_ != nullptr) munmap(index_, sizeof(Slot) * slots_);
  if (rows_fd_ >= 0) close(rows_fd_);
  if (index_fd_ >= 0) close(index_fd_);
}

Status TierFile::GrowRows(int64_t rows) {
  const uint64_t row_bytes = sizeof(float) * static_cast<uint64_t>(dim_);
  const int64_t capacity = std::max<int64_t>(rows, 1);
  if (capacity <= rows_capacity_) return Status::Ok();
  const uint64_t bytes = capacity * row_bytes;
  struct stat st;
  if (fstat(rows_fd_, &st) != 0) return Errno("stat", "rows");
  // Blocks reserved, not a sparse file: writing a mapped page the disk cannot store would be SIGBUS.
  if (static_cast<uint64_t>(st.st_size) < bytes) {
    const int error = posix_fallocate(rows_fd_, 0, static_cast<off_t>(bytes));
    if (error != 0) return Status::Internal(std::string("disk tier: cannot grow the rows file: ") + std::strerror(error));
  }
  void* map = rows_map_ == nullptr ? MapShared(rows_fd_, bytes, populate_)
                                   : mremap(rows_map_, std::max<int64_t>(rows_capacity_, 1) * row_bytes, bytes, MREMAP_MAYMOVE);
  if (map == nullptr || map == MAP_FAILED) return Errno("map", "rows");
  rows_map_ = static_cast<float*>(map);
  rows_capacity_ = capacity;
  return Status::Ok();
}

void TierFile::Insert(int64_t id, uint64_t row) {
  const uint64_t mask = slots_ - 1;
  uint64_t s = Mix(id) & mask;
  while (index_[s].row != 0 && index_[s].id != id) s = (s + 1) & mask;
  index_[s] = Slot{id, row};
}

Status TierFile::BuildIndex(const std::string& ids_path, uint64_t slots) {
  int fd = UnnamedFile(directory_);
  if (fd < 0) return Errno("create the index in", directory_);
  const uint64_t bytes = sizeof(Slot) * slots;
  const int error = posix_fallocate(fd, 0, static_cast<off_t>(bytes));  // zeros: every slot empty
  if (error != 0) {
    close(fd);
    return Status::Internal("disk tier: cannot make an index of " + std::to_string(bytes) + " bytes in " +
                            Quote(directory_) + ": " + std::strerror(error));
  }
  void* map = MapShared(fd, bytes);
  if (map == nullptr) {
    close(fd);
    return Errno("map the index in", directory_);
  }
  Slot* old_index = index_;
  const uint64_t old_slots = slots_;
  const int old_fd = index_fd_;
  index_ = static_cast<Slot*>(map);
  slots_ = slots;
  index_fd_ = fd;
  if (old_index != nullptr) {  // a delta outgrew the index: rehash into the new one
    for (uint64_t s = 0; s < old_slots; ++s) {
      if (old_index[s].row != 0) Insert(old_index[s].id, old_index[s].row);
    }
    munmap(old_index, sizeof(Slot) * old_slots);
    close(old_fd);
    return Status::Ok();
  }
  int ids_fd = open(ids_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (ids_fd < 0) return Errno("open", ids_path);
  unlink(ids_path.c_str());
  struct stat st;
  if (fstat(ids_fd, &st) != 0 || static_cast<uint64_t>(st.st_size) != sizeof(int64_t) * static_cast<uint64_t>(rows_)) {
    close(ids_fd);
    return Status::InvalidArgument("disk tier " + Quote(ids_path) + " does not hold " + std::to_string(rows_) + " ids");
  }
  constexpr size_t kBlock = 8192;
  int64_t ids[kBlock];
  for (int64_t first = 0; first < rows_; first += kBlock) {
    const size_t n = static_cast<size_t>(std::min<int64_t>(kBlock, rows_ - first));
    if (pread(ids_fd, ids, n * sizeof(int64_t), static_cast<off_t>(first * sizeof(int64_t))) !=
        static_cast<ssize_t>(n * sizeof(int64_t))) {
      close(ids_fd);
      return Errno("read", ids_path);
    }
    for (size_t i = 0; i < n; ++i) Insert(ids[i], static_cast<uint64_t>(first + i) + 1);  // a later duplicate wins
  }
  close(ids_fd);
  return Status::Ok();
}

Status TierFile::Write(const int64_t* ids, size_t n, const float* rows) {
  const size_t row_bytes = sizeof(float) * static_cast<size_t>(dim_);
  if (!keyed_) {
    for (size_t i = 0; i < n; ++i) {
      if (ids[i] < 0 || ids[i] >= rows_) {
        return Status::InvalidArgument("row id " + std::to_string(ids[i]) + " is outside [0, " + std::to_string(rows_) + ")");
      }
    }
    for (size_t i = 0; i < n; ++i) std::memcpy(rows_map_ + ids[i] * dim_, rows + i * dim_, row_bytes);
    return Status::Ok();
  }
  // Room for every id it lacks first, so that a full disk fails the delta before any row is written.
  uint64_t added = 0;
  for (size_t i = 0; i < n; ++i) added += RowOf(ids[i]) == 0;
  const int64_t needed = rows_ + static_cast<int64_t>(added);
  if (needed > rows_capacity_) PROCESSOR_RETURN_IF_ERROR(GrowRows(std::max(needed, rows_capacity_ + rows_capacity_ / 2)));
  uint64_t slots = slots_;
  while (2 * static_cast<uint64_t>(needed) + 2 > slots) slots *= 2;
  if (slots != slots_) PROCESSOR_RETURN_IF_ERROR(BuildIndex("", slots));
  for (size_t i = 0; i < n; ++i) {
    uint64_t row = RowOf(ids[i]);
    if (row == 0) {
      row = static_cast<uint64_t>(++rows_);
      Insert(ids[i], row);
    }
    std::memcpy(rows_map_ + (row - 1) * dim_, rows + i * dim_, row_bytes);
  }
  return Status::Ok();
}

uint64_t TierFile::disk_bytes() const {
  uint64_t bytes = 0;
  struct stat st;
  if (fstat(rows_fd_, &st) == 0) bytes += static_cast<uint64_t>(st.st_blocks) * 512;
  if (index_fd_ >= 0 && fstat(index_fd_, &st) == 0) bytes += static_cast<uint64_t>(st.st_blocks) * 512;
  return bytes;
}

}  // namespace processor
