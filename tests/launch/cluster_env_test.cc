// Where a process stands in a cluster, from what the cluster tools say: Slurm node lists
// and variables, torchrun-style and Open MPI variables, hostfiles, per-node counts and
// --config files. Pure functions over fake environments and texts.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "common/cluster_env.h"
#include "common/flags.h"
#include "launch/config_file.h"
#include "launch/hostfile.h"
#include "launch/multinode.h"

namespace pszero {
namespace {

using Hosts = std::vector<std::string>;

TEST(SlurmNodeListTest, ExpandsBracketsRangesAndPadding) {
  EXPECT_EQ(*ExpandSlurmNodeList("node[01-04,07]"),
            (Hosts{"node01", "node02", "node03", "node04", "node07"}));
  EXPECT_EQ(*ExpandSlurmNodeList("gpu5"), (Hosts{"gpu5"}));
  EXPECT_EQ(*ExpandSlurmNodeList("a[1-2],b,c[09-10]"), (Hosts{"a1", "a2", "b", "c09", "c10"}));
  EXPECT_EQ(*ExpandSlurmNodeList("rack[1-2]-n[3-4]"),
            (Hosts{"rack1-n3", "rack1-n4", "rack2-n3", "rack2-n4"}));
  EXPECT_EQ(*ExpandSlurmNodeList("127.0.0.[1-2]"), (Hosts{"127.0.0.1", "127.0.0.2"}));
  EXPECT_EQ(*ExpandSlurmNodeList("n[7]"), (Hosts{"n7"}));
}

TEST(SlurmNodeListTest, RefusesMalformedLists) {
  for (const char* bad :
       {"node[1-", "node1-2]", "node[a-b]", "node[4-2]", "a,,b", "n[[1]]", "", "n[1,]"}) {
    SCOPED_TRACE(bad);
    const auto r = ExpandSlurmNodeList(bad);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  }
}

TEST(NodeEnvTest, SlurmGivesNodeRankCountAndMaster) {
  const EnvMap env = {{"SLURM_JOB_ID", "4242"},
                      {"SLURM_NNODES", "4"},
                      {"SLURM_NODELIST", "node[01-04]"},
                      {"SLURM_PROCID", "2"}};
  const auto r = DeriveNodeEnv(env);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->source, "slurm");
  EXPECT_EQ(r->nnodes, 4);
  EXPECT_EQ(r->node_rank, 2);
  EXPECT_EQ(r->master_addr, "node01");
  EXPECT_EQ(r->master_port, SlurmDefaultPort(4242));
  EXPECT_EQ(SlurmDefaultPort(4242), 24242);

  // SLURM_NODEID wins over SLURM_PROCID; SLURM_JOB_NODELIST over SLURM_NODELIST.
  EnvMap more = env;
  more["SLURM_NODEID"] = "3";
  more["SLURM_JOB_NODELIST"] = "x[5-8]";
  const auto m = DeriveNodeEnv(more);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->node_rank, 3);
  EXPECT_EQ(m->master_addr, "x5");
}

TEST(NodeEnvTest, TorchrunVariablesOverrideSlurm) {
  const EnvMap env = {{"SLURM_JOB_ID", "7"},        {"SLURM_NNODES", "4"},
                      {"SLURM_NODELIST", "n[1-4]"}, {"SLURM_PROCID", "1"},
                      {"MASTER_ADDR", "10.0.0.9"},  {"MASTER_PORT", "29501"}};
  const auto r = DeriveNodeEnv(env);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->source, "slurm+torchrun");
  EXPECT_EQ(r->nnodes, 4);
  EXPECT_EQ(r->node_rank, 1);
  EXPECT_EQ(r->master_addr, "10.0.0.9");
  EXPECT_EQ(r->master_port, 29501);
}

TEST(NodeEnvTest, TorchrunAloneAndNothingAtAll) {
  const auto r = DeriveNodeEnv({{"NNODES", "2"}, {"NODE_RANK", "1"}, {"MASTER_ADDR", "h0"}});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->source, "torchrun");
  EXPECT_EQ(r->nnodes, 2);
  EXPECT_EQ(r->node_rank, 1);
  EXPECT_EQ(r->master_addr, "h0");
  EXPECT_FALSE(r->master_port.has_value());
  const auto g = DeriveNodeEnv({{"GROUP_RANK", "3"}});
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->node_rank, 3);

  const auto none = DeriveNodeEnv({{"PATH", "/bin"}, {"SLURM_JOB_ID", "5"}});
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->source, "");
  EXPECT_FALSE(none->nnodes.has_value());
  EXPECT_FALSE(none->master_addr.has_value());
}

TEST(NodeEnvTest, MalformedVariablesAreNamed) {
  const auto port = DeriveNodeEnv({{"MASTER_PORT", "http"}});
  ASSERT_FALSE(port.ok());
  EXPECT_NE(port.status().message().find("$MASTER_PORT"), std::string::npos);
  const auto big = DeriveNodeEnv({{"MASTER_PORT", "70000"}});
  ASSERT_FALSE(big.ok());
  const auto rank = DeriveNodeEnv({{"SLURM_JOB_ID", "1"},
                                   {"SLURM_NNODES", "2"},
                                   {"SLURM_NODELIST", "a,b"},
                                   {"SLURM_PROCID", "5"}});
  ASSERT_FALSE(rank.ok());
  EXPECT_NE(rank.status().message().find("SLURM_PROCID"), std::string::npos);
  const auto second_task = DeriveNodeEnv({{"SLURM_JOB_ID", "1"},
                                          {"SLURM_NNODES", "2"},
                                          {"SLURM_NODELIST", "a,b"},
                                          {"SLURM_PROCID", "1"},
                                          {"SLURM_NODEID", "0"},
                                          {"SLURM_LOCALID", "1"}});
  ASSERT_FALSE(second_task.ok());
  EXPECT_NE(second_task.status().message().find("--ntasks-per-node=1"), std::string::npos);
  const auto list = DeriveNodeEnv({{"SLURM_JOB_ID", "1"},
                                   {"SLURM_NNODES", "2"},
                                   {"SLURM_NODELIST", "a[1-"},
                                   {"SLURM_PROCID", "0"}});
  EXPECT_FALSE(list.ok());
}

TEST(ProcessEnvTest, OpenMpiVariables) {
  const EnvMap env = {{"OMPI_COMM_WORLD_RANK", "5"},
                      {"OMPI_COMM_WORLD_SIZE", "8"},
                      {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                      {"OMPI_COMM_WORLD_NODE_RANK", "2"},
                      {"MASTER_ADDR", "10.1.1.1"},
                      {"MASTER_PORT", "29400"},
                      {"RANK", "0"}};  // Open MPI's win over torchrun-style
  const auto r = DeriveProcessEnv(env);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->source, "ompi");
  EXPECT_EQ(r->rank, 5);
  EXPECT_EQ(r->world_size, 8);
  EXPECT_EQ(r->local_rank, 1);
  EXPECT_EQ(r->node_rank, 2);
  EXPECT_EQ(r->master_addr, "10.1.1.1");
  EXPECT_EQ(r->master_port, 29400);
}

TEST(ProcessEnvTest, TorchrunVariables) {
  const auto r = DeriveProcessEnv({{"RANK", "3"},
                                   {"WORLD_SIZE", "4"},
                                   {"LOCAL_RANK", "1"},
                                   {"GROUP_RANK", "1"},
                                   {"MASTER_ADDR", "h"}});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->source, "torchrun");
  EXPECT_EQ(r->rank, 3);
  EXPECT_EQ(r->world_size, 4);
  EXPECT_EQ(r->local_rank, 1);
  EXPECT_EQ(r->node_rank, 1);
  EXPECT_EQ(r->master_addr, "h");
  EXPECT_FALSE(r->master_port.has_value());
}

TEST(ProcessEnvTest, NothingSaidAndBadValues) {
  // MASTER_ADDR alone does not make a process part of someone else's launch.
  const auto none = DeriveProcessEnv({{"MASTER_ADDR", "h"}});
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->source, "");
  EXPECT_FALSE(none->master_addr.has_value());

  const auto over = DeriveProcessEnv({{"RANK", "4"}, {"WORLD_SIZE", "4"}});
  ASSERT_FALSE(over.ok());
  EXPECT_NE(over.status().message().find("$RANK"), std::string::npos);
  const auto bad = DeriveProcessEnv({{"OMPI_COMM_WORLD_RANK", "-1"}});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("$OMPI_COMM_WORLD_RANK"), std::string::npos);
}

TEST(HostfileTest, ParsesHostsSlotsCommentsAndBlankLines) {
  const auto r = ParseHostfile(
      "# the cluster\n"
      "\n"
      "alpha slots=4\n"
      "  beta   slots=2   # two GPUs\n"
      "gamma\n",
      "hosts.txt");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->size(), 3u);
  EXPECT_EQ((*r)[0].host, "alpha");
  EXPECT_EQ((*r)[0].slots, 4);
  EXPECT_EQ((*r)[1].host, "beta");
  EXPECT_EQ((*r)[1].slots, 2);
  EXPECT_EQ((*r)[2].host, "gamma");
  EXPECT_EQ((*r)[2].slots, 1);
}

TEST(HostfileTest, BadLinesAreNamedByFileAndLine) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"a slots=2\nb slots=x\n", "hosts:2:"},
      {"a slots=0\n", "hosts:1:"},
      {"\n\na cpus=2\n", "hosts:3:"},
      {"a slots=2 b\n", "hosts:1:"},
      {"a\n# c\na slots=2\n", "hosts:3:"},
      {"slots=2\n", "hosts:1:"},
      {"a slots=99999\n", "hosts:1:"},
      {"a slots=2x\n", "hosts:1:"},
      {"# nothing\n\n", "hosts: no hosts"},
      {"a\n-V slots=1\n", "hosts:2: host '-V'"},
      {"-F/etc/passwd\n", "hosts:1: host '-F/etc/passwd' starts with '-'"},
  };
  for (const auto& [text, where] : cases) {
    SCOPED_TRACE(text);
    const auto r = ParseHostfile(text, "hosts");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().message().rfind(where, 0), 0u) << r.status().message();
  }
}

TEST(NodeLayoutTest, CountsAndOffsetsAreNodeMajor) {
  EXPECT_EQ(SplitEvenly(8, 4), (std::vector<int>{2, 2, 2, 2}));
  EXPECT_EQ(SplitEvenly(1, 4), (std::vector<int>{1, 0, 0, 0}));
  EXPECT_EQ(SplitEvenly(7, 3), (std::vector<int>{3, 2, 2}));
  EXPECT_EQ(*ParsePerNode("2", 3, "--f"), (std::vector<int>{2, 2, 2}));
  EXPECT_EQ(*ParsePerNode("4,2,0", 3, "--f"), (std::vector<int>{4, 2, 0}));
  for (const char* bad : {"", "x", "1,2", "1,,2", "-1", "2.5"}) {
    const auto r = ParsePerNode(bad, 3, "--nproc-per-node");
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().message().rfind("--nproc-per-node", 0), 0u);
  }
  NodeLayout layout{{4, 2, 2}, {1, 0, 1}};
  EXPECT_EQ(layout.TotalWorkers(), 8);
  EXPECT_EQ(layout.TotalServers(), 2);
  EXPECT_EQ(layout.WorkerOffset(0), 0);
  EXPECT_EQ(layout.WorkerOffset(2), 6);
  EXPECT_EQ(layout.ServerOffset(2), 1);
}

TEST(ShellQuoteTest, SurvivesAShell) {
  EXPECT_EQ(ShellQuote("a b"), "'a b'");
  EXPECT_EQ(ShellQuote("it's"), "'it'\\''s'");
  EXPECT_TRUE(IsIpLiteral("10.0.0.1"));
  EXPECT_TRUE(IsIpLiteral("::1"));
  EXPECT_FALSE(IsIpLiteral("node01"));
}

class ConfigFileTest : public ::testing::Test {
 protected:
  // The flags a config may name, as pszero-launch has them (a few).
  ConfigFileTest() : app_(MakeApp("pszero-launch", "test")) {
    for (const char* name : {"--workers", "--sync", "--report", "--bucket-mb", "--checkpoint-dir",
                             "--tp", "--nproc-per-node,--workers-per-node"}) {
      app_->add_option(name, values_[name]);
    }
    app_->add_flag("--deterministic", deterministic_);
    app_->add_flag("--rendezvous-only", deterministic_);
  }
  Result<std::vector<std::string>> Expand(const std::vector<std::string>& args) {
    return ExpandConfigFlags(args, *app_);
  }

  std::string Write(const std::string& text) {
    path_ = std::filesystem::temp_directory_path() /
            ("pszero-config-" + std::to_string(::getpid()) + ".json");
    std::ofstream(path_) << text;
    return path_.string();
  }
  ~ConfigFileTest() override {
    std::error_code ec;
    std::filesystem::remove(path_, ec);
  }
  std::filesystem::path path_;
  std::unique_ptr<CLI::App> app_;
  std::map<std::string, std::string> values_;
  bool deterministic_ = false;
};

TEST_F(ConfigFileTest, FlagsComeFirstAndTheCommandLineWins) {
  const std::string path = Write(
      R"({"workers": 4, "sync": "zero3", "deterministic": true, "report": "",
          "nproc_per_node": "2", "bucket-mb": 0.5, "checkpoint-dir": "x", "rendezvous_only": false})");
  const auto r = Expand({"--workers", "2", "--config", path, "--checkpoint-dir=y"});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const std::vector<std::string> want = {"--bucket-mb",
                                         "0.5",
                                         "--deterministic",
                                         "--nproc-per-node",
                                         "2",
                                         "--report",
                                         "",
                                         "--sync",
                                         "zero3",
                                         "--workers",
                                         "2",
                                         "--checkpoint-dir=y"};
  EXPECT_EQ(*r, want);
  const auto none = Expand({"--workers", "2"});
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, (std::vector<std::string>{"--workers", "2"}));
}

TEST_F(ConfigFileTest, BadFilesAreRefusedNamingTheFlag) {
  for (const char* text : {"{\"workers\": [1, 2]}", "[1]", "{nope", "{\"w\": null}"}) {
    SCOPED_TRACE(text);
    const std::string path = Write(text);
    const auto r = Expand({"--config=" + path});
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().message().rfind("--config " + path + ": ", 0), 0u) << r.status().message();
  }
  EXPECT_FALSE(Expand({"--config", "/nonexistent/pszero.json"}).ok());
  EXPECT_FALSE(Expand({"--config"}).ok());
}

// Every key names a flag, and its value has the flag's kind: a wrong one is named.
TEST_F(ConfigFileTest, UnknownKeysAndWrongKindsAreNamed) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"bogus": 1})", "unknown key 'bogus'"},
      {R"({"workers=3": 5})", "bad key 'workers=3'"},
      {R"({"help": true})", "unknown key 'help'"},
      {R"({"workers": false})", "'workers' takes a value, not false"},
      {R"({"workers": true})", "'workers' takes a value, not true"},
      {R"({"deterministic": 1})", "'deterministic' is a flag without value: true or false"},
      {R"({"sync": {"a": 1}})", "'sync' must be a string or a number"},
  };
  for (const auto& [text, why] : cases) {
    SCOPED_TRACE(text);
    const std::string path = Write(text);
    const auto r = Expand({"--config", path});
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().message(), "--config " + path + ": " + why);
  }
}

TEST_F(ConfigFileTest, RepeatedEmptyAndNonRegularConfigsAreRefused) {
  const std::string path = Write(R"({"workers": 2})");
  auto r = Expand({"--config", path, "--config=" + path});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "--config: given twice (one file only)");
  r = Expand({"--config", ""});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "--config: empty file name");
  const std::string dir = std::filesystem::temp_directory_path().string();
  r = Expand({"--config", dir});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "--config " + dir + ": is a directory");
  // A FIFO without a writer: refused at once, never waited on.
  const std::string fifo = path + ".fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  r = Expand({"--config", fifo});
  ::unlink(fifo.c_str());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "--config " + fifo + ": is a FIFO with no writer");
}

}  // namespace
}  // namespace pszero
