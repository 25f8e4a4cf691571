// The client: one gRPC channel per target; replies go back to each caller's executor. Each send
// is a unary call made here, or travels on its target's Exchange stream (src/client/).
#include <remote_xcomm/client.hpp>

#include "client/exchange_stream.hpp"
#include "client/reply_decoding.hpp"
#include "client/target_channel.hpp"
#include "client_internal.hpp"
#include "codec.hpp"
#include "grpc_callback_threads.hpp"
#include "tsan_annotations.hpp"

#include <remote_xcomm/v1/remote_xcomm.grpc.pb.h>

#include <boost/asio/any_completion_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/prefer.hpp>

#include <grpc/grpc.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include <atomic>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace rx {
namespace detail {

namespace asio = boost::asio;
using Stub = remote_xcomm::v1::RemoteXComm::Stub;

// Everything one call needs until its reply has been handed to the caller. It is also the loop
// job that completes it, so a reply reaches a Loop's executor without another allocation.
struct SendCall final : LoopJob {
  SendCall(Client::SendHandler h, const LoopExecutor* loop, std::size_t depth)
      : handler(std::move(h)), max_depth(depth) {
    invoke = &invoke_job;
    // Keeps the caller's executor (and so its io_context) from running out of work while the
    // reply is on its way. Released only after the handler has run, as an io_context counts a
    // handler as work until it returns.
    if (loop != nullptr) {
      loop_work.emplace(asio::prefer(*loop, asio::execution::outstanding_work.tracked));
    } else {
      other_work = asio::prefer(asio::get_associated_executor(handler), asio::execution::outstanding_work.tracked);
    }
  }

  // The completion, run on the caller's executor. Takes everything it still needs out of the
  // call and frees it before running the handler, so nothing of the call is touched once user
  // code has run; the tracked work outlives the handler's run.
  static void finish(std::unique_ptr<SendCall> call) {
    Client::SendHandler handler;
    handler.swap(call->handler);  // swap, not move-assign: chriskohlhoff/asio#1180
    // The slot's handler points into the call; it may only be cleared here, on the handler's executor.
    if (handler.get_cancellation_slot().is_connected()) {
      handler.get_cancellation_slot().clear();
    }
    std::optional<LoopExecutor> work_on_loop = std::move(call->loop_work);
    asio::any_completion_executor work_elsewhere = std::move(call->other_work);
    grpc::Status outcome = std::move(call->status);
    boost::json::object result = std::move(call->reply);
    call.reset();
    std::move(handler)(std::move(outcome), std::move(result));
    // work_on_loop / work_elsewhere are released here, still inside the executor's run of this job.
  }

  // The LoopJob: `run` false only frees the call (its io_context is being destroyed).
  static void invoke_job(LoopJob* job, bool run) {
    std::unique_ptr<SendCall> call(static_cast<SendCall*>(job));
    if (run) {
      finish(std::move(call));
    }
  }

  grpc::ClientContext context;
  remote_xcomm::v1::SendRequest request;
  remote_xcomm::v1::SendResponse response;
  Client::SendHandler handler;
  std::size_t max_depth;
  // Exactly one of the two is set: the handler's executor when it is a Loop's, else any other.
  std::optional<LoopExecutor> loop_work;
  asio::any_completion_executor other_work;
  // The outcome, written on the gRPC thread before the completion is handed off.
  grpc::Status status;
  boost::json::object reply;
  // Set by the handler's cancellation slot: a CANCELLED status is then the caller's own.
  std::atomic<bool> caller_cancelled{false};
  // Set while the call waits in this thread's DeferredStarts.
  std::shared_ptr<const TargetChannel> deferred_channel;
  SendCall* next_start = nullptr;
};

// Sends made by completions that a gRPC thread runs on a loop it borrowed: their RPCs are started
// by that thread once the loop's run is over, not inside it. Starting an RPC is most of a send's
// cost; inside the run it spent the borrowed budget (BORROWED_LOOP_BUDGET) in a few completions,
// after which the rest went to the loop's own thread, one wake each time. Outside, the loop stays
// short and both pollers start RPCs, as a raw gRPC client does from its callbacks.
struct DeferredStarts {
  int depth = 0;  // ClientImpl::complete frames on this thread that will start what is queued
  SendCall* first = nullptr;
  SendCall* last = nullptr;
};
thread_local DeferredStarts deferred_starts;  // NOLINT(cppcoreguidelines-avoid-non-const-global-variables)

class ClientImpl {
 public:
  ClientImpl(Loop* loop, std::unique_ptr<Loop> owned, ClientOptions options)
      : owned_loop_(std::move(owned)),
        executor_((loop != nullptr ? loop : owned_loop_.get())->get_executor()),
        options_(std::move(options)),
        exchange_limits_(exchange_limits()) {
    hold_grpc_callback_threads();  // this Client's channels may be freed on gRPC's threads
  }

  ClientImpl(const ClientImpl&) = delete;
  ClientImpl& operator=(const ClientImpl&) = delete;

  ~ClientImpl() {
    if (options_.transport != Transport::exchange) {
      return;
    }
    // Its streams end once their sends have completed; none touches this Client again.
    std::vector<std::shared_ptr<ExchangeSlots>> slots;
    slots.reserve(stubs_.size());
    for (const auto& [target, channel] : stubs_) {
      slots.push_back(channel->exchange);
    }
    close_exchange_streams(executor_, std::move(slots));
  }

  void start_send(std::string_view target, const TaskInstanceKey& key, std::string payload_json,
                  const SendOptions& options, const LoopExecutor* loop, Client::SendHandler handler) {
    send_via(channel_for(target), key, std::move(payload_json), options, loop, std::move(handler));
  }

  // A send to `channel`'s target, by its Client's transport; uses nothing of the Client itself.
  static void send_via(TargetChannel& channel, const TaskInstanceKey& key, std::string payload_json,
                       const SendOptions& options, const LoopExecutor* loop, Client::SendHandler handler) {
    if (channel.transport == Transport::exchange) {
      send_on_exchange(channel.shared_from_this(), key, std::move(payload_json), options, loop, std::move(handler));
      return;
    }
    auto* call = new SendCall(std::move(handler), loop, channel.exchange_limits.max_json_depth);
    to_proto(key, *call->request.mutable_key());
    call->request.set_payload_json(std::move(payload_json));
    if (options.timeout) {
      call->context.set_deadline(std::chrono::system_clock::now() + *options.timeout);
    }
    if (options.wait_for_ready) {
      call->context.set_wait_for_ready(true);
    }

    auto slot = call->handler.get_cancellation_slot();
    if (slot.is_connected()) {
      // Emitted on the caller's executor; the call lives until its completion has cleared the slot there.
      slot.assign([call](asio::cancellation_type /*type*/) {
        call->caller_cancelled.store(true, std::memory_order_relaxed);
        call->context.TryCancel();
      });
    }
    DeferredStarts& starts = deferred_starts;
    if (starts.depth > 0) {
      call->deferred_channel = channel.shared_from_this();
      (starts.last != nullptr ? starts.last->next_start : starts.first) = call;
      starts.last = call;
      return;
    }
    start(call, *channel.stub);
  }

  // The channel behind Client::connect(target).
  std::shared_ptr<TargetChannel> connect(std::string_view target) { return channel_for(target).shared_from_this(); }

  [[nodiscard]] const LoopExecutor& executor() const noexcept { return executor_; }

 private:
  static void start(SendCall* call, Stub& stub) {
    // The callback uses nothing of the Client: a Client destroyed with calls in flight is fine.
    handed_to_grpc(call);
    stub.async()->Send(&call->context, &call->request, &call->response,
                       [call](grpc::Status status) { complete(call, std::move(status)); });
  }

  friend void start_sends_deferred_on_this_thread();

  // Starts the calls deferred on this thread, in the order they were sent. Touches only the
  // calls and the channels they hold, never a Client, a loop or an io_context.
  static void start_deferred(DeferredStarts& starts) {
    while (SendCall* call = starts.first) {
      starts.first = call->next_start;
      if (starts.first == nullptr) {
        starts.last = nullptr;
      }
      call->next_start = nullptr;
      const std::shared_ptr<const TargetChannel> channel = std::move(call->deferred_channel);
      start(call, *channel->stub);  // the call may be complete and freed once this returns
    }
  }

  // Runs on a gRPC thread. Decodes the reply there, off the loop, then hands it to the caller.
  static void complete(SendCall* raw_call, grpc::Status status) {
    back_from_grpc(raw_call);
    std::unique_ptr<SendCall> call(raw_call);
    call->status = std::move(status);
    if (call->status.ok()) {
      decode_reply(*call);
    } else if (call->status.error_code() == grpc::StatusCode::CANCELLED &&
               !call->caller_cancelled.load(std::memory_order_relaxed)) {
      // Not the caller's doing: gRPC cut the call short on the server's side (a server shutting
      // down cancels the calls it has not answered), which for the caller is a server gone away,
      // as on the Exchange transport.
      call->status = grpc::Status(
          grpc::StatusCode::UNAVAILABLE,
          "the server cancelled the call before replying (it may be shutting down): " + call->status.error_message());
    }
    // The call is the job and owns everything the completion uses. Nothing here is touched once
    // the completion may have run user code: no executor copy lives in this frame.
    if (call->loop_work) {
      const LoopExecutor& loop = *call->loop_work;  // read by hand_off_job before it runs anything
      // Sends from the completions this thread runs now are started after the run (see
      // DeferredStarts); this thread's own memory is all that is touched after user code.
      DeferredStarts& starts = deferred_starts;
      struct StartAfterRun {
        DeferredStarts& starts;
        explicit StartAfterRun(DeferredStarts& s) noexcept : starts(s) { ++starts.depth; }
        StartAfterRun(const StartAfterRun&) = delete;
        StartAfterRun& operator=(const StartAfterRun&) = delete;
        ~StartAfterRun() {
          if (--starts.depth == 0) {
            start_deferred(starts);
          }
        }
      } start_after_run(starts);
      hand_off_job(loop, call.release());
    } else {
      // An untracked copy outlives the call that execute() may free inline; destroying it
      // touches no execution context.
      const asio::any_completion_executor executor =
          asio::prefer(call->other_work, asio::execution::outstanding_work.untracked);
      executor.execute([call = std::move(call)]() mutable { SendCall::finish(std::move(call)); });
    }
  }

  // Parses the reply into `call.reply`, or fails the call with INTERNAL.
  static void decode_reply(SendCall& call) {
    grpc::Status decoded = decode_reply_json(call.response.reply_json(), call.max_depth, call.reply);
    if (!decoded.ok()) {
      call.status = std::move(decoded);
    }
  }

  // Lock-free for a send to the same target as the last new channel's or the last lookup's (one
  // server per Client is the common case); other targets take the mutex.
  TargetChannel& channel_for(std::string_view target) {
    if (TargetChannel* last = last_.load(std::memory_order_acquire); last != nullptr && last->target == target) {
      return *last;
    }
    const std::lock_guard lock(stubs_mutex_);
    auto it = stubs_.find(target);
    if (it == stubs_.end()) {
      auto channel =
          std::make_shared<TargetChannel>(std::string(target), options_.transport, executor_, exchange_limits_);
      channel->stub = remote_xcomm::v1::RemoteXComm::NewStub(
          grpc::CreateCustomChannel(channel->target, grpc::InsecureChannelCredentials(), channel_arguments()));
      it = stubs_.emplace(channel->target, std::move(channel)).first;
    }
    last_.store(it->second.get(), std::memory_order_release);
    return *it->second;
  }

  // The user's channel arguments, plus the message limits unless the user set them.
  [[nodiscard]] grpc::ChannelArguments channel_arguments() const {
    grpc::ChannelArguments arguments = options_.channel_arguments;
    const grpc_channel_args given = options_.channel_arguments.c_channel_args();
    auto has = [&given](const char* key) {
      for (std::size_t i = 0; i < given.num_args; ++i) {
        if (std::strcmp(given.args[i].key, key) == 0) {
          return true;
        }
      }
      return false;
    };
    if (!has(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH)) {
      arguments.SetMaxReceiveMessageSize(options_.max_message_bytes);
    }
    if (!has(GRPC_ARG_MAX_SEND_MESSAGE_LENGTH)) {
      arguments.SetMaxSendMessageSize(options_.max_message_bytes);
    }
    return arguments;
  }

  // The Exchange streams' message limit: what gRPC lets this Client send (a channel argument
  // overrides ClientOptions::max_message_bytes; a negative one means no limit).
  [[nodiscard]] ExchangeLimits exchange_limits() const {
    ExchangeLimits limits;
    limits.max_json_depth = options_.max_json_depth;
    int send_limit = options_.max_message_bytes;
    const grpc_channel_args given = options_.channel_arguments.c_channel_args();
    for (std::size_t i = 0; i < given.num_args; ++i) {
      if (std::strcmp(given.args[i].key, GRPC_ARG_MAX_SEND_MESSAGE_LENGTH) == 0 &&
          given.args[i].type == GRPC_ARG_INTEGER) {
        send_limit = given.args[i].value.integer;
      }
    }
    limits.max_message_bytes = send_limit < 0 ? std::numeric_limits<int>::max() : static_cast<std::size_t>(send_limit);
    return limits;
  }

  struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view text) const noexcept { return std::hash<std::string_view>{}(text); }
  };

  std::unique_ptr<Loop> owned_loop_;
  LoopExecutor executor_;
  ClientOptions options_;
  ExchangeLimits exchange_limits_;
  std::atomic<TargetChannel*> last_{nullptr};
  std::mutex stubs_mutex_;
  std::unordered_map<std::string, std::shared_ptr<TargetChannel>, StringHash, std::equal_to<>> stubs_;
};

void start_sends_deferred_on_this_thread() { ClientImpl::start_deferred(deferred_starts); }

}  // namespace detail

Client::Client(Loop& loop, ClientOptions options)
    : impl_(std::make_unique<detail::ClientImpl>(&loop, nullptr, std::move(options))), executor_(impl_->executor()) {}

Client::Client(boost::asio::io_context& context, ClientOptions options)
    : impl_(std::make_unique<detail::ClientImpl>(nullptr, std::make_unique<Loop>(context), std::move(options))),
      executor_(impl_->executor()) {}

Client::~Client() = default;

Client::executor_type Client::get_executor() const noexcept { return executor_; }

Connection Client::connect(std::string_view target) { return {impl_->connect(target), executor_}; }

Connection::Connection(std::shared_ptr<detail::TargetChannel> channel, LoopExecutor executor) noexcept
    : channel_(std::move(channel)), executor_(std::move(executor)) {}

const std::string& Connection::target() const noexcept { return channel_->target; }

std::string Connection::encode_payload(const boost::json::object& payload) { return detail::serialize_json(payload); }

void Connection::start_send(const TaskInstanceKey& key, std::string payload_json, const SendOptions& options,
                            const LoopExecutor* loop, detail::SendHandler handler) const {
  detail::ClientImpl::send_via(*channel_, key, std::move(payload_json), options, loop, std::move(handler));
}

std::string Client::encode_payload(const boost::json::object& payload) { return detail::serialize_json(payload); }

void Client::start_send(std::string_view target, const TaskInstanceKey& key, std::string payload_json,
                        const SendOptions& options, const LoopExecutor* loop, SendHandler handler) {
  impl_->start_send(target, key, std::move(payload_json), options, loop, std::move(handler));
}

}  // namespace rx
