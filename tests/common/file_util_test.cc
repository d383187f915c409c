// ReadInputFile, CheckOutputFilePath and CheckReplaceableFile against what a path may
// name besides a regular file: a FIFO without a writer (never waited on), a device made
// with mknod in a temporary directory (never the real /dev nodes), a directory, a file
// over the size limit; and the flag helpers FiniteRange, NonEmpty and GuardedMain.
#include "common/file_util.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <fstream>
#include <new>
#include <stdexcept>

#include "common/atomic_file.h"
#include "common/flags.h"
#include "common/temp_dir.h"

namespace pszero {
namespace {

class FileUtilTest : public ::testing::Test {
 protected:
  FileUtilTest() : dir_(std::move(TempDir::Create("pszero-file-util")).value()) {}
  std::string Path(const std::string& name) const { return (dir_.path() / name).string(); }
  TempDir dir_;
};

TEST_F(FileUtilTest, ReadsRegularFilesAndRefusesTheRest) {
  const std::string file = Path("f");
  std::ofstream(file) << "hello";
  EXPECT_EQ(*ReadInputFile(file), "hello");
  const std::string fifo = Path("fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  Result<std::string> r = ReadInputFile(fifo);  // returns at once: no writer awaited
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), fifo + ": is a FIFO with no writer");
  r = ReadInputFile(dir_.path());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), dir_.path().string() + ": is a directory");
  r = ReadInputFile(file, 4);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), file + ": 5 bytes, more than the limit of 4");
  r = ReadInputFile(Path("missing"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  const std::string zero = Path("zero");  // like /dev/zero: reading it would never end
  if (::mknod(zero.c_str(), S_IFCHR | 0666, makedev(1, 5)) == 0) {
    r = ReadInputFile(zero);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().message(), zero + ": is not a regular file (a device)");
  }
}

// A pipe with a writer (process substitution: `--token-file <(pass show x)`) is read to
// the writer's end, under the cap.
TEST_F(FileUtilTest, ReadsAPipeToItsWritersEnd) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const std::string path = "/proc/self/fd/" + std::to_string(fds[0]);
  ASSERT_EQ(::write(fds[1], "token\n", 6), 6);
  ::close(fds[1]);
  Result<std::string> r = ReadInputFile(path);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, "token\n");
  ::close(fds[0]);
  ASSERT_EQ(::pipe(fds), 0);
  ASSERT_EQ(::write(fds[1], "0123456789", 10), 10);
  ::close(fds[1]);
  r = ReadInputFile("/proc/self/fd/" + std::to_string(fds[0]), 4);
  ::close(fds[0]);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(),
            "/proc/self/fd/" + std::to_string(fds[0]) + ": more than the limit of 4 bytes");
}

// An atomic write renames over its target: never over a device, a FIFO or a directory.
TEST_F(FileUtilTest, AtomicWritesNeverReplaceWhatIsNotARegularFile) {
  const std::string fifo = Path("fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  Status s = WriteFileAtomic(fifo, "x");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), fifo + ": is not a regular file (a FIFO)");
  struct stat st {};
  ASSERT_EQ(::lstat(fifo.c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  const std::string null = Path("mynull");
  if (::mknod(null.c_str(), S_IFCHR | 0666, makedev(1, 3)) == 0) {
    s = WriteFileAtomic(null, "x");
    EXPECT_EQ(s.message(), null + ": is not a regular file (a device)");
    const std::string link = Path("link");
    std::filesystem::create_symlink(null, link);
    s = WriteFileAtomic(link, "x");
    EXPECT_EQ(s.message(), link + ": is not a regular file (a device)");
    ASSERT_EQ(::lstat(null.c_str(), &st), 0);
    EXPECT_TRUE(S_ISCHR(st.st_mode)) << "the device node was replaced";
  }
  const std::string sub = Path("sub");
  std::filesystem::create_directory(sub);
  EXPECT_EQ(WriteFileAtomic(sub, "x").message(), sub + ": is a directory");
  // The target turns into a FIFO between Open and Commit: the commit refuses too.
  const std::string later = Path("later");
  Result<AtomicFileWriter> w = AtomicFileWriter::Open(later);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE(w->Append("data").ok());
  ASSERT_EQ(::mkfifo(later.c_str(), 0600), 0);
  EXPECT_EQ(w->Commit().message(), later + ": is not a regular file (a FIFO)");
  ASSERT_EQ(::lstat(later.c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  // No temporary file is left behind by any of them.
  int entries = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir_.path())) ++entries;
  EXPECT_EQ(entries, ::access(null.c_str(), F_OK) == 0 ? 5 : 3);
  // A regular file and an absent one are replaced as ever.
  EXPECT_TRUE(WriteFileAtomic(Path("new"), "x").ok());
  EXPECT_TRUE(WriteFileAtomic(Path("new"), "y").ok());
}

TEST_F(FileUtilTest, OutputPathsNeedAnExistingDirectory) {
  EXPECT_TRUE(CheckOutputFilePath(Path("run.json")).ok());
  const std::string missing = Path("no/run.json");
  EXPECT_EQ(CheckOutputFilePath(missing).message(),
            missing + ": directory " + Path("no") + ": No such file or directory");
  const std::string file = Path("f");
  std::ofstream(file) << "x";
  EXPECT_EQ(CheckOutputFilePath(file + "/run.json").message(),
            file + "/run.json: " + file + " is not a directory");
  EXPECT_EQ(CheckOutputFilePath(dir_.path()).message(), dir_.path().string() + ": is a directory");
}

int Parse(CLI::App& app, std::vector<std::string> args) {
  args.insert(args.begin(), "test");
  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  ::testing::internal::CaptureStderr();
  const auto code = ParseFlags(app, static_cast<int>(argv.size()), argv.data());
  ::testing::internal::GetCapturedStderr();
  return code.value_or(0);
}

TEST(FlagHelpersTest, FiniteRangeRefusesNanAndInfinity) {
  auto app = MakeApp("test", "test");
  double x = 0;
  std::string s;
  app->add_option("--x", x)->check(FiniteRange(0.5, 2.0));
  app->add_option("--s", s)->check(NonEmpty());
  for (const char* bad : {"nan", "-nan", "inf", "-inf", "1e308", "0.4", "x", ""}) {
    SCOPED_TRACE(bad);
    EXPECT_EQ(Parse(*app, {"--x", bad}), kExitUsage);
  }
  EXPECT_EQ(Parse(*app, {"--x", "2"}), 0);
  EXPECT_EQ(x, 2.0);
  EXPECT_EQ(Parse(*app, {"--s", ""}), kExitUsage);
}

TEST(FlagHelpersTest, GuardedMainTurnsExceptionsIntoOneLine) {
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(GuardedMain("pszero-x", []() -> int { throw std::bad_alloc(); }), 1);
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "pszero-x: out of memory\n");
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(GuardedMain("pszero-x", []() -> int { throw std::runtime_error("two\nlines"); }), 1);
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "pszero-x: internal error: two lines\n");
  EXPECT_EQ(GuardedMain("pszero-x", [] { return 7; }), 7);
}

}  // namespace
}  // namespace pszero
