// ThreadSanitizer annotations; nothing in other builds.
//
// TensorFlow is not built with TSan, so the synchronization by which TF_SessionRun hands its output
// tensors (written on TF's threads) to the caller is invisible to it. A scope of this type tells TSan
// that reads inside it are of memory published that way.
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
inline void IgnoreReadsBegin() { AnnotateIgnoreReadsBegin(__FILE__, __LINE__); }
inline void IgnoreReadsEnd() { AnnotateIgnoreReadsEnd(__FILE__, __LINE__); }
#else
inline void IgnoreReadsBegin() {}
inline void IgnoreReadsEnd() {}
#endif

class ReadingTensorFlowOutputs {
 public:
  ReadingTensorFlowOutputs() { IgnoreReadsBegin(); }
  ~ReadingTensorFlowOutputs() { IgnoreReadsEnd(); }
  ReadingTensorFlowOutputs(const ReadingTensorFlowOutputs&) = delete;
  ReadingTensorFlowOutputs& operator=(const ReadingTensorFlowOutputs&) = delete;
};

}  // namespace processor
