#include "common/logging.h"

#include <glog/logging.h>

#include <iomanip>
#include <mutex>

namespace pszero {

namespace {

std::mutex& TagMutex() {
  static std::mutex mu;
  return mu;
}

std::string& Tag() {
  static std::string tag;
  return tag;
}

void PrefixFormatter(std::ostream& s, const google::LogMessageInfo& info, void* /*data*/) {
  std::string tag;
  {
    std::lock_guard lock(TagMutex());
    tag = Tag();
  }
  const google::LogMessageTime& t = info.time;
  s << '[' << tag << "] " << info.severity[0] << std::setw(2) << std::setfill('0') << 1 + t.month()
    << std::setw(2) << t.day() << ' ' << std::setw(2) << t.hour() << ':' << std::setw(2) << t.min()
    << ':' << std::setw(2) << t.sec() << '.' << std::setw(6) << t.usec() << ' ' << info.filename
    << ':' << info.line_number << ']';
}

}  // namespace

void InitLogging(const char* argv0, const std::string& tag) {
  SetLogTag(tag);
  FLAGS_logtostderr = true;
  FLAGS_colorlogtostderr = false;
  google::InitGoogleLogging(argv0, &PrefixFormatter, nullptr);
}

void SetLogTag(const std::string& tag) {
  std::lock_guard lock(TagMutex());
  Tag() = tag;
}

}  // namespace pszero
