// Sends one dict to a task instance and prints the reply, as the prototype's test/client.py did:
//   ./client --url 127.0.0.1 --port 8081
#include <remote_xcomm/remote_xcomm.hpp>

#include <CLI/CLI.hpp>
#include <boost/json/serialize.hpp>

#include <iostream>
#include <string>

int main(int argc, char** argv) {
  CLI::App app{"Remote XComm example: send one payload to a task instance"};
  std::string url = "127.0.0.1";
  std::uint16_t port = 8081;
  int count = 1;
  app.add_option("-u,--url", url, "host of the task instance's server");
  app.add_option("-p,--port", port, "port of the task instance's server");
  app.add_option("-n,--count", count, "how many payloads to send, one after another")->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);

  for (int i = 0; i < count; ++i) {
    const boost::json::object data{
        {"dag_id", "example_dag"},
        {"task_id", "hello_task"},
        {"run_id", "manual__2026-11-29"},
        {"map_index", -1},
        {"xcoms", {{"greeting", "hello from the scheduler"}, {"attempt", i}}},
    };
    try {
      const boost::json::object response = rx::requests(url, port, data);  // HERE!
      std::cout << boost::json::serialize(response) << std::endl;
    } catch (const std::exception& error) {
      std::cerr << "request failed: " << error.what() << std::endl;
      return 1;
    }
  }
  return 0;
}
