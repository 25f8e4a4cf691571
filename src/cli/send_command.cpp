// rxcomm send: one JSON payload to one endpoint; the reply JSON on stdout.
#include "commands.hpp"

#include <remote_xcomm/client.hpp>

#include <boost/asio/use_future.hpp>
#include <boost/json/serialize.hpp>

#include <iostream>
#include <memory>
#include <string>

namespace rxcomm {

namespace {

struct SendCommandOptions {
  TargetOptions target;
  KeyOptions key;
  std::string data;
  std::string file;
  bool exchange = false;
};

int run_send(const SendCommandOptions& options) {
  std::string text = "{}";
  if (!options.file.empty()) {
    text = read_json_source(options.file == "-" ? options.file : "@" + options.file);
  } else if (!options.data.empty()) {
    text = read_json_source(options.data);
  }
  const boost::json::object payload = parse_object(text, "the payload");

  LoopThread thread;  // before the client: destroyed after it
  rx::ClientOptions client_options = options.target.client_options();
  client_options.transport = options.exchange ? rx::Transport::exchange : rx::Transport::unary;
  rx::Client client(thread.loop(), std::move(client_options));
  rx::SendOptions send_options;
  send_options.timeout = options.target.timeout();
  send_options.wait_for_ready = options.target.wait_for_ready;
  auto [status, reply] =
      client.send(options.target.target, options.key.key(), payload, send_options, boost::asio::use_future).get();
  if (!status.ok()) {
    return report_status(status);
  }
  std::cout << boost::json::serialize(reply) << std::endl;
  return EXIT_OK;
}

}  // namespace

Command add_send_command(CLI::App& app) {
  auto options = std::make_shared<SendCommandOptions>();
  CLI::App* send = app.add_subcommand("send", "send a JSON object to an endpoint and print its reply");
  send->footer(
      "Examples:\n"
      "  rxcomm send -t 127.0.0.1:8081 --task echo-0 '{\"greeting\": \"hello\"}'\n"
      "  rxcomm send -t 127.0.0.1:8081 --task echo-0 @payload.json\n"
      "  echo '{\"n\": 1}' | rxcomm send -t unix:/tmp/rx.sock --task echo-0 -");
  options->target.add_to(*send);
  options->key.add_to(*send, true);
  send->add_option("json", options->data,
                   "the payload: a JSON object, @FILE to read it from FILE, or - to read stdin (default: {})");
  send->add_option("-f,--file", options->file, "read the payload from this file (- for stdin)")
      ->excludes(send->get_option("json"));
  send->add_flag("--exchange", options->exchange, "send over an Exchange stream instead of a unary Send call");
  return {send, [options] { return run_send(*options); }};
}

}  // namespace rxcomm
