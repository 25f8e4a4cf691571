// A program of a user of the installed package: it includes only public headers, starts an
// rx::Server with one endpoint on a free loopback port and sends it one request with
// rx::requests. Exits 0 only if the reply is the one the endpoint pushed.
#include <remote_xcomm/remote_xcomm.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include <exception>
#include <iostream>
#include <string>
#include <thread>

namespace asio = boost::asio;

int main() {
  asio::io_context ioc;
  rx::Loop loop(ioc);
  rx::Server server(loop);
  const rx::TaskInstanceKey key{"consumer_dag", "consumer_task", "manual__package", -1};
  const bool attached = server.attach(key, [](rx::Endpoint endpoint) -> asio::awaitable<void> {
    auto payloads = co_await endpoint.get();
    boost::json::object outputs;
    outputs["echo"] = payloads;
    outputs["from"] = "consumer";
    co_await endpoint.push(std::move(outputs));
  });
  if (!attached) {
    std::cerr << "consumer: attach failed\n";
    return 1;
  }
  server.start();
  std::thread runner([&ioc] { ioc.run(); });

  int status = 1;
  try {
    boost::json::object data{
        {"dag_id", "consumer_dag"}, {"task_id", "consumer_task"}, {"run_id", "manual__package"}, {"map_index", -1}};
    boost::json::object xcoms;
    xcoms["greeting"] = "hello";
    data["xcoms"] = std::move(xcoms);
    const boost::json::object reply = rx::requests("127.0.0.1", server.port(), data);
    std::cout << "consumer: reply " << boost::json::serialize(reply) << '\n';
    // The endpoint got the request's payloads (xcoms included) and its reply came back whole.
    const auto* from = reply.if_contains("from");
    const auto* echo = reply.if_contains("echo");
    const auto* sent = echo != nullptr && echo->is_object() ? echo->as_object().if_contains("xcoms") : nullptr;
    if (from != nullptr && *from == "consumer" && sent != nullptr && *sent == data.at("xcoms")) {
      status = 0;
    } else {
      std::cerr << "consumer: unexpected reply\n";
    }
  } catch (const std::exception& error) {
    std::cerr << "consumer: request failed: " << error.what() << '\n';
  }
  server.shutdown();
  ioc.stop();
  runner.join();
  if (status == 0) {
    std::cout << "consumer: OK\n";
  }
  return status;
}
