// pszero-bench's emulated cluster (launch/bench/emulated_cluster.h): `train --emulate-hosts`
// runs each job across network namespaces with tbf-limited links and must end where the
// one-host job ends (same final_params_sha256 with --deterministic), recording the
// emulation in its JSON and in the run reports; `p2p --emulate-hosts 2 --link-gbit 1` must
// not move data faster than the limit (a bound from above only: timings are never asserted
// from below); Ctrl-C in the middle deletes the namespaces. Where namespaces cannot be made
// (not root, no iproute2, no sch_tbf) the bench exits 77 with the reason, and the test
// prints it and skips.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "tests/launch/multinode_test_util.h"
#include "tests/support/child_process.h"
#include "tests/support/subprocess.h"

namespace pszero::testing {
namespace {

using std::chrono::seconds;
namespace fs = std::filesystem;

constexpr int kSkipped = 77;

// The tiny GPT of the multi-node tests, without --sync (the bench takes a list).
std::vector<std::string> TinyModel(const std::string& steps = "3") {
  std::vector<std::string> args = TinyTraining("allreduce", steps);
  const auto sync = std::find(args.begin(), args.end(), "--sync");
  args.erase(sync, sync + 2);
  return args;
}

nlohmann::json ParseJson(const std::string& text) {
  return nlohmann::json::parse(text, nullptr, false);
}

// Namespaces named like an emulated cluster's (pz<pid>...) whose process is `pid`.
std::set<std::string> NamespacesOf(pid_t pid) {
  std::set<std::string> out;
  const std::regex name("pz" + std::to_string(pid) + "(br|h[0-9]+)");
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/run/netns", ec)) {
    if (std::regex_match(e.path().filename().string(), name)) out.insert(e.path().filename());
  }
  return out;
}

class EmulatedClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const std::string& v : kClusterVars) ::unsetenv(v.c_str());
    dir_ = fs::temp_directory_path() / ("pszero-emulated-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  fs::path dir_;
};

TEST_F(EmulatedClusterTest, BadFlagsExitTwoNamingTheFlag) {
  const std::string bench = BinaryPath("pszero-bench");
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"train", "--sync", "allreduce", "--workers", "2", "--link-gbit", "1"}, "--link-gbit"},
      {{"train", "--sync", "allreduce", "--workers", "2", "--emulate-hosts", "65"},
       "--emulate-hosts"},
      {{"train", "--sync", "allreduce", "--workers", "2", "--emulate-hosts", "0"},
       "--emulate-hosts"},
      {{"train", "--sync", "allreduce", "--workers", "2", "--emulate-hosts", "2", "--link-gbit",
        "fast"},
       "--link-gbit"},
      {{"p2p", "--emulate-hosts", "3"}, "--emulate-hosts"},
      {{"p2p", "--link-gbit", "1"}, "--link-gbit"},
      {{"p2p", "--emulate-hosts", "2", "--link-gbit", "-1"}, "--link-gbit"},
  };
  for (const auto& [args, flag] : cases) {
    const ProcessResult r = RunProcess(Cat({bench}, args), seconds(30));
    EXPECT_EQ(r.exit_code, 2) << args.back() << ": " << r.err;
    EXPECT_NE(r.err.find(flag), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
}

// Without CAP_NET_ADMIN (here: as nobody, through setpriv, when the test runs as root)
// nothing starts: exit 77 and one line with the reason, for train, p2p and ps alike.
TEST_F(EmulatedClusterTest, WithoutCapabilitiesSkipsWithTheReason) {
  std::vector<std::string> as_user;
  if (::geteuid() == 0) {
    if (::access("/usr/bin/setpriv", X_OK) != 0) GTEST_SKIP() << "no /usr/bin/setpriv";
    as_user = {"/usr/bin/setpriv", "--reuid=65534",   "--regid=65534",
               "--clear-groups",   "--inh-caps=-all", "--bounding-set=-all"};
  }
  const std::string bench = BinaryPath("pszero-bench");
  for (const std::vector<std::string>& args :
       {Cat({bench, "train", "--workers", "2", "--sync", "allreduce", "--emulate-hosts", "2",
             "--link-gbit", "1"},
            TinyModel()),
        std::vector<std::string>{bench, "p2p", "--emulate-hosts", "2"},
        std::vector<std::string>{bench, "ps", "--workers", "2", "--emulate-hosts", "2"}}) {
    SCOPED_TRACE(args[1]);
    const ProcessResult r = RunProcess(Cat(as_user, args), seconds(60));
    EXPECT_EQ(r.exit_code, kSkipped) << r.out << r.err;
    EXPECT_EQ(r.err, "pszero-bench " + args[1] +
                         ": skipped: cannot emulate 2 hosts here: not root and without "
                         "CAP_NET_ADMIN and CAP_SYS_ADMIN (network namespaces need both)\n");
  }
}

TEST_F(EmulatedClusterTest, TwoHostsAtOneGbitTrainLikeOneHostAndRecordIt) {
  const std::string bench = BinaryPath("pszero-bench");
  const std::string reports = (dir_ / "reports").string();
  const ProcessResult emulated =
      RunProcess(Cat({bench, "train", "--workers", "4", "--sync", "allreduce,zero3,ps", "--servers",
                      "2", "--emulate-hosts", "2", "--link-gbit", "1", "--timeout", "100",
                      "--report-dir", reports, "--json"},
                     TinyModel()),
                 seconds(200));
  if (emulated.exit_code == kSkipped) {
    std::cout << "skipping: " << LastLine(emulated.err) << std::endl;
    GTEST_SKIP() << LastLine(emulated.err);
  }
  ASSERT_EQ(emulated.exit_code, 0) << emulated.out << emulated.err;
  const ProcessResult one_host = RunProcess(
      Cat({bench, "train", "--workers", "4", "--sync", "allreduce", "--timeout", "100", "--json"},
          TinyModel()),
      seconds(120));
  ASSERT_EQ(one_host.exit_code, 0) << one_host.err;

  const nlohmann::json want = ParseJson(one_host.out);
  const nlohmann::json got = ParseJson(emulated.out);
  ASSERT_FALSE(want.is_discarded()) << one_host.out;
  ASSERT_FALSE(got.is_discarded()) << emulated.out;
  const std::string sha = want["runs"][0]["final_params_sha256"].get<std::string>();
  ASSERT_EQ(sha.size(), 64u);
  EXPECT_EQ(got["emulate_hosts"], 2);
  EXPECT_EQ(got["link_gbit"], 1.0);
  EXPECT_EQ(got["emulation"]["hosts"], 2);
  EXPECT_EQ(got["emulation"]["ucx"][0], "UCX_TLS=tcp,self");
  EXPECT_GT(got["emulation"]["tbf_burst_bytes"].get<int64_t>(), 0);
  ASSERT_EQ(got["runs"].size(), 3u);
  for (const nlohmann::json& run : got["runs"]) {
    SCOPED_TRACE(run["sync"].get<std::string>());
    EXPECT_TRUE(run["error"].is_null()) << run["error"];
    EXPECT_EQ(run["final_params_sha256"], sha);
    EXPECT_EQ(run["emulate_hosts"], 2);
    // The run report itself records the emulation.
    std::ifstream in(run["source"].get<std::string>());
    const nlohmann::json report = nlohmann::json::parse(in, nullptr, false);
    ASSERT_FALSE(report.is_discarded()) << run["source"];
    EXPECT_EQ(report["emulation"]["hosts"], 2);
    EXPECT_EQ(report["emulation"]["link_gbit"], 1.0);
    EXPECT_EQ(report["emulation"]["namespaces"].size(), 2u);
    EXPECT_EQ(report["final_params_sha256"], sha);
  }
}

TEST_F(EmulatedClusterTest, OneGbitLinkIsNotExceeded) {
  const ProcessResult r =
      RunProcess({BinaryPath("pszero-bench"), "p2p", "--emulate-hosts", "2", "--link-gbit", "1",
                  "--sizes", "1M", "--scale", "0.05", "--json"},
                 seconds(120));
  if (r.exit_code == kSkipped) {
    std::cout << "skipping: " << LastLine(r.err) << std::endl;
    GTEST_SKIP() << LastLine(r.err);
  }
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const nlohmann::json doc = ParseJson(r.out);
  ASSERT_FALSE(doc.is_discarded()) << r.out;
  EXPECT_EQ(doc["emulate_hosts"], 2);
  EXPECT_EQ(doc["link_gbit"], 1.0);
  EXPECT_NE(doc["lanes"].get<std::string>().find("tcp"), std::string::npos) << doc["lanes"];
  const double gbit = doc["runs"][0]["bandwidth_gbps"].get<double>() * 8;  // GB/s -> Gbit/s
  std::cout << "1 MiB messages over a 1 Gbit/s emulated link: " << gbit << " Gbit/s" << std::endl;
  // From above only: the bucket (256 KiB) lets through at most a burst beyond the rate.
  EXPECT_GT(gbit, 0.0);
  EXPECT_LE(gbit, 1.1);
}

// What `pszero-bench sweep --emulate-hosts 4` passes to its small items: never more hosts
// than ranks, and the one server of a ps run away from worker 0.
TEST_F(EmulatedClusterTest, MoreHostsThanRanksUseOnePerRank) {
  const ProcessResult ps =
      RunProcess({BinaryPath("pszero-bench"), "ps", "--servers", "1", "--workers", "1", "--bytes",
                  "1M", "--iters", "3", "--emulate-hosts", "4", "--link-gbit", "1", "--json"},
                 seconds(120));
  if (ps.exit_code == kSkipped) {
    std::cout << "skipping: " << LastLine(ps.err) << std::endl;
    GTEST_SKIP() << LastLine(ps.err);
  }
  ASSERT_EQ(ps.exit_code, 0) << ps.out << ps.err;
  const nlohmann::json doc = ParseJson(ps.out);
  ASSERT_FALSE(doc.is_discarded()) << ps.out;
  EXPECT_EQ(doc["emulate_hosts"], 4);
  EXPECT_EQ(doc["hosts_used"], 2);
  ASSERT_EQ(doc["rank_namespaces"].size(), 2u);  // server 0, then worker 0
  EXPECT_NE(doc["rank_namespaces"][0], doc["rank_namespaces"][1]);
  // Server and worker on different hosts: the p2p yardstick crossed a 1 Gbit/s link.
  EXPECT_GT(doc["p2p_gbps"].get<double>(), 0.0);
  EXPECT_LE(doc["p2p_gbps"].get<double>() * 8, 1.1);

  const ProcessResult train =
      RunProcess(Cat({BinaryPath("pszero-bench"), "train", "--workers", "2", "--sync", "allreduce",
                      "--emulate-hosts", "4", "--timeout", "100", "--json"},
                     TinyModel()),
                 seconds(120));
  ASSERT_EQ(train.exit_code, 0) << train.out << train.err;
  const nlohmann::json t = ParseJson(train.out);
  ASSERT_FALSE(t.is_discarded()) << train.out;
  EXPECT_EQ(t["emulate_hosts"], 4);
  EXPECT_EQ(t["emulation"]["hosts"], 2);
  EXPECT_TRUE(t["emulation"]["tbf_burst_bytes"].is_null());  // no --link-gbit: no limit
  EXPECT_TRUE(t["runs"][0]["error"].is_null()) << t["runs"][0]["error"];
}

TEST_F(EmulatedClusterTest, InterruptedRunDeletesItsNamespaces) {
  std::unique_ptr<ChildProcess> bench = ChildProcess::Spawn(
      Cat({BinaryPath("pszero-bench"), "train", "--workers", "2", "--sync", "allreduce",
           "--emulate-hosts", "2", "--link-gbit", "0.01", "--timeout", "100"},
          TinyModel("200")));
  ASSERT_NE(bench, nullptr);
  // Wait for the job to be under way (the table header follows the set-up), then Ctrl-C.
  const auto deadline = std::chrono::steady_clock::now() + seconds(60);
  while (bench->Output().find("# emulated cluster") == std::string::npos &&
         !bench->Wait(std::chrono::milliseconds(100)) &&
         std::chrono::steady_clock::now() < deadline) {
  }
  if (bench->exited() && WIFEXITED(bench->wait_status()) &&
      WEXITSTATUS(bench->wait_status()) == kSkipped) {
    std::cout << "skipping: " << LastLine(bench->Output()) << std::endl;
    GTEST_SKIP() << LastLine(bench->Output());
  }
  ASSERT_FALSE(bench->exited()) << bench->Output();
  ASSERT_FALSE(NamespacesOf(bench->pid()).empty());
  bench->Signal(SIGINT);
  const ProcessResult r = bench->Finish(seconds(60));
  EXPECT_EQ(r.exit_code, 128 + SIGINT) << bench->Output();
  EXPECT_TRUE(NamespacesOf(bench->pid()).empty()) << bench->Output();
}

}  // namespace
}  // namespace pszero::testing
