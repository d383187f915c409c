// scripts/torch_peer.py, the PyTorch yardstick of `pszero-bench train --peer torch`: its
// JSON shape, and that its models have exactly pszero's parameter counts (the same
// architecture). Skipped, saying so, where no python3 imports torch. Label slow: each
// process imports torch, and the runs are real.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "tests/support/subprocess.h"
#include "worker/model/config.h"

namespace pszero::testing {
namespace {

std::string TorchPython() {
  for (const char* py : {"python3", "/usr/bin/python3"}) {
    ProcessResult r =
        RunProcess({"/usr/bin/env", py, "-c", "import torch"}, std::chrono::seconds(120));
    if (r.exit_code == 0 && !r.timed_out) return py;
  }
  return "";
}

nlohmann::json RunPeer(const std::string& python, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"/usr/bin/env", python, PSZERO_TORCH_PEER_SCRIPT};
  argv.insert(argv.end(), args.begin(), args.end());
  ProcessResult r = RunProcess(argv, std::chrono::seconds(600));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return nlohmann::json::parse(r.out, nullptr, false);
}

int64_t Params(const std::string& preset) {
  return model::ParamCount(*model::PresetConfig(preset));
}

TEST(TorchPeerTest, GptTinyDdpAndFsdpJson) {
  const std::string python = TorchPython();
  if (python.empty()) GTEST_SKIP() << "PyTorch not importable (apt install python3-torch)";
  const nlohmann::json j = RunPeer(python, {"--model", "gpt-tiny", "--workers", "2", "--steps", "2",
                                            "--modes", "allreduce,zero3"});
  ASSERT_FALSE(j.is_discarded());
  EXPECT_EQ(j["peer"], "torch");
  EXPECT_TRUE(j["torch_version"].is_string());
  EXPECT_EQ(j["workers"], 2);
  EXPECT_EQ(j["tokens_per_step"], 2 * 8 * 128);
  ASSERT_EQ(j["runs"].size(), 2u);
  const nlohmann::json& ddp = j["runs"][0];
  EXPECT_EQ(ddp["mode"], "allreduce");
  EXPECT_TRUE(ddp["error"].is_null()) << ddp.dump();
  EXPECT_EQ(ddp["params"], Params("gpt-tiny"));
  EXPECT_GT(ddp["step_s_median"].get<double>(), 0);
  ASSERT_EQ(ddp["losses"].size(), 2u);
  EXPECT_NEAR(ddp["losses"][0].get<double>(), std::log(256.0), 0.5);  // about ln V at init
  // FSDP either ran or says exactly why not (torch 1.13 under Python 3.11 cannot import it).
  const nlohmann::json& fsdp = j["runs"][1];
  EXPECT_EQ(fsdp["mode"], "zero3");
  if (fsdp["error"].is_null()) {
    EXPECT_GT(fsdp["step_s_median"].get<double>(), 0);
  } else {
    EXPECT_TRUE(fsdp["step_s_median"].is_null());
    EXPECT_FALSE(fsdp["error"].get<std::string>().empty());
  }
}

TEST(TorchPeerTest, MlpHasPszerosParameterCount) {
  const std::string python = TorchPython();
  if (python.empty()) GTEST_SKIP() << "PyTorch not importable (apt install python3-torch)";
  const nlohmann::json j =
      RunPeer(python, {"--model", "mlp", "--workers", "1", "--steps", "1", "--modes", "allreduce"});
  ASSERT_FALSE(j.is_discarded());
  EXPECT_EQ(j["runs"][0]["params"], Params("mlp"));
  EXPECT_EQ(j["tokens_per_step"], 16);
}

}  // namespace
}  // namespace pszero::testing
