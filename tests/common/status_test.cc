#include "common/status.h"

#include <gtest/gtest.h>

#include <memory>

namespace pszero {
namespace {

TEST(StatusTest, DefaultIsOk) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kOk);
  EXPECT_EQ(s.ToString(), "ok");
}

TEST(StatusTest, EveryCodeHasItsNameInToString) {
  EXPECT_EQ(Status::InvalidArgument("bad --x").ToString(), "invalid argument: bad --x");
  EXPECT_EQ(Status::NotFound("k").ToString(), "not found: k");
  EXPECT_EQ(Status::IoError("disk").ToString(), "io error: disk");
  EXPECT_EQ(Status::Unavailable("peer w3 gone").ToString(), "unavailable: peer w3 gone");
  EXPECT_EQ(Status::DeadlineExceeded("t").ToString(), "deadline exceeded: t");
  EXPECT_EQ(Status::Corruption("crc").ToString(), "corruption: crc");
  EXPECT_EQ(Status::Unauthenticated("token").ToString(), "unauthenticated: token");
  EXPECT_EQ(Status::Internal("bug").ToString(), "internal: bug");
}

TEST(StatusTest, OkCodeDropsMessage) {
  Status s(StatusCode::kOk, "ignored");
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.message(), "");
}

TEST(StatusTest, WithContextPrefixesAndKeepsCode) {
  Status s = Status::Unavailable("connection reset").WithContext("pull from s1");
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_EQ(s.message(), "pull from s1: connection reset");
  EXPECT_TRUE(Status::Ok().WithContext("x").ok());
}

TEST(StatusTest, Equality) {
  EXPECT_EQ(Status::NotFound("a"), Status::NotFound("a"));
  EXPECT_FALSE(Status::NotFound("a") == Status::NotFound("b"));
  EXPECT_FALSE(Status::NotFound("a") == Status::IoError("a"));
}

Result<int> Half(int x) {
  if (x % 2 != 0) return Status::InvalidArgument(std::to_string(x) + " is odd");
  return x / 2;
}

Result<int> Quarter(int x) {
  PSZERO_ASSIGN_OR_RETURN(int h, Half(x));
  PSZERO_ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

Status CheckEven(int x) {
  PSZERO_RETURN_IF_ERROR(Half(x).status());
  return Status::Ok();
}

TEST(ResultTest, ValueAndError) {
  Result<int> r = Half(8);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 4);
  EXPECT_TRUE(r.status().ok());
  Result<int> e = Half(3);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(e.value_or(-1), -1);
}

TEST(ResultTest, MacrosPropagateTheFirstError) {
  EXPECT_EQ(*Quarter(12), 3);
  Result<int> r = Quarter(6);  // 6 → 3, which is odd
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "3 is odd");
  EXPECT_TRUE(CheckEven(2).ok());
  EXPECT_EQ(CheckEven(5).message(), "5 is odd");
}

TEST(ResultTest, HoldsMoveOnlyValues) {
  Result<std::unique_ptr<int>> r = std::make_unique<int>(7);
  ASSERT_TRUE(r.ok());
  std::unique_ptr<int> p = std::move(r).value();
  EXPECT_EQ(*p, 7);
}

}  // namespace
}  // namespace pszero
