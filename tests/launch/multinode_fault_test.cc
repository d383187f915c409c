// A worker killed on node 1 of a two-node job (node launchers as processes on 127.0.0.1):
// the service on node 0 tells every survivor, both node launchers exit 1, and each last
// line names the cause.
#include <gtest/gtest.h>

#include "tests/launch/multinode_test_util.h"

namespace pszero::testing {
namespace {

constexpr char kToken[] = "pszero-multinode-fault-token-3a7e";

// The control-plane life only (no --model): the failure travels through the service,
// independently of what the data plane does when a peer vanishes mid-transfer.
TEST(MultiNodeFaultTest, WorkerKilledOnNodeOneFailsBothNodes) {
  const std::string port = std::to_string(FreePort());
  std::vector<std::pair<std::vector<std::string>, std::vector<std::string>>> nodes;
  for (int r = 0; r < 2; ++r) {
    nodes.push_back(
        {{"--nnodes", "2", "--node-rank", std::to_string(r), "--master-port", port,
          "--nproc-per-node", "2", "--grace-ms", "3000"},
         {std::string("PSZERO_TOKEN=") + kToken, "PSZERO_FAULT_INJECT=sigkill:w3:published"}});
  }
  const std::vector<NodeRun> runs = RunNodes(nodes);
  EXPECT_EQ(runs[1].exit_code, 1) << runs[1].output;
  EXPECT_NE(LastLine(runs[1].output).find("job failed: worker 3 (pid "), std::string::npos)
      << runs[1].output;
  EXPECT_EQ(runs[0].exit_code, 1) << runs[0].output;
  EXPECT_NE(LastLine(runs[0].output).find("job failed: worker 3 lost"), std::string::npos)
      << runs[0].output;
  for (const char* survivor : {"[w0]", "[w1]"}) {
    EXPECT_TRUE(HasLine(runs[0].output, survivor, "stopping: worker 3 lost")) << runs[0].output;
  }
  EXPECT_TRUE(HasLine(runs[1].output, "[w2]", "stopping: worker 3 lost")) << runs[1].output;
}

}  // namespace
}  // namespace pszero::testing
