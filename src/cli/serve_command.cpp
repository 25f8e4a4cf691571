// rxcomm serve: hosts demo endpoints on one server until SIGINT or SIGTERM.
//   echo-I   replies with the payload it got, and records the XCom "served" (requests so far)
//   sleep-I  waits --sleep-ms on a loop timer (the loop stays free), then replies
//   fail-I   fails every request with --fail-code and --fail-message
#include "commands.hpp"

#include <remote_xcomm/endpoint.hpp>
#include <remote_xcomm/request.hpp>
#include <remote_xcomm/server.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <exception>
#include <future>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>

namespace rxcomm {

namespace asio = boost::asio;

namespace {

struct ServeOptions {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  std::string address;
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;
  std::string scheduler_token;
  std::string dag_id = "rxcomm";
  std::string run_id = "demo";
  int map_index = -1;
  int echo_endpoints = 1;
  int sleep_endpoints = 0;
  int fail_endpoints = 0;
  int sleep_ms = 100;
  std::string fail_code = "Internal";
  std::string fail_message = "this endpoint fails every request (rxcomm serve --fail-endpoints)";
  bool fail_throw = false;
  double grace_seconds = 5;
};

asio::awaitable<void> echo_task(rx::Endpoint endpoint) {
  std::int64_t served = 0;
  for (;;) {
    boost::json::object payload = co_await endpoint.get();
    ++served;
    co_await endpoint.xcom_push("served", boost::json::value(served));
    co_await endpoint.push(std::move(payload));  // recorded as the XCom return_value too
  }
}

asio::awaitable<void> sleep_task(rx::Endpoint endpoint, std::chrono::milliseconds sleep) {
  for (;;) {
    rx::Request request = co_await endpoint.next();
    asio::steady_timer timer(co_await asio::this_coro::executor, sleep);
    // A caller that gives up (deadline, Ctrl-C) ends the sleep early: nobody waits for it.
    co_await timer.async_wait(
        asio::bind_cancellation_slot(request.cancellation_slot(), asio::as_tuple(asio::use_awaitable)));
    if (request.cancelled()) {
      continue;
    }
    boost::json::object reply;
    reply["slept_ms"] = sleep.count();
    reply["payload"] = std::move(request.payload());
    // The caller may give up between the timer and the reply: not this task's error.
    co_await request.reply(std::move(reply), asio::as_tuple(asio::use_awaitable));
  }
}

asio::awaitable<void> fail_task(rx::Endpoint endpoint, grpc::StatusCode code, std::string message) {
  for (;;) {
    rx::Request request = co_await endpoint.next();
    request.fail(grpc::Status(code, message));
  }
}

// The other way a task fails: an exception escapes while it holds a request, which the server
// answers with Internal and the exception's text; the endpoint runs the task again for the next.
asio::awaitable<void> throw_task(rx::Endpoint endpoint, std::string message) {
  co_await endpoint.get();
  throw std::runtime_error(message);
}

std::string join_names(const std::string& prefix, int count) {
  std::string names;
  for (int i = 0; i < count && i < 3; ++i) {
    names.append(names.empty() ? "" : ", ").append(prefix).append(std::to_string(i));
  }
  if (count > 3) {
    names.append(", ... ").append(prefix).append(std::to_string(count - 1));
  }
  return names;
}

int run_serve(const ServeOptions& options) {
  const auto fail_code = parse_code(options.fail_code);
  if (!fail_code || *fail_code == grpc::StatusCode::OK) {
    throw LocalError("--fail-code: not an error status code: " + options.fail_code);
  }

  rx::ServerOptions server_options;
  server_options.host = options.host;
  server_options.port = options.port;
  server_options.address = options.address;
  server_options.scheduler_token = options.scheduler_token;
  if (!options.tls_cert.empty() || !options.tls_key.empty() || !options.tls_client_ca.empty()) {
    if (options.tls_cert.empty() || options.tls_key.empty()) {
      throw LocalError("--tls-cert and --tls-key go together (and --tls-client-ca needs them)");
    }
    try {
      server_options.tls.emplace();
      server_options.tls->certificate_chain = rx::read_pem_file(options.tls_cert);
      server_options.tls->private_key = rx::read_pem_file(options.tls_key);
      if (!options.tls_client_ca.empty()) {
        server_options.tls->client_ca = rx::read_pem_file(options.tls_client_ca);
      }
    } catch (const std::runtime_error& error) {
      throw LocalError(error.what());
    }
  }
  server_options.on_task_error = [](const rx::TaskInstanceKey& key, const std::exception_ptr& error) {
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& thrown) {
      std::cerr << "rxcomm serve: task " << rx::to_string(key) << " failed: " << thrown.what() << std::endl;
    } catch (...) {
      std::cerr << "rxcomm serve: task " << rx::to_string(key) << " failed" << std::endl;
    }
  };

  LoopThread thread;  // before the server: destroyed after it
  rx::Server server(thread.loop(), server_options);
  auto attach = [&](const std::string& prefix, int count, const rx::Server::Task& task) {
    for (int i = 0; i < count; ++i) {
      rx::TaskInstanceKey key{options.dag_id, prefix + std::to_string(i), options.run_id, options.map_index};
      if (!server.attach(key, task)) {
        throw LocalError("cannot attach " + rx::to_string(key));
      }
    }
  };
  attach("echo-", options.echo_endpoints, echo_task);
  const std::chrono::milliseconds sleep(options.sleep_ms);
  attach("sleep-", options.sleep_endpoints, [sleep](rx::Endpoint endpoint) { return sleep_task(endpoint, sleep); });
  if (options.fail_throw) {
    attach("fail-", options.fail_endpoints,
           [message = options.fail_message](rx::Endpoint endpoint) { return throw_task(endpoint, message); });
  } else {
    attach("fail-", options.fail_endpoints, [code = *fail_code, message = options.fail_message](rx::Endpoint endpoint) {
      return fail_task(endpoint, code, message);
    });
  }

  // Listening for the signals before the address is printed: a script may signal at once.
  std::promise<int> signalled;
  asio::signal_set signals(thread.context(), SIGINT, SIGTERM);
  signals.async_wait([&signalled](const boost::system::error_code& error, int signal_number) {
    signalled.set_value(error ? 0 : signal_number);
  });

  try {
    server.start();
  } catch (const std::runtime_error& error) {
    throw LocalError(error.what());
  }
  // stdout carries exactly one line, the target, for scripts; the rest goes to stderr.
  std::cout << server.target() << std::endl;
  std::cerr << "rxcomm serve: " << server.endpoint_count() << " endpoints of " << options.dag_id << "/"
            << options.run_id << " on " << server.target();
  for (const auto& [prefix, count] : {std::pair<std::string, int>{"echo-", options.echo_endpoints},
                                      {"sleep-", options.sleep_endpoints},
                                      {"fail-", options.fail_endpoints}}) {
    if (count > 0) {
      std::cerr << "; " << join_names(prefix, count);
    }
  }
  std::cerr << "; Ctrl-C stops" << std::endl;

  const int signal_number = signalled.get_future().get();
  std::cerr << "rxcomm serve: " << (signal_number == SIGINT ? "SIGINT" : "SIGTERM") << ", shutting down" << std::endl;
  // Graceful: requests already taken may finish within the grace period; new ones get Unavailable.
  const auto grace = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(options.grace_seconds));
  std::promise<void> shut_down;
  server.shutdown(grace, [&shut_down](const boost::system::error_code& /*error: cancelled, shut down all the same*/) {
    shut_down.set_value();
  });
  shut_down.get_future().wait();
  return EXIT_OK;
}

}  // namespace

Command add_serve_command(CLI::App& app) {
  auto options = std::make_shared<ServeOptions>();
  CLI::App* serve = app.add_subcommand("serve", "host demo endpoints (echo, sleep, fail) until SIGINT or SIGTERM");
  serve->footer(
      "Prints the server's target (e.g. 127.0.0.1:41235) as the one line on stdout once it listens. Endpoints are "
      "DAG/TASK/RUN with TASK echo-0.., sleep-0.., fail-0..: echo replies with the payload and records the XCom "
      "\"served\"; sleep replies {\"slept_ms\", \"payload\"} after --sleep-ms; fail fails with --fail-code.");
  serve->add_option("--host", options->host, "address to listen on")->capture_default_str();
  serve->add_option("-p,--port", options->port, "port to listen on; 0 picks a free one")->capture_default_str();
  serve->add_option("--address", options->address,
                    "a gRPC listening address replacing --host/--port: unix:/path/to.sock, unix-abstract:name");
  serve->add_option("--tls-cert", options->tls_cert, "PEM file of the server's certificate chain: serve TLS");
  serve->add_option("--tls-key", options->tls_key, "PEM file of the key of --tls-cert");
  serve->add_option("--tls-client-ca", options->tls_client_ca,
                    "PEM file of the CAs client certificates must chain to: mutual TLS");
  serve
      ->add_option("--scheduler-token", options->scheduler_token,
                   "require 'authorization: Bearer TOKEN' on every call (default: $RXCOMM_SCHEDULER_TOKEN; "
                   "docs/security.md)")
      ->envname("RXCOMM_SCHEDULER_TOKEN");
  serve->add_option("--dag", options->dag_id, "the endpoints' dag_id")->capture_default_str();
  serve->add_option("--run", options->run_id, "the endpoints' run_id")->capture_default_str();
  serve->add_option("--map-index", options->map_index, "the endpoints' map_index")
      ->capture_default_str()
      ->check(CLI::Range(-1, std::numeric_limits<int>::max()));
  serve->add_option("-n,--endpoints", options->echo_endpoints, "echo endpoints: echo-0 .. echo-(N-1)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  serve->add_option("--sleep-endpoints", options->sleep_endpoints, "sleep endpoints: sleep-0 ..")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  serve->add_option("--fail-endpoints", options->fail_endpoints, "failing endpoints: fail-0 ..")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  serve->add_option("--sleep-ms", options->sleep_ms, "how long a sleep endpoint works on each request")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  serve
      ->add_option("--fail-code", options->fail_code,
                   "the status fail endpoints answer: a name (NotFound, NOT_FOUND) or a number")
      ->capture_default_str();
  serve->add_option("--fail-message", options->fail_message, "the status message fail endpoints answer");
  serve->add_flag("--fail-throw", options->fail_throw,
                  "fail endpoints throw --fail-message from the task instead (the caller gets Internal)");
  serve
      ->add_option("--grace", options->grace_seconds,
                   "seconds that requests under way may take to finish once a signal came")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  return {serve, [options] { return run_serve(*options); }};
}

}  // namespace rxcomm
