#include "worker/collectives/stream.h"

#include "common/trace.h"
#include "worker/collectives/flight_recorder.h"

namespace pszero::collectives {

bool Work::Done() const {
  if (!state_) return false;
  std::lock_guard lock(state_->mu);
  return state_->done;
}

Status Work::Wait(std::chrono::milliseconds timeout) const {
  if (!state_) return Status::InvalidArgument("wait on an empty Work");
  std::unique_lock lock(state_->mu);
  if (!state_->cv.wait_for(lock, timeout, [&] { return state_->done; })) {
    return Status::DeadlineExceeded(state_->name + " not finished within " +
                                    std::to_string(timeout.count()) + " ms");
  }
  return state_->status;
}

CollectiveStream::CollectiveStream() : thread_([this] { Loop(); }) {}

CollectiveStream::~CollectiveStream() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

Work CollectiveStream::Enqueue(std::string name, std::function<Status()> fn) {
  auto state = std::make_shared<Work::State>();
  state->name = std::move(name);
  {
    std::lock_guard lock(mu_);
    queue_.push_back({state, std::move(fn)});
    last_ = state;
  }
  cv_.notify_all();
  return Work(state);
}

Status CollectiveStream::Synchronize(std::chrono::milliseconds timeout) {
  std::shared_ptr<Work::State> last;
  {
    std::lock_guard lock(mu_);
    last = last_;
  }
  if (last) PSZERO_RETURN_IF_ERROR(Work(last).Wait(timeout));
  std::lock_guard lock(mu_);
  return first_failure_;
}

void CollectiveStream::Loop() {
  bool named = false;
  for (;;) {
    Item item;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping and drained
      item = std::move(queue_.front());
      queue_.pop_front();
    }
    Tracer* tracer = Tracer::Get();
    if (tracer != nullptr && !named) {
      tracer->NameThread("sync stream");
      named = true;
    }
    Status status;
    {
      TraceScope scope(item.state->name, "comm");
      FlightRecorder::SetThreadLabel(item.state->name);
      status = item.fn().WithContext(item.state->name);
      FlightRecorder::SetThreadLabel("");
    }
    {
      std::lock_guard lock(mu_);
      if (!status.ok() && first_failure_.ok()) first_failure_ = status;
    }
    {
      std::lock_guard lock(item.state->mu);
      item.state->status = std::move(status);
      item.state->done = true;
    }
    item.state->cv.notify_all();
  }
}

}  // namespace pszero::collectives
