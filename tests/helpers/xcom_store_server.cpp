// A server whose XComs go to an SQLite store, for the durability test (tests/test_xcom_durable.cpp):
// it serves endpoints dag/t0/run ... dag/t7/run, whose task records each request's "n" as the XCom
// "n<n>" and then replies {"n": n}. Prints "port P" once it listens and serves until it is killed.
//
// Usage: xcom_store_server DATABASE [PORT]   (PORT: 0, the default, picks a free one; a restarted
// server takes the port its predecessor printed, so that its clients' channels find it again)
#include <remote_xcomm/endpoint.hpp>
#include <remote_xcomm/loop.hpp>
#include <remote_xcomm/server.hpp>
#include <remote_xcomm/xcom.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/json/object.hpp>

#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>

namespace {

boost::asio::awaitable<void> record_and_reply(rx::Endpoint endpoint) {
  for (;;) {
    boost::json::object payload = co_await endpoint.get();
    const std::int64_t n = payload.at("n").as_int64();
    co_await endpoint.xcom_push("n" + std::to_string(n), boost::json::value(n));
    boost::json::object reply{{"n", n}};
    co_await endpoint.push(std::move(reply));
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2 && argc != 3) {
    std::fprintf(stderr, "usage: %s DATABASE [PORT]\n", argv[0]);
    return 2;
  }
  try {
    boost::asio::io_context context;
    rx::Loop loop(context);
    rx::ServerOptions options;
    options.xcom_store = rx::open_sqlite_store(argv[1]);
    if (argc == 3) {
      options.port = static_cast<std::uint16_t>(std::stoul(argv[2]));
    }
    rx::Server server(loop, options);
    // try_number 1: a restarted server resumes the attempt its predecessor served, keeping the
    // XComs the store kept (without it, each endpoint's first use would start a new attempt and
    // clear them; docs/xcoms.md, "Attempts").
    rx::AttachOptions resume;
    resume.try_number = 1;
    for (int i = 0; i < 8; ++i) {
      if (!server.attach({"dag", "t" + std::to_string(i), "run", -1}, record_and_reply, resume)) {
        return 1;
      }
    }
    server.start();
    std::printf("port %u\n", static_cast<unsigned>(server.port()));
    std::fflush(stdout);
    context.run();
  } catch (const std::exception& error) {
    std::fprintf(stderr, "xcom_store_server: %s\n", error.what());
    return 1;
  }
  return 0;
}
