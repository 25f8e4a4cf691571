// A Server on a Unix domain socket (ServerOptions::address), reached with the same string as a
// gRPC target by our Client over both transports and by the generated stub: scheduler and workers
// on one host skip TCP's loopback stack. And the other gRPC target strings a Client takes.
#include "utils/server_fixture.hpp"
#include "utils/wait.hpp"

#include <remote_xcomm/client.hpp>
#include <remote_xcomm/server.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/json/parse.hpp>
#include <gtest/gtest.h>
#include <stdlib.h>  // mkdtemp
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <future>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace json = boost::json;
namespace fs = std::filesystem;
using rx_test::describe;
using rx_test::make_key;

// A directory of this test's own under the system's temporary directory, removed with its files.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "rx-unix-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) {
      throw std::runtime_error("mkdtemp failed: " + std::string(std::strerror(errno)));
    }
    path_ = pattern;
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  [[nodiscard]] const fs::path& path() const noexcept { return path_; }

 private:
  fs::path path_;
};

rx::ServerOptions listening_at(const std::string& address) {
  rx::ServerOptions options;
  options.address = address;
  return options;
}

// Sends `count` requests, each with its own payload, and expects each echoed back to its sender.
void expect_echoes(rx::Client& client, const std::string& target, int count) {
  std::vector<std::future<std::tuple<grpc::Status, json::object>>> sends;
  sends.reserve(static_cast<std::size_t>(count));
  for (int i = 0; i < count; ++i) {
    sends.push_back(client.send(target, make_key("echo"), json::object{{"i", i}},
                                rx::SendOptions{rx_test::DEFAULT_DEADLINE}, asio::use_future));
  }
  for (int i = 0; i < count; ++i) {
    auto [status, reply] = rx_test::wait_for(sends[static_cast<std::size_t>(i)], "an echo over the Unix socket");
    ASSERT_TRUE(status.ok()) << describe(status);
    EXPECT_EQ(reply, (json::object{{"i", i}}));
  }
}

class UnixSocketTest : public rx_test::ServerFixture {
 protected:
  UnixSocketTest() : UnixSocketTest(std::make_unique<TempDir>()) {}

  void SetUp() override {
    ServerFixture::SetUp();
    ASSERT_TRUE(server_.attach(make_key("echo"), rx_test::echo_forever));
  }

  [[nodiscard]] std::string socket_path() const { return (directory_->path() / "rx.sock").string(); }

 private:
  explicit UnixSocketTest(std::unique_ptr<TempDir> directory)
      : ServerFixture(listening_at("unix:" + (directory->path() / "rx.sock").string())),
        directory_(std::move(directory)) {}

  std::unique_ptr<TempDir> directory_;
};

TEST_F(UnixSocketTest, TheTargetIsTheAddressAndThereIsNoPort) {
  EXPECT_EQ(server_.target(), "unix:" + socket_path());
  EXPECT_EQ(server_.port(), 0);
  EXPECT_TRUE(fs::is_socket(socket_path())) << socket_path() << " is not a socket";
}

TEST_F(UnixSocketTest, TheUnaryClientIsAnsweredOverTheSocket) { expect_echoes(client_, server_.target(), 200); }

TEST_F(UnixSocketTest, TheExchangeClientIsAnsweredOverTheSocket) {
  rx::ClientOptions options;
  options.transport = rx::Transport::exchange;
  rx::Client exchange(loop_, options);
  expect_echoes(exchange, server_.target(), 2000);
}

TEST_F(UnixSocketTest, TheGeneratedStubIsAnsweredOverTheSocket) {
  std::string reply;
  const grpc::Status status = rx_test::raw_send(server_.target(), make_key("echo"), R"({"raw":true})", &reply);
  ASSERT_TRUE(status.ok()) << describe(status);
  EXPECT_EQ(boost::json::parse(reply), (json::value(json::object{{"raw", true}})));
}

TEST_F(UnixSocketTest, BadInputOverTheSocketGetsItsStatusAndTheServerServesOn) {
  const grpc::Status status = rx_test::raw_send(server_.target(), make_key("echo"), "{not json");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << describe(status);
  expect_echoes(client_, server_.target(), 3);
}

TEST(UnixSocketListening, AStaleSocketFileIsReplacedAndTheFileIsRemovedAtShutdown) {
  TempDir directory;
  const std::string path = (directory.path() / "stale.sock").string();
  // A socket file left behind by a process that died without removing it.
  {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
    ASSERT_EQ(::bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)), 0) << std::strerror(errno);
    ::close(fd);
  }
  ASSERT_TRUE(fs::is_socket(path));

  asio::io_context context;
  rx::Loop loop(context);
  {
    rx::Server server(loop, listening_at("unix:" + path));
    server.start();
    ASSERT_TRUE(server.attach(make_key("echo"), rx_test::echo_forever));
    rx::Client client(loop);
    auto sent = client.send(server.target(), make_key("echo"), json::object{{"after", "stale"}},
                            rx::SendOptions{rx_test::DEFAULT_DEADLINE}, asio::use_future);
    std::thread runner([&context] { context.run(); });  // until the server has shut down
    auto [status, reply] = rx_test::wait_for(sent, "the send to the server on the replaced socket");
    EXPECT_TRUE(status.ok()) << describe(status);
    EXPECT_EQ(reply, (json::object{{"after", "stale"}}));
    rx_test::wait_for(server.shutdown(std::chrono::seconds(5), asio::use_future), "the shutdown");
    runner.join();
  }
  EXPECT_FALSE(fs::exists(path)) << path << " was left behind after the server shut down";
}

TEST(UnixSocketListening, AnAbstractSocketNeedsNoFile) {
  asio::io_context context;
  rx::Loop loop(context);
  const std::string address = "unix-abstract:rx-test-" + std::to_string(::getpid());
  rx::Server server(loop, listening_at(address));
  server.start();
  ASSERT_TRUE(server.attach(make_key("echo"), rx_test::echo_forever));
  EXPECT_EQ(server.target(), address);
  rx::Client client(loop);
  auto sent = client.send(server.target(), make_key("echo"), json::object{{"abstract", true}},
                          rx::SendOptions{rx_test::DEFAULT_DEADLINE}, asio::use_future);
  std::thread runner([&context] { context.run(); });
  auto [status, reply] = rx_test::wait_for(sent, "the send over the abstract socket");
  EXPECT_TRUE(status.ok()) << describe(status);
  EXPECT_EQ(reply, (json::object{{"abstract", true}}));
  rx_test::wait_for(server.shutdown(std::chrono::seconds(5), asio::use_future), "the shutdown");
  runner.join();
}

TEST(UnixSocketListening, AnAddressThatCannotBeBoundFailsStartWithTheAddressInTheMessage) {
  asio::io_context context;
  rx::Loop loop(context);
  const std::string address = "unix:/nonexistent-directory-of-rx-tests/rx.sock";
  rx::Server server(loop, listening_at(address));
  try {
    server.start();
    FAIL() << "start() succeeded on " << address;
  } catch (const std::runtime_error& error) {
    EXPECT_NE(std::string(error.what()).find(address), std::string::npos) << error.what();
  }
}

TEST(UnixSocketListening, AHostAndPortAddressReportsTheBoundPort) {
  asio::io_context context;
  rx::Loop loop(context);
  rx::Server server(loop, listening_at("127.0.0.1:0"));
  server.start();
  ASSERT_NE(server.port(), 0);
  EXPECT_EQ(server.target(), "127.0.0.1:" + std::to_string(server.port()));
  ASSERT_TRUE(server.attach(make_key("echo"), rx_test::echo_forever));
  rx::Client client(loop);
  auto sent = client.send(server.target(), make_key("echo"), json::object{{"tcp", true}},
                          rx::SendOptions{rx_test::DEFAULT_DEADLINE}, asio::use_future);
  std::thread runner([&context] { context.run(); });
  auto [status, reply] = rx_test::wait_for(sent, "the send over TCP");
  EXPECT_TRUE(status.ok()) << describe(status);
  rx_test::wait_for(server.shutdown(std::chrono::seconds(5), asio::use_future), "the shutdown");
  runner.join();
}

// Targets are gRPC target strings: name resolvers and address schemes work as with any gRPC client.
TEST(TargetStrings, DnsIpv4AndIpv6TargetsReachTheServerOverBothTransports) {
  asio::io_context context;
  rx::Loop loop(context);
  rx::Server v4(loop);
  v4.start();
  rx::Server v6(loop, listening_at("[::1]:0"));
  try {
    v6.start();
  } catch (const std::runtime_error& error) {
    v4.shutdown();
    GTEST_SKIP() << "no IPv6 loopback here: " << error.what();
  }
  ASSERT_TRUE(v4.attach(make_key("echo"), rx_test::echo_forever));
  ASSERT_TRUE(v6.attach(make_key("echo"), rx_test::echo_forever));
  EXPECT_EQ(v6.target(), "[::1]:" + std::to_string(v6.port()));
  std::thread runner([&context] { context.run(); });
  const std::string v4_port = std::to_string(v4.port());
  const std::string v6_port = std::to_string(v6.port());
  for (const rx::Transport transport : {rx::Transport::unary, rx::Transport::exchange}) {
    rx::ClientOptions options;
    options.transport = transport;
    rx::Client client(loop, options);
    for (const std::string& target : {"dns:///127.0.0.1:" + v4_port, "ipv4:127.0.0.1:" + v4_port,
                                      "localhost:" + v4_port, "ipv6:[::1]:" + v6_port, v6.target()}) {
      auto sent = client.send(target, make_key("echo"), json::object{{"to", target}},
                              rx::SendOptions{rx_test::DEFAULT_DEADLINE}, asio::use_future);
      auto [status, reply] = rx_test::wait_for(sent, "a send to " + target);
      EXPECT_TRUE(status.ok()) << target << ": " << describe(status);
      EXPECT_EQ(reply, (json::object{{"to", target}})) << target;
    }
  }
  v4.shutdown();
  v6.shutdown();
  runner.join();
}

}  // namespace
