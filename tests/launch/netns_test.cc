// Four "machines" as network namespaces: each has its own eth0 (a veth pair whose other
// end joins a bridge in a fifth namespace) and its own loopback, so the only way between
// them is TCP over the bridge. One node launcher per namespace runs 2 workers; UCX is
// held to tcp on eth0 (UCX_TLS, UCX_NET_DEVICES pass through the launcher). Every sync
// mode trains the tiny GPT for 3 deterministic steps and must end with the one-host
// run's sha256. Needs root and iproute2; skipped with the reason otherwise. The
// namespaces are pszero-bench's EmulatedCluster without a rate limit (names and subnet
// from this test's pid), deleted at the end, also when an assertion fails.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "launch/bench/emulated_cluster.h"
#include "tests/launch/multinode_test_util.h"
#include "tests/support/child_process.h"
#include "tests/support/subprocess.h"

namespace pszero::testing {
namespace {

using std::chrono::seconds;

constexpr int kNodes = 4;
constexpr char kToken[] = "pszero-netns-test-token-91c2";

TEST(NetnsTest, FourNamespacesTrainEverySyncModeLikeOneHost) {
  bench::EmulatedClusterOptions options;
  options.hosts = kNodes;
  Result<std::unique_ptr<bench::EmulatedCluster>> created = bench::EmulatedCluster::Create(options);
  if (!created.ok()) {
    std::cout << "skipping: " << created.status().message() << std::endl;
    GTEST_SKIP() << created.status().message();
  }
  const std::unique_ptr<bench::EmulatedCluster> cluster = std::move(created).value();
  for (const std::string& v : kClusterVars) ::unsetenv(v.c_str());

  const auto one_host_start = std::chrono::steady_clock::now();
  const ProcessResult one_host =
      RunProcess(Cat({BinaryPath("pszero-launch"), "--timeout", "120", "--workers", "8"},
                     TinyTraining("allreduce")),
                 seconds(150));
  ASSERT_EQ(one_host.exit_code, 0) << one_host.err;
  const std::string want = PrintedSha(one_host.out);
  ASSERT_FALSE(want.empty()) << one_host.out;
  std::cout
      << "one host, 8 workers, allreduce: "
      << std::chrono::duration<double>(std::chrono::steady_clock::now() - one_host_start).count()
      << " s" << std::endl;

  int port = 29500;
  for (const std::string mode : {"allreduce", "zero1", "zero2", "zero3", "ps"}) {
    SCOPED_TRACE(mode);
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::string> job = TinyTraining(mode);
    if (mode == "ps") job = Cat(job, {"--servers", "1"});  // one server, on node 0
    std::vector<std::unique_ptr<ChildProcess>> nodes;
    for (int i = 0; i < kNodes; ++i) {
      nodes.push_back(ChildProcess::Spawn(
          Cat(Cat(cluster->Exec(i), {BinaryPath("pszero-launch"), "--timeout", "100", "--nnodes",
                                     std::to_string(kNodes), "--node-rank", std::to_string(i),
                                     "--master-addr", cluster->Address(0), "--master-port",
                                     std::to_string(port), "--nproc-per-node", "2"}),
              job),
          Cat({std::string("PSZERO_TOKEN=") + kToken}, bench::EmulatedCluster::UcxEnvironment()),
          kClusterVars));
      ASSERT_NE(nodes.back(), nullptr);
    }
    ++port;
    std::vector<ProcessResult> results;
    for (auto& n : nodes) results.push_back(n->Finish(seconds(120)));
    for (int i = 0; i < kNodes; ++i) {
      ASSERT_EQ(results[static_cast<size_t>(i)].exit_code, 0)
          << "node " << i << ":\n"
          << nodes[static_cast<size_t>(i)]->Output();
    }
    const std::string node0 = nodes[0]->Output();
    EXPECT_EQ(PrintedSha(node0), want) << node0;
    // The service bound the namespace's own address; worker 7 ran in the last namespace.
    EXPECT_NE(node0.find("rendezvous service listening on " + cluster->Address(0)),
              std::string::npos)
        << node0;
    EXPECT_NE(nodes[kNodes - 1]->Output().find("joined as worker 7"), std::string::npos);
    std::cout << mode << " over 4 namespaces x 2 workers (tcp): "
              << std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()
              << " s" << std::endl;
  }

  // The same job through --hostfile: the launcher here starts one node launcher per
  // namespace through a fake ssh; the UCX settings reach them only on the command line.
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("pszero-netns-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string ssh = (dir / "ssh").string();
  const std::string hosts = (dir / "hosts").string();
  {
    std::ofstream(ssh) << "#!/bin/sh\n[ \"$1\" = -o ] && [ \"$2\" = BatchMode=yes ] || exit 97\n"
                       << "ns=" << cluster->Namespace(0).substr(0, cluster->Namespace(0).size() - 2)
                       << "$3\nshift 3\nexec env -i PATH=\"$PATH\" " << bench::IpProgram()
                       << " netns exec \"$ns\" /bin/sh -c \"$1\"\n";
    std::filesystem::permissions(ssh, std::filesystem::perms::owner_all);
    std::ofstream out(hosts);
    for (int i = 0; i < kNodes; ++i) out << "h" << i << " slots=2\n";
  }
  const auto start = std::chrono::steady_clock::now();
  const ProcessResult r =
      RunProcess(Cat({BinaryPath("pszero-launch"), "--timeout", "100", "--hostfile", hosts,
                      "--master-addr", cluster->Address(0), "--master-port", std::to_string(port)},
                     TinyTraining("zero3")),
                 seconds(120),
                 Cat({"PSZERO_SSH=" + ssh, std::string("PSZERO_TOKEN=") + kToken},
                     bench::EmulatedCluster::UcxEnvironment()));
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(PrintedSha(r.out), want) << r.out;
  EXPECT_NE(r.err.find("all 4 node launchers exited with code 0"), std::string::npos) << r.err;
  std::cout << "zero3 via --hostfile over 4 namespaces x 2 workers (tcp): "
            << std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()
            << " s" << std::endl;
}

}  // namespace
}  // namespace pszero::testing
