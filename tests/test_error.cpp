// rx::errc and its error category.
#include <remote_xcomm/error.hpp>

#include <gtest/gtest.h>

#include <set>
#include <string>

namespace {

constexpr rx::errc ALL_ERRORS[] = {
    rx::errc::no_request_held, rx::errc::get_already_pending, rx::errc::endpoint_closed, rx::errc::request_cancelled,
    rx::errc::reply_not_json,  rx::errc::reply_too_large,     rx::errc::no_more_results, rx::errc::already_waiting};

TEST(ErrorCategory, IsNamedRemoteXcomm) { EXPECT_STREQ(rx::error_category().name(), "remote_xcomm"); }

TEST(ErrorCategory, IsOneObject) { EXPECT_EQ(&rx::error_category(), &rx::error_category()); }

TEST(ErrorCategory, GivesEveryErrorItsOwnMessage) {
  std::set<std::string> messages;
  for (const rx::errc e : ALL_ERRORS) {
    const std::string message = rx::make_error_code(e).message();
    EXPECT_FALSE(message.empty());
    EXPECT_NE(message, "unknown remote_xcomm error");
    messages.insert(message);
  }
  EXPECT_EQ(messages.size(), std::size(ALL_ERRORS));
}

TEST(ErrorCategory, MessagesSayWhatHappened) {
  EXPECT_NE(rx::make_error_code(rx::errc::no_request_held).message().find("push()"), std::string::npos);
  EXPECT_NE(rx::make_error_code(rx::errc::get_already_pending).message().find("get()"), std::string::npos);
  EXPECT_NE(rx::make_error_code(rx::errc::endpoint_closed).message().find("detached"), std::string::npos);
  EXPECT_NE(rx::make_error_code(rx::errc::request_cancelled).message().find("cancelled"), std::string::npos);
}

TEST(ErrorCategory, NamesValuesOutsideTheEnumUnknown) {
  EXPECT_EQ(rx::error_category().message(0), "unknown remote_xcomm error");
  EXPECT_EQ(rx::error_category().message(99), "unknown remote_xcomm error");
}

TEST(ErrorCode, ConvertsImplicitlyFromTheEnum) {
  const boost::system::error_code ec = rx::errc::endpoint_closed;
  EXPECT_TRUE(ec);
  EXPECT_EQ(ec, rx::errc::endpoint_closed);
  EXPECT_NE(ec, rx::errc::no_request_held);
  EXPECT_EQ(&ec.category(), &rx::error_category());
  EXPECT_EQ(ec.value(), static_cast<int>(rx::errc::endpoint_closed));
}

TEST(ErrorCode, NoEnumValueIsSuccess) {
  for (const rx::errc e : ALL_ERRORS) {
    EXPECT_TRUE(rx::make_error_code(e).failed());
  }
}

}  // namespace
