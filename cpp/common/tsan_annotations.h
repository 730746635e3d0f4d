// ThreadSanitizer annotations; nothing in other builds.
//
// TensorFlow is not built with TSan, so the synchronization by which TF_SessionRun hands its output
// tensors (written on TF's threads) to the caller is invisible to it, and so is the end of TF's reads
// of the input tensors. The scopes below tell TSan that accesses inside them are of memory handed over
// that way.
#pragma once

#if defined(__SANITIZE_THREAD__)
#define PROCESSOR_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PROCESSOR_TSAN 1
#endif
#endif

namespace processor {

#ifdef PROCESSOR_TSAN
extern "C" void AnnotateIgnoreReadsBegin(const char* file, int line);
extern "C" void AnnotateIgnoreReadsEnd(const char* file, int line);
extern "C" void AnnotateIgnoreWritesBegin(const char* file, int line);
extern "C" void AnnotateIgnoreWritesEnd(const char* file, int line);
inline void IgnoreReadsBegin() { AnnotateIgnoreReadsBegin(__FILE__, __LINE__); }
inline void IgnoreReadsEnd() { AnnotateIgnoreReadsEnd(__FILE__, __LINE__); }
inline void IgnoreWritesBegin() { AnnotateIgnoreWritesBegin(__FILE__, __LINE__); }
inline void IgnoreWritesEnd() { AnnotateIgnoreWritesEnd(__FILE__, __LINE__); }
#else
inline void IgnoreReadsBegin() {}
inline void IgnoreReadsEnd() {}
inline void IgnoreWritesBegin() {}
inline void IgnoreWritesEnd() {}
#endif

class ReadingTensorFlowOutputs {
 public:
  ReadingTensorFlowOutputs() { IgnoreReadsBegin(); }
  ~ReadingTensorFlowOutputs() { IgnoreReadsEnd(); }
  ReadingTensorFlowOutputs(const ReadingTensorFlowOutputs&) = delete;
  ReadingTensorFlowOutputs& operator=(const ReadingTensorFlowOutputs&) = delete;
};

// Writing into an input tensor of an earlier request, which TF's threads read during that run.
class OverwritingTensorFlowInput {
 public:
  explicit OverwritingTensorFlowInput(bool active) : active_(active) {
    if (active_) IgnoreWritesBegin();
  }
  ~OverwritingTensorFlowInput() {
    if (active_) IgnoreWritesEnd();
  }
  OverwritingTensorFlowInput(const OverwritingTensorFlowInput&) = delete;
  OverwritingTensorFlowInput& operator=(const OverwritingTensorFlowInput&) = delete;

 private:
  const bool active_;
};

}  // namespace processor
