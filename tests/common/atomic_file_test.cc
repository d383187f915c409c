#include "common/atomic_file.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include "common/report.h"

namespace pszero {
namespace {

namespace fs = std::filesystem;

class AtomicFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("pszero_atomic_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  int FilesInDir() const {
    int n = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir_)) ++n;
    return n;
  }

  fs::path dir_;
};

TEST_F(AtomicFileTest, WritesAndReplaces) {
  const fs::path p = dir_ / "report.json";
  ASSERT_TRUE(WriteFileAtomic(p, "first").ok());
  EXPECT_EQ(*ReadFile(p), "first");
  ASSERT_TRUE(WriteJsonAtomic(p, {{"loss", 1.5}}).ok());
  EXPECT_EQ(nlohmann::json::parse(*ReadFile(p))["loss"], 1.5);
  EXPECT_EQ(FilesInDir(), 1);  // no temp file left behind
}

TEST_F(AtomicFileTest, AbandonedWriterLeavesOldFileAndNoTemp) {
  const fs::path p = dir_ / "report.json";
  ASSERT_TRUE(WriteFileAtomic(p, "old contents").ok());
  {
    Result<AtomicFileWriter> w = AtomicFileWriter::Open(p);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE(w->Append("new, half-writ").ok());
    EXPECT_TRUE(fs::exists(w->temp_path()));
  }
  EXPECT_EQ(*ReadFile(p), "old contents");
  EXPECT_EQ(FilesInDir(), 1);
}

// A writer process dies between writing and renaming (as a kill -9 would leave it):
// the old file is intact.
TEST_F(AtomicFileTest, WriterKilledMidWriteLeavesOldFileIntact) {
  const fs::path p = dir_ / "report.json";
  ASSERT_TRUE(WriteFileAtomic(p, "{\"step\": 1}\n").ok());
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    Result<AtomicFileWriter> w = AtomicFileWriter::Open(p);
    if (!w.ok()) ::_exit(3);
    std::string big(1 << 20, 'x');
    if (!w->Append("{\"step\": 2, \"pad\": \"").ok() || !w->Append(big).ok()) ::_exit(4);
    ::_exit(0);  // dies without Commit and without running destructors
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(*ReadFile(p), "{\"step\": 1}\n");
  // The half-written temp file is there, under another name.
  EXPECT_EQ(FilesInDir(), 2);
}

TEST_F(AtomicFileTest, UnwritableDirectoryIsAnIoError) {
  Status s = WriteFileAtomic(dir_ / "missing" / "report.json", "x");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kIoError);
  EXPECT_NE(s.message().find("missing"), std::string::npos);
}

TEST_F(AtomicFileTest, CommitTwiceIsAnError) {
  Result<AtomicFileWriter> w = AtomicFileWriter::Open(dir_ / "a");
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE(w->Commit().ok());
  EXPECT_FALSE(w->Commit().ok());
  EXPECT_FALSE(w->Append("x").ok());
}

TEST_F(AtomicFileTest, ReadMissingFileIsAnIoError) {
  Result<std::string> r = ReadFile(dir_ / "nope");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kIoError);
}

}  // namespace
}  // namespace pszero
