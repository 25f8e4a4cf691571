// Embedding Remote XComm in an application's own executors (docs/cpp-guide.md walks through it):
// the application owns the io_context and the thread that runs it, and an asio::thread_pool for
// CPU work. A Server and a Client share one Loop over that io_context. A task offloads its work to
// the pool and comes back to the loop to reply; the scheduler side makes the same send with each
// kind of completion token: a coroutine, a plain callback, a future, and a callback that runs on
// the thread pool. Prints one line per send; exits 0 when every reply was right, 1 otherwise.
//
//   ./embedding
#include <remote_xcomm/remote_xcomm.hpp>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/json/serialize.hpp>

#include <cstdint>
#include <cstdio>
#include <future>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>

namespace asio = boost::asio;

namespace {

/// CPU work that must not run on the loop (FNV-1a over the text, many rounds).
std::uint64_t checksum(std::string_view text) {
  std::uint64_t hash = 14695981039346656037ULL;
  for (int round = 0; round < 10'000; ++round) {
    for (const char c : text) {
      hash = (hash ^ static_cast<unsigned char>(c)) * 1099511628211ULL;
    }
  }
  return hash;
}

/// checksum() as a coroutine, for co_spawn onto the pool (its parameter lives in its frame).
asio::awaitable<std::uint64_t> checksum_on_pool(std::string text) { co_return checksum(text); }

/// The task: one request per invocation. The checksum runs on the pool; `co_await` brings the
/// coroutine back to the loop, where the reply is pushed.
asio::awaitable<void> checksum_task(rx::Endpoint rx, asio::thread_pool& pool) {
  const boost::json::object payload = co_await rx.get();
  const boost::json::value* text = payload.if_contains("text");
  boost::json::object outputs;
  if (text == nullptr || !text->is_string()) {
    outputs["error"] = "expected {\"text\": string}";
  } else {
    const std::uint64_t sum =
        co_await asio::co_spawn(pool, checksum_on_pool(std::string(text->get_string())), asio::use_awaitable);
    outputs["checksum"] = sum;
  }
  co_await rx.push(std::move(outputs));
}

boost::json::object request_for(std::string_view text) {
  boost::json::object payload;
  payload["text"] = text;
  return payload;
}

/// True (and prints a line) when the send succeeded with the checksum of `text`.
bool check(const char* how, std::string_view text, const grpc::Status& status, const boost::json::object& reply) {
  const boost::json::value* sum = reply.if_contains("checksum");
  // JSON has one number type: a checksum below 2^63 reads back as a signed integer.
  boost::system::error_code not_a_number;
  const bool ok =
      status.ok() && sum != nullptr && sum->to_number<std::uint64_t>(not_a_number) == checksum(text) && !not_a_number;
  std::printf("%-24s %s: %s\n", how, ok ? "ok" : "FAILED",
              status.ok() ? boost::json::serialize(reply).c_str() : status.error_message().c_str());
  return ok;
}

}  // namespace

int main() {
  asio::io_context ioc;       // the application's; declared first, so destroyed last
  asio::thread_pool pool(2);  // the application's CPU workers
  rx::Loop loop(ioc);         // the one loop that the endpoints, tasks and client completions share
  const rx::TaskInstanceKey key{"embedding_dag", "checksum", "run-1", -1};

  rx::Server server(loop);  // 127.0.0.1, a free port
  const bool attached = server.attach(key, [&pool](rx::Endpoint rx) { return checksum_task(std::move(rx), pool); });
  if (!attached) {
    return 1;
  }
  server.start();
  const std::string target = server.target();

  bool all_ok = true;
  {
    rx::Client client(loop);
    // The application's thread runs the io_context: loop work, and anything else posted to it.
    auto work = asio::make_work_guard(ioc);
    std::thread application_thread([&ioc] { ioc.run(); });

    // 1. A coroutine on the loop, with the default token (`co_await` needs no token).
    std::future<bool> coroutine = asio::co_spawn(
        loop.get_executor(),
        [&]() -> asio::awaitable<bool> {
          const auto [status, reply] = co_await client.send(target, key, request_for("coroutine"));
          co_return check("coroutine", "coroutine", status, reply);
        },
        asio::use_future);

    // 2. A plain callback: it runs on the Client's loop, like any loop work (never block in it).
    std::promise<bool> callback_done;
    client.send(target, key, request_for("callback"), [&callback_done](grpc::Status status, boost::json::object reply) {
      callback_done.set_value(check("callback on the loop", "callback", status, reply));
    });

    // 3. A future, for a thread outside the loop that may block (here, main).
    std::future<std::tuple<grpc::Status, boost::json::object>> future =
        client.send(target, key, request_for("future"), asio::use_future);

    // 4. A callback bound to the thread pool: it runs there, off the loop, and may do heavy work.
    std::promise<bool> pool_done;
    client.send(target, key, request_for("pool"),
                asio::bind_executor(pool, [&pool_done, &pool](grpc::Status status, boost::json::object reply) {
                  const bool on_pool = pool.get_executor().running_in_this_thread();
                  pool_done.set_value(check("callback on the pool", "pool", status, reply) && on_pool);
                }));

    all_ok = coroutine.get() && all_ok;
    all_ok = callback_done.get_future().get() && all_ok;
    const auto [status, reply] = future.get();
    all_ok = check("future", "future", status, reply) && all_ok;
    all_ok = pool_done.get_future().get() && all_ok;

    server.shutdown();  // blocking form, from a thread outside the loop
    work.reset();
    ioc.stop();
    application_thread.join();
  }
  pool.join();
  return all_ok ? 0 : 1;
}
