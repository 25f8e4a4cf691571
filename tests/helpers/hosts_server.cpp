// A server for the across-hosts test (tests/test_across_hosts.cpp), started inside a network
// namespace with `ip netns exec`: it listens on HOST port 0 and serves COUNT echo endpoints,
// dag/e0/run ... dag/e<COUNT-1>/run. Prints "port P" once it listens; on SIGTERM or SIGINT it
// shuts down and exits 0.
//
// Usage: hosts_server HOST COUNT
#include <remote_xcomm/endpoint.hpp>
#include <remote_xcomm/loop.hpp>
#include <remote_xcomm/server.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/json/object.hpp>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

namespace {

boost::asio::awaitable<void> echo_forever(rx::Endpoint endpoint) {
  for (;;) {
    boost::json::object payload = co_await endpoint.get();
    co_await endpoint.push(std::move(payload));
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s HOST COUNT\n", argv[0]);
    return 2;
  }
  try {
    boost::asio::io_context context;
    rx::Loop loop(context);
    rx::ServerOptions options;
    options.host = argv[1];
    rx::Server server(loop, options);
    const long count = std::strtol(argv[2], nullptr, 10);
    for (long i = 0; i < count; ++i) {
      if (!server.attach({"dag", std::string("e").append(std::to_string(i)), "run", -1}, echo_forever)) {
        return 1;
      }
    }
    server.start();
    boost::asio::signal_set signals(context, SIGTERM, SIGINT);
    signals.async_wait([&server](const boost::system::error_code& error, int /*signal*/) {
      if (!error) {
        server.shutdown(std::chrono::seconds(0), [](boost::system::error_code /*done*/) {});
      }
    });
    std::printf("port %u\n", static_cast<unsigned>(server.port()));
    std::fflush(stdout);
    context.run();
  } catch (const std::exception& error) {
    std::fprintf(stderr, "hosts_server: %s\n", error.what());
    return 1;
  }
  return 0;
}
