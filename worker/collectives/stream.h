// CollectiveStream: runs collectives asynchronously, in issue order, on a thread of its
// own (the role of a CUDA stream for NCCL, or of ProcessGroupGloo's worker thread).
//
// Enqueue returns a Work handle at once; the queued functions run one after another on
// the stream's thread, so ops in flight complete in the order they were issued. While a
// stream is used, the communicators (and the Transport) it drives must be touched only
// through it: the Transport is single-threaded. The training loop enqueues a gradient
// bucket's all-reduce the moment backward fills it and waits for all of them before the
// optimizer step. Enqueue and Work are thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/status.h"

namespace pszero::collectives {

// Completion handle of one enqueued op.
class Work {
 public:
  Work() = default;

  bool valid() const { return state_ != nullptr; }
  // True once the op ran (successfully or not).
  bool Done() const;
  // Waits for the op; DeadlineExceeded naming it when `timeout` passes first.
  Status Wait(std::chrono::milliseconds timeout) const;

 private:
  friend class CollectiveStream;
  struct State {
    std::string name;
    mutable std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    Status status;
  };
  explicit Work(std::shared_ptr<State> state) : state_(std::move(state)) {}
  std::shared_ptr<State> state_;
};

class CollectiveStream {
 public:
  CollectiveStream();
  // Runs what is queued, then joins the thread.
  ~CollectiveStream();
  CollectiveStream(const CollectiveStream&) = delete;
  CollectiveStream& operator=(const CollectiveStream&) = delete;

  // Queues `fn`; `name` appears in errors ("allreduce bucket 3").
  Work Enqueue(std::string name, std::function<Status()> fn);

  // Waits for everything enqueued so far; the first failure, if any.
  Status Synchronize(std::chrono::milliseconds timeout);

 private:
  struct Item {
    std::shared_ptr<Work::State> state;
    std::function<Status()> fn;
  };
  void Loop();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
  std::shared_ptr<Work::State> last_;  // most recently enqueued
  Status first_failure_;
  bool stopping_ = false;
  std::thread thread_;  // last: started after every other member exists
};

}  // namespace pszero::collectives
