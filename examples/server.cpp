// Serves one task instance, as the prototype's test/server.py did:
//   ./server --port 8081
// Each request runs DummyTaskInstance::run_raw_task, which gets the scheduler's payloads,
// works briefly without blocking the loop, and pushes its XCom back. Stop it with Ctrl-C.
#include <remote_xcomm/remote_xcomm.hpp>

#include <CLI/CLI.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/uuid/random_generator.hpp>
#include <boost/uuid/uuid_io.hpp>

#include <chrono>
#include <string>

namespace asio = boost::asio;

struct DummyTaskInstance {
  std::string dag_id = "example_dag";
  std::string task_id = "hello_task";
  std::string run_id = "manual__2026-11-29";
  int map_index = -1;

  asio::awaitable<void> run_raw_task(rx::Endpoint rx) {
    const boost::json::object payloads = co_await rx.get();  // the scheduler's annotations and xcoms
    // No printing here: a task runs on the loop, often on one of gRPC's threads, and writing to a
    // terminal or pipe can block it. Log through something asynchronous if you must.

    // "Work" briefly: a timer suspends this coroutine and leaves the loop free for other requests.
    asio::steady_timer work(co_await asio::this_coro::executor, std::chrono::milliseconds(20));
    co_await work.async_wait(asio::use_awaitable);

    boost::json::object outputs{{"output", boost::uuids::to_string(boost::uuids::random_generator()())},
                                {"output_key", "hello_world"}};
    co_await rx.push(std::move(outputs));
  }
};

int main(int argc, char** argv) {
  CLI::App app{"Remote XComm example: serve one task instance until interrupted"};
  std::uint16_t port = 8081;
  app.add_option("-p,--port", port, "port to listen on (0 picks a free one)");
  CLI11_PARSE(app, argc, argv);

  DummyTaskInstance ti;
  rx::connect_ti_function(port, ti, &DummyTaskInstance::run_raw_task);  // HERE!
  return 0;
}
