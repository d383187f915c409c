// Bad input to the real pszero-launch, pszero-worker and pszero-server: device nodes and
// FIFOs where files belong, NaN and infinite numbers, out-of-range seeds, bad paths found
// only after training, repeated or malformed --config files, hostfile hosts that ssh would
// take for options, empty values and variables with garbage. Each is refused before any
// process starts, with exit 2 and exactly one line that names the flag (or file, or
// variable); nothing waits on a FIFO and no device node is replaced.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <tuple>

#include "common/temp_dir.h"
#include "tests/support/subprocess.h"

namespace pszero::testing {
namespace {

namespace fs = std::filesystem;

// Environment variables a developer's shell might carry into the test.
const std::vector<std::string> kCleanEnv = {
    "PSZERO_TOKEN",      "PSZERO_FAULT_INJECT", "PSZERO_MASTER_PORT", "PSZERO_MASTER_ADDR",
    "PSZERO_INTRA_HOST", "PSZERO_HIERARCHICAL", "PSZERO_SINGLE_COPY", "MASTER_ADDR"};

class BadInputTest : public ::testing::Test {
 protected:
  BadInputTest() : dir_(std::move(TempDir::Create("pszero-bad-input")).value()) {}

  std::string Path(const std::string& name) const { return (dir_.path() / name).string(); }
  std::string Write(const std::string& name, const std::string& text) const {
    std::ofstream(Path(name), std::ios::binary) << text;
    return Path(name);
  }
  std::string Fifo(const std::string& name) const {
    EXPECT_EQ(::mkfifo(Path(name).c_str(), 0600), 0);
    return Path(name);
  }
  // A character device like /dev/null (1, 3) or /dev/zero (1, 5), made here: the tests
  // never touch the real ones. Empty when this process may not make device nodes.
  std::string Device(const std::string& name, unsigned minor) const {
    if (::mknod(Path(name).c_str(), S_IFCHR | 0666, makedev(1, minor)) != 0) return "";
    return Path(name);
  }

  // Runs `binary args` and expects exit 2 with exactly `line` on stderr; a FIFO must not
  // make it wait (a short deadline).
  static void ExpectUsage(const std::string& binary, const std::vector<std::string>& args,
                          const std::string& line, const std::vector<std::string>& env = {}) {
    for (const auto& v : kCleanEnv) ::unsetenv(v.c_str());
    std::vector<std::string> argv = {BinaryPath(binary)};
    argv.insert(argv.end(), args.begin(), args.end());
    const ProcessResult r = RunProcess(argv, std::chrono::seconds(30), env);
    EXPECT_FALSE(r.timed_out) << binary;
    EXPECT_EQ(r.exit_code, 2) << binary << ": " << r.out << r.err;
    EXPECT_EQ(r.err, line + "\n");
  }
  static void ExpectLaunchUsage(const std::vector<std::string>& args, const std::string& why,
                                const std::vector<std::string>& env = {}) {
    ExpectUsage("pszero-launch", args, "pszero-launch: error: " + why, env);
  }
  // pszero-worker checks its flags before it joins: no service is needed.
  static void ExpectWorkerUsage(std::vector<std::string> args, const std::string& why) {
    args.insert(args.begin(), {"--master-port", "1"});
    ExpectUsage("pszero-worker", args, "pszero-worker: error: " + why);
  }

  TempDir dir_;
};

TEST_F(BadInputTest, ReportNeverReplacesADeviceOrAFifo) {
  std::string device = Device("mynull", 3);
  if (device.empty()) GTEST_SKIP() << "mknod needs root";
  for (const char* flag : {"--report", "--trace"}) {
    SCOPED_TRACE(flag);
    ExpectLaunchUsage({"--model", "mlp", "--steps", "1", flag, device},
                      std::string(flag) + ": " + device + ": is not a regular file (a device)");
    struct stat st {};
    ASSERT_EQ(::lstat(device.c_str(), &st), 0);
    EXPECT_TRUE(S_ISCHR(st.st_mode)) << "the device node was replaced";
  }
  const std::string fifo = Fifo("report.fifo");
  ExpectLaunchUsage({"--model", "mlp", "--steps", "1", "--report", fifo},
                    "--report: " + fifo + ": is not a regular file (a FIFO)");
  // A symlink to the device is the device.
  const std::string link = Path("link");
  fs::create_symlink(device, link);
  ExpectLaunchUsage({"--model", "mlp", "--steps", "1", "--report", link},
                    "--report: " + link + ": is not a regular file (a device)");
}

TEST_F(BadInputTest, OutputPathsAreCheckedBeforeTraining) {
  const std::string file = Write("file", "x");
  const std::string missing = Path("no-such-dir") + "/run.json";
  const std::vector<std::string> mlp = {"--model", "mlp", "--steps", "1"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = mlp;
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  ExpectLaunchUsage(with({"--report", dir_.path().string()}),
                    "--report: " + dir_.path().string() + ": is a directory");
  ExpectLaunchUsage(
      with({"--trace", missing}),
      "--trace: " + missing + ": directory " + Path("no-such-dir") + ": No such file or directory");
  ExpectLaunchUsage(with({"--report", file + "/run.json"}),
                    "--report: " + file + "/run.json: " + file + " is not a directory");
  ExpectLaunchUsage(with({"--checkpoint-dir", file}),
                    "--checkpoint-dir: " + file + " is not a directory");
  ExpectLaunchUsage(with({"--checkpoint-dir", file + "/sub/dir"}),
                    "--checkpoint-dir: " + file + " is not a directory");
  ExpectWorkerUsage(with({"--trace", dir_.path().string()}),
                    "--trace: " + dir_.path().string() + ": is a directory");
}

TEST_F(BadInputTest, NanAndInfinityAreRefusedByEveryFloatFlag) {
  for (const char* bad : {"nan", "NaN", "inf", "-inf", "1e308"}) {
    SCOPED_TRACE(bad);
    const std::string v(bad);
    const bool finite = v == "1e308";
    auto why = [&](const std::string& flag, const std::string& range) {
      return flag + ": Value " + v + (finite ? " not in range " : " is not a finite number in ") +
             range;
    };
    ExpectLaunchUsage({"--timeout", v}, why("--timeout", "[0 - 1e+07]"));
    ExpectLaunchUsage({"--model", "mlp", "--bucket-mb", v}, why("--bucket-mb", "[0.001 - 65536]"));
    ExpectLaunchUsage({"--model", "mlp", "--collective-timeout-s", v},
                      why("--collective-timeout-s", "[0.1 - 86400]"));
    ExpectLaunchUsage({"--servers", "1", "--ps-slice-mb", v},
                      why("--ps-slice-mb", "[0.0001 - 4096]"));
    ExpectWorkerUsage({"--model", "mlp", "--bucket-mb", v}, why("--bucket-mb", "[0.001 - 65536]"));
    ExpectUsage("pszero-server", {"--master-port", "1", "--lr", v},
                "pszero-server: error: " + why("--lr", "[0 - 1e+06]"));
  }
  // The server's variables go through the same checks.
  for (const auto& [var, flag, range] :
       {std::tuple{"PSZERO_LR", "--lr", "[0 - 1e+06]"},
        {"PSZERO_MOMENTUM", "--momentum", "[0 - 1]"},
        {"PSZERO_WEIGHT_DECAY", "--weight-decay", "[0 - 1e+06]"},
        {"PSZERO_PS_SLICE_MB", "--ps-slice-mb", "[0.0001 - 4096]"}}) {
    SCOPED_TRACE(var);
    ExpectUsage("pszero-server", {"--master-port", "1"},
                std::string("pszero-server: error: ") + flag +
                    ": Value nan is not a finite number in " + range,
                {std::string(var) + "=nan"});
  }
}

TEST_F(BadInputTest, SeedMustBeADecimalThatFits64Bits) {
  for (const char* bad : {"-1", "18446744073709551616", "1e3", "0x10", " 1"}) {
    SCOPED_TRACE(bad);
    const std::string why =
        std::string("--seed: Value ") + bad + " is not an integer in [0 - 18446744073709551615]";
    ExpectLaunchUsage({"--model", "mlp", "--seed", bad}, why);
    ExpectWorkerUsage({"--model", "mlp", "--seed", bad}, why);
  }
}

TEST_F(BadInputTest, InputFilesMustBeRegularFiles) {
  const std::string fifo = Fifo("input.fifo");
  const std::string token = Write("token", "0123456789abcdef\n");
  ExpectLaunchUsage({"--model", "gpt-tiny", "--data", fifo},
                    "--data " + fifo + ": is a FIFO with no writer");
  ExpectWorkerUsage({"--model", "gpt-tiny", "--data", fifo},
                    "--data " + fifo + ": is a FIFO with no writer");
  ExpectLaunchUsage({"--config", fifo}, "--config " + fifo + ": is a FIFO with no writer");
  ExpectLaunchUsage({"--config", dir_.path().string()},
                    "--config " + dir_.path().string() + ": is a directory");
  ExpectLaunchUsage({"--hostfile", fifo}, "--hostfile: " + fifo + ": is a FIFO with no writer");
  ExpectLaunchUsage({"--token-file", fifo},
                    "--token-file: token file " + fifo + ": is a FIFO with no writer");
  ExpectWorkerUsage({"--token-file", fifo},
                    "--token-file: token file " + fifo + ": is a FIFO with no writer");
  // A device that never ends: refused before a byte is read.
  if (const std::string zero = Device("myzero", 5); !zero.empty()) {
    ExpectLaunchUsage({"--model", "gpt-tiny", "--data", zero},
                      "--data " + zero + ": is not a regular file (a device)");
  }
}

TEST_F(BadInputTest, TokenFilesMustHoldAToken) {
  const std::string empty = Write("empty", "\n");
  const std::string nul = Write("nul", std::string("abc\0def", 7));
  ExpectLaunchUsage({"--token-file", empty}, "--token-file: token file " + empty + " is empty");
  ExpectWorkerUsage({"--token-file", empty}, "--token-file: token file " + empty + " is empty");
  ExpectLaunchUsage({"--token-file", nul},
                    "--token-file: token file " + nul + " contains a NUL byte");
  ExpectWorkerUsage({"--token-file", nul},
                    "--token-file: token file " + nul + " contains a NUL byte");
}

TEST_F(BadInputTest, ConfigFilesAreCheckedKeyByKey) {
  const std::string config = Write("c.json", R"({"workers": 2})");
  ExpectLaunchUsage({"--config", config, "--config", config},
                    "--config: given twice (one file only)");
  ExpectLaunchUsage({"--config", ""}, "--config: empty file name");
  const std::string bogus = Write("bogus.json", R"({"bogus": 1})");
  ExpectLaunchUsage({"--config", bogus}, "--config " + bogus + ": unknown key 'bogus'");
  const std::string off = Write("off.json", R"({"workers": false})");
  ExpectLaunchUsage({"--config", off}, "--config " + off + ": 'workers' takes a value, not false");
  const std::string eq = Write("eq.json", R"({"workers=3": 5})");
  ExpectLaunchUsage({"--config", eq}, "--config " + eq + ": bad key 'workers=3'");
}

TEST_F(BadInputTest, HostfileHostsMayNotLookLikeSshOptions) {
  const std::string hosts = Write("hosts", "alpha slots=1\n-V slots=1\n");
  ExpectLaunchUsage({"--hostfile", hosts},
                    "--hostfile: " + hosts + ":2: host '-V' starts with '-' (not a host name)");
}

TEST_F(BadInputTest, EmptyValuesAreNotUnset) {
  for (const char* flag : {"--resume", "--data", "--report", "--trace", "--checkpoint-dir",
                           "--nproc-per-node", "--hostfile", "--master-addr"}) {
    SCOPED_TRACE(flag);
    ExpectLaunchUsage({"--model", "mlp", flag, ""}, std::string(flag) + ": empty value");
  }
  ExpectWorkerUsage({"--model", "mlp", "--report", ""}, "--report: empty value");
}

TEST_F(BadInputTest, EnvironmentSwitchesTakeZeroOrOne) {
  for (const char* var : {"PSZERO_INTRA_HOST", "PSZERO_HIERARCHICAL", "PSZERO_SINGLE_COPY"}) {
    SCOPED_TRACE(var);
    ExpectLaunchUsage({"--workers", "1"}, std::string("$") + var + ": 'off' is not 0 or 1",
                      {std::string(var) + "=off"});
  }
}

TEST_F(BadInputTest, BinDirAndMasterAddrAreCheckedUpFront) {
  ExpectLaunchUsage({"--bin-dir", dir_.path().string()},
                    "--bin-dir: " + dir_.path().string() + " has no executable pszero-worker");
  ExpectLaunchUsage({"--master-addr", "999.1.1.1"},
                    "--master-addr: '999.1.1.1' is not an IPv4 address");
  ExpectLaunchUsage({"--master-addr", "-oFoo"}, "--master-addr: '-oFoo' is not a host name");
}

TEST_F(BadInputTest, ModelsLargerThanTheMachineAreRefused) {
  const std::vector<std::string> huge = {"--model",  "custom", "--d-model", "64",
                                         "--layers", "1",      "--heads",   "1",
                                         "--seq",    "65536",  "--batch",   "65536"};
  for (const char* binary : {"pszero-launch", "pszero-worker"}) {
    SCOPED_TRACE(binary);
    std::vector<std::string> argv = {BinaryPath(binary)};
    if (std::string(binary) == "pszero-worker") argv.insert(argv.end(), {"--master-port", "1"});
    argv.insert(argv.end(), huge.begin(), huge.end());
    const ProcessResult r = RunProcess(argv, std::chrono::seconds(30));
    EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
    EXPECT_EQ(
        r.err.rfind(std::string(binary) + ": error: --batch/--seq: activations of at least ", 0),
        0u)
        << r.err;
    EXPECT_NE(r.err.find(" per worker, more than this machine's "), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
}

// Memory that runs out mid-step (here: an address-space limit far below the machine's
// memory, so the model passes the up-front check) stops the worker through the normal
// failure path: its one "out of memory" line, exit 1, and the launcher names it. Never
// std::terminate's abort.
TEST_F(BadInputTest, OutOfMemoryMidTrainingIsOneLineNotAnAbort) {
  // The attention scores alone take 4 GiB: the up-front check lets them through only on
  // a machine with more memory than that.
  if (static_cast<double>(::sysconf(_SC_PHYS_PAGES)) * ::sysconf(_SC_PAGESIZE) < 8e9) {
    GTEST_SKIP() << "needs a machine with 8 GB of memory";
  }
  for (const auto& v : kCleanEnv) ::unsetenv(v.c_str());
  const std::string launch = BinaryPath("pszero-launch") +
                             " --timeout 120 --model custom --d-model 64 --layers 1 --heads 1"
                             " --seq 2048 --batch 256 --steps 1";
  const ProcessResult r = RunProcess({"/bin/sh", "-c", "ulimit -v 3000000 && exec " + launch},
                                     std::chrono::seconds(150));
  ASSERT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("stopping: out of memory: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("job failed: worker 0 (pid "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("exited with code 1"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("terminate called"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("signal"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace pszero::testing
