// --trace: the merged Chrome trace of a real job holds every worker's timeline (schema as
// Perfetto reads it), each unit's forward and backward, the collectives on the sync
// stream's track, and shows allreduce's communication overlapping backward.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "common/temp_dir.h"
#include "tests/support/subprocess.h"

namespace pszero::train {
namespace {

using ::pszero::testing::BinaryPath;
using ::pszero::testing::ProcessResult;
using ::pszero::testing::RunProcess;

TEST(TraceTest, MergedTimelineShowsLayersCollectivesAndOverlap) {
  auto dir = TempDir::Create("pszero-trace");
  ASSERT_TRUE(dir.ok());
  const std::string path = (dir->path() / "trace.json").string();
  ::unsetenv("PSZERO_FAULT_INJECT");
  const ProcessResult r = RunProcess({BinaryPath("pszero-launch"),
                                      "--timeout",
                                      "120",
                                      "--workers",
                                      "2",
                                      "--sync",
                                      "allreduce",
                                      "--model",
                                      "custom",
                                      "--layers",
                                      "4",
                                      "--d-model",
                                      "128",
                                      "--heads",
                                      "4",
                                      "--seq",
                                      "64",
                                      "--batch",
                                      "4",
                                      "--vocab",
                                      "64",
                                      "--steps",
                                      "4",
                                      "--bucket-mb",
                                      "0.01",
                                      "--trace",
                                      path},
                                     std::chrono::seconds(150));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ifstream in(path);
  ASSERT_TRUE(in.good()) << path;
  const nlohmann::json doc = nlohmann::json::parse(in);
  ASSERT_TRUE(doc.contains("traceEvents"));
  // Per worker: its thread names, and its complete events by track.
  struct Event {
    std::string name, cat;
    int64_t ts, dur;
  };
  std::map<int, std::map<int, std::string>> thread_names;
  std::map<int, std::map<int, std::vector<Event>>> events;
  std::set<std::string> process_names;
  for (const nlohmann::json& e : doc["traceEvents"]) {
    const std::string ph = e.at("ph");
    const int pid = e.at("pid");
    const int tid = e.at("tid");
    if (ph == "M" && e.at("name") == "thread_name") thread_names[pid][tid] = e["args"]["name"];
    if (ph == "M" && e.at("name") == "process_name") process_names.insert(e["args"]["name"]);
    if (ph != "X") continue;
    ASSERT_GE(e.at("dur").get<int64_t>(), 0);
    events[pid][tid].push_back({e.at("name"), e.at("cat"), e.at("ts"), e.at("dur")});
  }
  EXPECT_EQ(process_names, (std::set<std::string>{"worker 0", "worker 1"}));
  ASSERT_EQ(events.size(), 2u);
  int overlaps = 0;
  for (auto& [pid, tracks] : events) {
    int main_tid = -1, stream_tid = -1;
    for (const auto& [tid, name] : thread_names[pid]) {
      if (name == "main") main_tid = tid;
      if (name == "sync stream") stream_tid = tid;
    }
    ASSERT_GE(main_tid, 0) << "worker " << pid;
    ASSERT_GE(stream_tid, 0) << "worker " << pid;
    std::set<std::string> names;
    for (const Event& e : tracks[main_tid]) names.insert(e.name);
    for (const char* want :
         {"step 1", "step 4", "forward", "backward", "optimizer", "forward embed", "forward h.0",
          "forward h.3", "forward ln_f", "backward h.3", "backward h.0", "backward ln_f"}) {
      EXPECT_TRUE(names.count(want)) << "worker " << pid << " lacks '" << want << "'";
    }
    int buckets = 0;
    for (const Event& c : tracks[stream_tid]) {
      if (c.name.rfind("allreduce bucket", 0) != 0) continue;
      ++buckets;
      EXPECT_EQ(c.cat, "comm");
      for (const Event& b : tracks[main_tid]) {
        if (b.name.rfind("backward h.", 0) == 0 && c.ts < b.ts + b.dur && b.ts < c.ts + c.dur) {
          ++overlaps;
        }
      }
    }
    EXPECT_GE(buckets, 4 * 4) << "worker " << pid;  // a bucket per unit, 4 steps
  }
  // Communication overlaps backward compute (DDP's whole point).
  EXPECT_GT(overlaps, 0);
}

}  // namespace
}  // namespace pszero::train
