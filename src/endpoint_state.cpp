// The endpoint queue: arrival-ordered requests, one held request, and the task's invocations.
#include <remote_xcomm/detail/endpoint_state.hpp>
#include <remote_xcomm/endpoint.hpp>
#include <remote_xcomm/error.hpp>

#include "codec.hpp"
#include "off_loop_worker.hpp"
#include "xcom/xcom_table.hpp"

#include <boost/asio/append.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json/serialize.hpp>
#include <boost/system/system_error.hpp>

#include <algorithm>
#include <string>
#include <utility>
#include <variant>

namespace rx::detail {
namespace {

namespace asio = boost::asio;
using boost::system::error_code;

std::string describe(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "an exception not derived from std::exception";
  }
}

// True for an error from get() or push() that the caller of the request concerned already has
// as its status (or that only says the task was cancelled): a task letting it escape is the
// plain way to end, not an error to report.
bool caller_has_heard(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const boost::system::system_error& e) {
    const boost::system::error_code code = e.code();
    return code == asio::error::operation_aborted || code == errc::request_cancelled || code == errc::reply_not_json ||
           code == errc::reply_too_large || code == errc::endpoint_closed;
  } catch (...) {
    return false;
  }
}

// The JSON text of `outputs`, or an empty string when out of memory (a JSON text is never empty).
std::string encode_or_empty(const boost::json::object& outputs) noexcept {
  try {
    return serialize_json(outputs);
  } catch (...) {
    return {};
  }
}

}  // namespace

class EndpointState::InvocationEnd {
 public:
  using cancellation_slot_type = asio::cancellation_slot;

  InvocationEnd(std::shared_ptr<EndpointState> self, asio::cancellation_slot slot) noexcept
      : self_(std::move(self)), slot_(slot) {}

  [[nodiscard]] cancellation_slot_type get_cancellation_slot() const noexcept { return slot_; }

  void operator()(const std::exception_ptr& error) { self_->on_invocation_end(error); }

 private:
  std::shared_ptr<EndpointState> self_;
  asio::cancellation_slot slot_;
};

// One push (a reply, or an XCom) waiting for its turn. A large value is encoded by the io_context's
// OffLoopWorker; the loop learns of it through this object, queued as a loop job (it allocates
// nothing on the way back, so that coming back cannot fail).
struct EndpointState::Encoding final : LoopJob {
  Encoding() noexcept { invoke = &EndpointState::invoke_encoded; }

  // Set on the loop before the hand-over; the worker reads these only.
  boost::json::value value;      // the reply's outputs (an object), or the XCom's value
  std::string key;               // the XCom's key; empty for a reply
  bool copy_for_record = false;  // a reply recorded as return_value: a copy of the text for the record
  bool copy_for_store = false;   // a durable store: a copy of the text for it
  bool large = false;
  // The loop's.
  PendingReplyPtr reply;  // the request a reply answers
  PushHandler handler;
  std::weak_ptr<EndpointState> endpoint;
  std::shared_ptr<Encoding> keep_alive;  // while queued as a loop job
  std::optional<LoopExecutor> work;      // tracked: the io_context runs until it is back
  bool ready = false;
  // Written by the encoder (the worker, or the loop inline), read on the loop once `ready`.
  bool finite = true;
  bool out_of_memory = false;
  std::string json;
  std::string record_copy;
  std::string store_copy;

  // False if `stop` was set meanwhile (the io_context is being destroyed): nothing was made.
  bool encode(const std::atomic<bool>& stop) noexcept {
    if (!all_numbers_finite(value)) {
      finite = false;
      return true;
    }
    try {
      std::optional<std::string> text = serialize_json_unless(value, stop);
      if (!text) {
        return false;
      }
      json = std::move(*text);
      if (copy_for_record) {
        record_copy = json;
      }
      if (copy_for_store) {
        store_copy = json;
      }
    } catch (...) {
      out_of_memory = true;
      json = std::string();
      record_copy = std::string();
      store_copy = std::string();
    }
    return true;
  }
};

EndpointState::EndpointState(LoopExecutor executor, TaskInstanceKey key, Task task,
                             std::shared_ptr<const TaskErrorHook> on_task_error, std::size_t max_queued)
    : executor_(std::move(executor)),
      key_(std::move(key)),
      task_(std::move(task)),
      on_task_error_(std::move(on_task_error)),
      max_queued_(static_cast<std::uint32_t>(std::min<std::size_t>(max_queued, NO_BOUND))) {
  deferred_.invoke = &DeferredCompletion::invoke_deferred;
}

EndpointState::~EndpointState() {
  // Destroyed with work outstanding only if the loop itself is being torn down; fail what is
  // left so no caller waits forever.
  if (!closed_) {
    try {
      close(grpc::Status(grpc::StatusCode::UNAVAILABLE, "endpoint " + to_string(key_) + " was destroyed"));
    } catch (...) {  // out of memory for the message: the requests still fail, without one
      close(grpc::Status(grpc::StatusCode::UNAVAILABLE, {}));
    }
  }
}

// ---- completions -------------------------------------------------------------------------

template <typename Handler>
bool EndpointState::can_complete_without_allocation(const Handler& handler) const {
  // The coroutine must belong to this loop (so resuming it here is resuming it on its executor)
  // and the one deferred slot must be free; otherwise the generic path is taken.
  if (deferred_.busy()) {
    return false;
  }
  const auto executor = handler.get_executor();
  const auto* loop = executor.template target<LoopExecutor>();
  return loop != nullptr && same_loop(*loop, executor_) && executor_.running_in_this_thread();
}

void EndpointState::complete_later(GetHandler&& handler, error_code error, boost::json::object payload) {
  asio::post(executor_, asio::append(std::move(handler), error, std::move(payload)));
}

void EndpointState::complete_later(AwaitableGetHandler&& handler, error_code error, boost::json::object payload) {
  deferred_.handler.emplace<AwaitableGetHandler>(std::move(handler));
  deferred_.error = error;
  deferred_.payload = std::move(payload);
  deferred_.keep_alive = shared_from_this();
  post_job(executor_, &deferred_);
}

void EndpointState::complete_later(PushHandler&& handler, error_code error) {
  asio::post(executor_, asio::append(std::move(handler), error));
}

void EndpointState::complete_later(AwaitablePushHandler&& handler, error_code error) {
  deferred_.handler.emplace<AwaitablePushHandler>(std::move(handler));
  deferred_.error = error;
  deferred_.keep_alive = shared_from_this();
  post_job(executor_, &deferred_);
}

void EndpointState::complete_later(NextHandler&& handler, error_code error, Request request) {
  asio::post(executor_, asio::append(std::move(handler), error, std::move(request)));
}

void EndpointState::DeferredCompletion::invoke_deferred(LoopJob* job, bool run) {
  auto* self = static_cast<DeferredCompletion*>(job);
  const std::shared_ptr<EndpointState> keep_alive = std::move(self->keep_alive);
  // Move the handler out first: resuming the coroutine may queue the next deferred completion.
  if (auto* const get = std::get_if<AwaitableGetHandler>(&self->handler)) {
    AwaitableGetHandler handler(std::move(*get));
    self->handler.emplace<std::monostate>();
    if (run) {
      std::move(handler)(self->error, std::move(self->payload));
    }
  } else if (auto* const push = std::get_if<AwaitablePushHandler>(&self->handler)) {
    AwaitablePushHandler handler(std::move(*push));
    self->handler.emplace<std::monostate>();
    if (run) {
      std::move(handler)(self->error);
    }
  }
}

template <typename Handler>
void EndpointState::wait_type_erased(Handler&& handler) {
  auto slot = handler.get_cancellation_slot();
  if (slot.is_connected()) {
    // Runs on the loop (Asio requires cancellation to be emitted on the handler's executor). It
    // must not clear its own slot; the slot may outlive this endpoint, hence the weak reference.
    slot.assign([weak = weak_from_this()](asio::cancellation_type /*type*/) {
      const auto self = weak.lock();
      Handler* const waiter = self ? std::get_if<Handler>(&self->waiter_) : nullptr;
      if (waiter == nullptr) {
        return;
      }
      Handler cancelled;
      cancelled.swap(*waiter);
      self->waiter_.emplace<std::monostate>();
      self->complete_later(std::move(cancelled), asio::error::operation_aborted, {});
    });
  }
  waiter_.emplace<Handler>().swap(handler);  // never move-assign any_completion_handler (asio#1180)
}

void EndpointState::wait(GetHandler&& handler) { wait_type_erased(std::move(handler)); }

void EndpointState::wait(NextHandler&& handler) { wait_type_erased(std::move(handler)); }

void EndpointState::wait(AwaitableGetHandler&& handler) {
  auto slot = handler.get_cancellation_slot();
  if (slot.is_connected()) {
    // The coroutine's slot is cleared when the coroutine resumes, and the coroutine keeps this
    // endpoint alive through its rx::Endpoint, so `this` is safe here.
    slot.assign([this](asio::cancellation_type /*type*/) {
      auto* const waiter = std::get_if<AwaitableGetHandler>(&waiter_);
      if (waiter == nullptr) {
        return;
      }
      AwaitableGetHandler cancelled(std::move(*waiter));
      waiter_.emplace<std::monostate>();
      if (deferred_.busy()) {
        complete_later(GetHandler(std::move(cancelled)), asio::error::operation_aborted, {});
      } else {
        complete_later(std::move(cancelled), asio::error::operation_aborted, {});
      }
    });
  }
  waiter_.emplace<AwaitableGetHandler>(std::move(handler));
}

void EndpointState::complete_waiter(error_code error, boost::json::object&& payload) {
  if (auto* const waiter = std::get_if<AwaitableGetHandler>(&waiter_)) {
    // Checked when it started waiting: this coroutine lives on this loop, which this thread is
    // running, so resuming it here is resuming it on its own executor.
    AwaitableGetHandler handler(std::move(*waiter));
    waiter_.emplace<std::monostate>();
    handler.get_cancellation_slot().clear();
    std::move(handler)(error, std::move(payload));
    return;
  }
  GetHandler handler;
  handler.swap(std::get<GetHandler>(waiter_));
  waiter_.emplace<std::monostate>();
  handler.get_cancellation_slot().clear();
  // Runs inline when the handler's executor is this loop, which is the common case.
  asio::dispatch(asio::append(std::move(handler), error, std::move(payload)));
}

// ---- the queue ---------------------------------------------------------------------------

void EndpointState::deliver(PendingReplyPtr reply, boost::json::object&& payload) {
  if (reply->finished()) {
    return;
  }
  if (closed_) {
    reply->fail(*close_status_);
    return;
  }
  if (reply->cancelled()) {  // the caller gave up before the request reached the loop
    reply->fail(grpc::Status(grpc::StatusCode::CANCELLED, "the caller cancelled the call or its deadline passed"));
    return;
  }
  if (waiting() && queue_.empty() && !encoding()) {
    hand_to_waiter(std::move(reply), std::move(payload));
    return;
  }
  // The bound counts requests that wait. One that starts an idle task (with a task, no invocation
  // running means an empty queue) does not: the invocation is spawned inline, and a task that
  // begins with get() or next() takes the request before this returns, as if it had been waiting
  // for it. Counting it would make a bound of 0 refuse every request to a one-request-per-run task.
  if (queue_.size() >= max_queued_ && max_queued_ != NO_BOUND && (!task_ || invocation_running_)) {
    refuse_queue_full(*reply);
    return;
  }
  enqueue(std::move(reply), std::move(payload));
  if (task_ && !invocation_running_) {
    start_invocation();
  }
}

void EndpointState::enqueue(PendingReplyPtr&& reply, boost::json::object&& payload) {
  PendingReply* const request = reply.get();
  queue_.push_back({std::move(reply), std::move(payload)});
  request->enter_queue(this);
}

void EndpointState::refuse_queue_full(PendingReply& reply) const {
  // Refused here rather than queued: under overload the queue would otherwise grow without bound,
  // and the caller learns at once that it should back off, instead of when its deadline passes.
  reply.fail(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          "endpoint " + to_string(key_) + " has " + std::to_string(max_queued_) +
                              " requests waiting, the server's limit (ServerOptions::max_queued_requests)"));
}

void EndpointState::remove(PendingReply& request) noexcept {
  // The caller gave up: free its payload now, not at its turn. Cancellations are rare and
  // queues short; a linear search keeps the queue a plain arrival-ordered array.
  for (auto it = queue_.begin(); it != queue_.end(); ++it) {
    if (it->reply.get() == &request) {
      queue_.erase(it);
      return;
    }
  }
}

bool EndpointState::pop_live(QueuedRequest& out) {
  while (!queue_.empty()) {
    QueuedRequest front = std::move(queue_.front());
    queue_.pop_front();
    front.reply->leave_queue();
    if (front.reply->finished()) {
      continue;
    }
    if (front.reply->cancelled()) {  // the caller gave up while it waited: never hand it to the task
      front.reply->fail(
          grpc::Status(grpc::StatusCode::CANCELLED, "the caller cancelled the call or its deadline passed"));
      continue;
    }
    out = std::move(front);
    return true;
  }
  release_queue_storage();
  return false;
}

void EndpointState::release_queue_storage() noexcept {
  // An idle endpoint holds no queue storage. Not on the hot path: a request that finds its task
  // waiting is handed over without entering the queue.
  if (queue_.empty() && queue_.capacity() != 0) {
    boost::container::devector<QueuedRequest>().swap(queue_);
  }
}

void EndpointState::hand_to_waiter(PendingReplyPtr&& reply, boost::json::object&& payload) {
  took_request_in_invocation_ = true;
  record_running();
  if (auto* const waiter = std::get_if<NextHandler>(&waiter_)) {
    NextHandler handler;
    handler.swap(*waiter);
    waiter_.emplace<std::monostate>();
    handler.get_cancellation_slot().clear();
    Request request(std::move(reply), std::move(payload), shared_from_this());
    // Runs inline when the handler's executor is this loop, which is the common case.
    asio::dispatch(asio::append(std::move(handler), error_code(), std::move(request)));
    return;
  }
  held_ = std::move(reply);
  complete_waiter({}, std::move(payload));
}

template <typename Handler>
void EndpointState::start_get_with(Handler&& handler) {  // always an rvalue
  static_assert(!std::is_reference_v<Handler>);
  if (closed_) {
    complete_later(std::move(handler), errc::endpoint_closed, {});
    return;
  }
  if (waiting()) {
    complete_later(std::move(handler), errc::get_already_pending, {});
    return;
  }
  if (held_) {
    const std::string message = "task of endpoint " + to_string(key_) + " called get() again before push()";
    held_->fail(grpc::Status(grpc::StatusCode::INTERNAL, message));
    held_.reset();
    record_failure(message);
  }
  if (encoding()) {
    // A large push is on its way: the next request waits for it (resume_after_encodings).
  } else if (!queue_.empty()) {  // checked first: a task keeping up with its requests finds it empty
    QueuedRequest request;
    if (pop_live(request)) {
      held_ = std::move(request.reply);
      took_request_in_invocation_ = true;
      record_running();
      complete_later(std::move(handler), {}, std::move(request.payload));
      return;
    }
  } else {
    release_queue_storage();  // a burst drained by the previous get leaves no storage behind
  }
  wait(std::move(handler));
}

void EndpointState::start_get(GetHandler handler) { start_get_with(std::move(handler)); }

void EndpointState::start_get(AwaitableGetHandler&& handler) {
  if (can_complete_without_allocation(handler)) {
    start_get_with(std::move(handler));
  } else {
    start_get_with(GetHandler(std::move(handler)));
  }
}

void EndpointState::start_next(NextHandler handler) {
  if (closed_) {
    complete_later(std::move(handler), errc::endpoint_closed, {});
    return;
  }
  if (waiting()) {
    complete_later(std::move(handler), errc::get_already_pending, {});
    return;
  }
  if (held_) {
    const std::string message = "task of endpoint " + to_string(key_) + " called next() before push()";
    held_->fail(grpc::Status(grpc::StatusCode::INTERNAL, message));
    held_.reset();
    record_failure(message);
  }
  QueuedRequest request;
  if (!encoding() && pop_live(request)) {  // else the next request waits for the pushes on their way
    took_request_in_invocation_ = true;
    record_running();
    complete_later(std::move(handler), {},
                   Request(std::move(request.reply), std::move(request.payload), shared_from_this()));
    return;
  }
  wait(std::move(handler));
}

template <typename Handler>
void EndpointState::start_push_with(boost::json::object&& outputs, Handler&& handler) {  // always an rvalue
  static_assert(!std::is_reference_v<Handler>);
  if (closed_) {
    complete_later(std::move(handler), errc::endpoint_closed);
  } else if (!held_) {
    complete_later(std::move(handler), errc::no_request_held);
  } else {
    answer_with(std::move(held_), std::move(outputs), std::move(handler));
  }
}

void EndpointState::answer(PendingReplyPtr reply, boost::json::object&& outputs, PushHandler handler) {
  if (closed_) {
    reply->fail(*close_status_);
    complete_later(std::move(handler), errc::endpoint_closed);
    return;
  }
  answer_with(std::move(reply), std::move(outputs), std::move(handler));
}

template <typename Handler>
void EndpointState::answer_with(PendingReplyPtr&& reply, boost::json::object&& outputs, Handler&& handler) {
  static_assert(!std::is_reference_v<Handler>);
  PendingReplyPtr held = std::move(reply);
  // Bounded by the threshold, not the value: checks the numbers of a small value on the way.
  const ValueSize size = classify(outputs, OFF_LOOP_BYTES);
  if (size == ValueSize::not_finite) {
    const std::string message = "the task pushed a reply holding NaN or infinity, which JSON cannot carry";
    held->fail(grpc::Status(grpc::StatusCode::INTERNAL, message));
    record_failure(message);
    complete_later(std::move(handler), errc::reply_not_json);
    return;
  }
  if (size == ValueSize::large || encoding()) {
    // Off the hot path: the handler is type-erased here.
    auto pending = std::make_shared<Encoding>();
    pending->value = boost::json::value(std::move(outputs));
    pending->copy_for_record = xcoms_ != nullptr;
    pending->copy_for_store = xcoms_ != nullptr && xcoms_->durable();
    pending->reply = std::move(held);
    PushHandler erased(std::move(handler));
    pending->handler.swap(erased);  // never move-assign any_completion_handler (asio#1180)
    enqueue_encoding(pending, size == ValueSize::large);
    return;
  }
  std::string json = encode_or_empty(outputs);  // no temporary: this is the hot path
  if (json.empty()) {
    // A task's push must never leave the request unfinished, nor throw out of its initiation.
    held->fail(grpc::Status(grpc::StatusCode::INTERNAL, "the server could not encode the task's reply"));
    complete_later(std::move(handler), make_error_code(boost::system::errc::not_enough_memory));
    return;
  }
  if (!xcoms_ || !xcoms_->durable()) {                     // send_answer's first case, inline: the hot path
    std::string recorded = xcoms_ ? json : std::string();  // the record keeps its own copy
    const error_code result = held->reply(outputs, std::move(json));
    if (xcoms_) {
      record_answer(result, std::move(recorded), *held);
    }
    complete_later(std::move(handler), result);
    return;
  }
  send_answer(std::move(held), outputs, nullptr, std::move(json), {}, {}, std::move(handler));
}

template <typename Handler>
void EndpointState::send_answer(PendingReplyPtr&& held, const boost::json::object& outputs,
                                std::shared_ptr<const Encoding> owner, std::string&& json, std::string&& record_copy,
                                std::string&& store_copy, Handler&& handler) {
  static_assert(!std::is_reference_v<Handler>);
  if (!xcoms_ || !xcoms_->durable()) {
    // The record keeps its own copy.
    std::string recorded = !xcoms_ ? std::string() : record_copy.empty() ? json : std::move(record_copy);
    const error_code result = held->reply(outputs, std::move(json));
    if (xcoms_) {
      record_answer(result, std::move(recorded), *held);
    }
    complete_later(std::move(handler), result);
    return;
  }
  // A durable store: the caller hears only once the return value is committed, so that a reply
  // it got is pullable after a crash. Off the hot path: the handler is type-erased here.
  struct Answer {
    PendingReplyPtr reply;
    std::shared_ptr<const Encoding> owner;  // keeps *outputs alive; null: own_outputs is a copy
    boost::json::object own_outputs;
    std::string json;
    PushHandler handler;
  };
  auto pending = std::make_shared<Answer>(
      Answer{held, owner, owner ? boost::json::object() : outputs, std::string(), PushHandler(std::move(handler))});
  std::string recorded = record_copy.empty() ? json : std::move(record_copy);
  pending->json = std::move(json);
  const boost::json::object* const answer_outputs = owner ? &outputs : &pending->own_outputs;
  const error_code put_error = xcoms_->put(
      *xcom_record(), return_value_key, std::move(recorded),
      [self = shared_from_this(), pending, answer_outputs](error_code store_error) {
        error_code result;
        if (self->closed_) {
          pending->reply->fail(*self->close_status_);
          result = errc::endpoint_closed;
        } else {
          result = pending->reply->reply(*answer_outputs, std::move(pending->json));
          self->record_answer(result, {}, *pending->reply);
        }
        self->complete_later(std::move(pending->handler), result        ? result
                                                          : store_error ? error_code(errc::xcom_store_failed)
                                                                        : error_code());
      },
      std::move(store_copy));
  if (put_error) {  // not recorded (the XComs are at their limit): the reply goes out all the same
    const error_code result = pending->reply->reply(*answer_outputs, std::move(pending->json));
    record_answer(result, {}, *pending->reply);
    complete_later(std::move(pending->handler), result);
  }
}

// ---- pushes encoded off the loop -----------------------------------------------------------

void EndpointState::enqueue_encoding(const EncodingPtr& encoding, bool large) {
  if (!encodings_) {
    encodings_ = std::make_unique<std::deque<EncodingPtr>>();
  }
  encodings_->push_back(encoding);
  encoding->large = large;
  if (!large) {
    // Behind a large one: encoded now (it is cheap), sent and recorded in its turn.
    static const std::atomic<bool> never{false};
    (void)encoding->encode(never);
    encoding->ready = true;
    return;
  }
  encoding->endpoint = weak_from_this();
  encoding->work.emplace(asio::prefer(executor_, asio::execution::outstanding_work.tracked));
  try {
    OffLoopWorker& worker = OffLoopWorker::of(executor_);
    worker.run([encoding, loop = executor_, stop = &worker.stopping()]() mutable {
      if (!encoding->encode(*stop)) {
        return;  // the io_context is being destroyed
      }
      // Back to the loop without allocating: the encoding is its own job.
      Encoding* const job = encoding.get();
      job->keep_alive = std::move(encoding);
      post_job(loop, job);
    });
  } catch (...) {
    // No worker (no thread or no memory for one): encoded here, late rather than never. Its turn
    // comes at once when nothing is ahead of it, from a job of its own (this is an initiation).
    static const std::atomic<bool> never{false};
    (void)encoding->encode(never);
    encoding->keep_alive = encoding;
    post_job(executor_, encoding.get());
  }
}

void EndpointState::invoke_encoded(LoopJob* job, bool run) {
  auto* const encoding = static_cast<Encoding*>(job);
  EncodingPtr keep_alive = std::move(encoding->keep_alive);
  const std::optional<LoopExecutor> work = std::move(encoding->work);  // released last
  const std::shared_ptr<EndpointState> self = run ? encoding->endpoint.lock() : nullptr;
  if (self) {
    encoding->ready = true;
    keep_alive.reset();  // the queue holds it, unless the endpoint closed meanwhile
    self->drain_encodings();
  }
}

void EndpointState::drain_encodings() {
  while (!closed_ && encodings_ && !encodings_->empty() && encodings_->front()->ready) {
    EncodingPtr front = std::move(encodings_->front());
    encodings_->pop_front();
    finish_encoding(front);
    if (front->large && front.use_count() == 1) {
      // Freeing a 64 MiB value takes the loop about 10 ms here: the worker frees it.
      try {
        OffLoopWorker::of(executor_).run([done = std::move(front)] {});
      } catch (...) {  // no memory to queue it: freed here
      }
    }
  }
  if (!closed_ && encodings_ && encodings_->empty()) {
    encodings_.reset();
    resume_after_encodings();
  }
}

void EndpointState::finish_encoding(const EncodingPtr& pointer) {
  Encoding& encoding = *pointer;
  if (encoding.key.empty()) {  // a reply
    if (!encoding.finite) {
      const std::string message = "the task pushed a reply holding NaN or infinity, which JSON cannot carry";
      encoding.reply->fail(grpc::Status(grpc::StatusCode::INTERNAL, message));
      record_failure(message);
      complete_later(std::move(encoding.handler), errc::reply_not_json);
      return;
    }
    if (encoding.out_of_memory) {
      encoding.reply->fail(grpc::Status(grpc::StatusCode::INTERNAL, "the server could not encode the task's reply"));
      complete_later(std::move(encoding.handler), make_error_code(boost::system::errc::not_enough_memory));
      return;
    }
    send_answer(std::move(encoding.reply), encoding.value.get_object(), pointer, std::move(encoding.json),
                std::move(encoding.record_copy), std::move(encoding.store_copy), std::move(encoding.handler));
    return;
  }
  if (!encoding.finite) {
    complete_later(std::move(encoding.handler), errc::invalid_xcom);
    return;
  }
  if (encoding.out_of_memory) {
    complete_later(std::move(encoding.handler), make_error_code(boost::system::errc::not_enough_memory));
    return;
  }
  record_xcom(encoding.key, std::move(encoding.json), std::move(encoding.store_copy), std::move(encoding.handler));
}

void EndpointState::resume_after_encodings() {
  // The task asked for a request while the pushes were on their way: it gets the oldest now.
  if (closed_ || !waiting() || queue_.empty()) {
    return;
  }
  QueuedRequest request;
  if (pop_live(request)) {
    hand_to_waiter(std::move(request.reply), std::move(request.payload));
  }
}

void EndpointState::record_answer(error_code result, std::string&& json, const PendingReply& reply) {
  if (!xcoms_ || closed_) {
    return;
  }
  TaskRecord& record = *xcom_record();
  if (result && result != errc::request_cancelled) {
    // Too large for the transport: the caller got RESOURCE_EXHAUSTED, the task failed.
    xcoms_->set_state(record, TaskState::failed, "the task's reply is over the server's message limit");
    return;
  }
  // A reply whose caller gave up is kept all the same: it stays pullable (docs/xcoms.md).
  if (!json.empty()) {
    (void)xcoms_->put(record, return_value_key, std::move(json), {});  // over the limit: not recorded
  }
  (void)reply;
  xcoms_->set_state(record, TaskState::success);
}

void EndpointState::record_failure(const std::string& message) {
  if (xcoms_ && !closed_) {
    xcoms_->set_state(*xcom_record(), TaskState::failed, message);
  }
}

void EndpointState::record_running() {
  if (xcoms_ && !closed_) {
    xcoms_->set_state(*xcom_record(), TaskState::running);
  }
}

void EndpointState::bind_xcoms(std::shared_ptr<XComTable> table, TaskRecord* record, std::uint32_t attempt) noexcept {
  xcoms_ = std::move(table);
  xcom_record_ = record;
  attempt_ = attempt;
}

TaskRecord* EndpointState::xcom_record() {
  if (xcoms_ && xcom_record_ == nullptr) {
    xcom_record_ = &xcoms_->make_record(key_, attempt_);
  }
  return xcom_record_;
}

void EndpointState::start_xcom_push(std::string key, boost::json::value&& value, PushHandler handler) {
  if (closed_ || !xcoms_) {
    complete_later(std::move(handler), errc::endpoint_closed);
    return;
  }
  if (key.empty()) {
    complete_later(std::move(handler), errc::invalid_xcom);
    return;
  }
  const ValueSize size = classify(value, OFF_LOOP_BYTES);
  if (size == ValueSize::not_finite) {
    complete_later(std::move(handler), errc::invalid_xcom);
    return;
  }
  if (size == ValueSize::large || encoding()) {
    auto pending = std::make_shared<Encoding>();
    pending->value = std::move(value);
    pending->key = std::move(key);
    pending->copy_for_store = xcoms_->durable();
    pending->handler.swap(handler);  // never move-assign any_completion_handler (asio#1180)
    enqueue_encoding(pending, size == ValueSize::large);
    return;
  }
  record_xcom(key, boost::json::serialize(value), {}, std::move(handler));
}

void EndpointState::record_xcom(std::string_view key, std::string&& json, std::string&& store_copy,
                                PushHandler&& handler) {
  if (!xcoms_->durable()) {
    complete_later(std::move(handler), xcoms_->put(*xcom_record(), key, std::move(json), {}));
    return;
  }
  auto waiting = std::make_shared<PushHandler>();
  waiting->swap(handler);  // never move-assign any_completion_handler (asio#1180)
  const error_code error = xcoms_->put(
      *xcom_record(), key, std::move(json),
      [self = shared_from_this(), waiting](error_code store_error) {
        self->complete_later(std::move(*waiting), store_error ? error_code(errc::xcom_store_failed) : error_code());
      },
      std::move(store_copy));
  if (error) {
    complete_later(std::move(*waiting), error);
  }
}

namespace {

// A task's pull that waits for its XComs: registered with the table until they come, its timeout
// passes, it is cancelled or the server shuts down. Completes exactly once, posted to the loop.
class LocalPull final : public XComWaiter, public std::enable_shared_from_this<LocalPull> {
 public:
  LocalPull(XComQuery query, std::shared_ptr<EndpointState> endpoint, std::shared_ptr<XComTable> table,
            EndpointState::PullHandler handler)
      : XComWaiter(std::move(query)),
        endpoint_(std::move(endpoint)),
        table_(std::move(table)),
        timer_(endpoint_->executor()) {
    handler_.swap(handler);
  }
  ~LocalPull() override { table_->cancel_wait(*this); }

  void start() {
    auto slot = handler_.get_cancellation_slot();
    if (slot.is_connected()) {
      slot.assign([weak = weak_from_this()](asio::cancellation_type /*type*/) {
        if (const auto self = weak.lock()) {
          self->finish(asio::error::operation_aborted, {});
        }
      });
    }
    if (const auto timeout = query().timeout) {
      timer_.expires_after(*timeout);
      timer_.async_wait([weak = weak_from_this()](error_code error) {
        const auto self = weak.lock();
        if (!error && self) {
          self->finish(errc::xcom_wait_timed_out, {});
        }
      });
    }
    keep_alive_ = shared_from_this();  // until it completes: the table holds a plain pointer
    table_->wait(*this);
  }

  void on_ready(std::vector<XCom> xcoms) override { finish({}, std::move(xcoms)); }
  void on_closed(const grpc::Status& /*status*/) override { finish(errc::endpoint_closed, {}); }

 private:
  void finish(error_code error, std::vector<XCom> xcoms) {
    if (!handler_) {
      return;
    }
    table_->cancel_wait(*this);
    timer_.cancel();
    handler_.get_cancellation_slot().clear();
    EndpointState::PullHandler handler;
    handler.swap(handler_);
    asio::post(endpoint_->executor(), asio::append(std::move(handler), error, std::move(xcoms)));
    keep_alive_.reset();  // last: may destroy this
  }

  std::shared_ptr<EndpointState> endpoint_;
  std::shared_ptr<XComTable> table_;
  asio::steady_timer timer_;
  EndpointState::PullHandler handler_;
  std::shared_ptr<LocalPull> keep_alive_;
};

}  // namespace

void EndpointState::start_xcom_pull(XComQuery query, PullHandler handler) {
  if (closed_ || !xcoms_ || xcoms_->closed()) {
    asio::post(executor_, asio::append(std::move(handler), error_code(errc::endpoint_closed), std::vector<XCom>()));
    return;
  }
  // Airflow's defaults: the pulling task's own DAG run.
  if (query.dag_id.empty()) {
    query.dag_id = key_.dag_id;
  }
  if (query.run_id.empty()) {
    query.run_id = key_.run_id;
  }
  if (!XComTable::check(query).ok()) {
    asio::post(executor_, asio::append(std::move(handler), error_code(errc::invalid_xcom), std::vector<XCom>()));
    return;
  }
  bool satisfied = false;
  std::vector<XCom> found = xcoms_->find(query, satisfied);
  if (satisfied || !query.wait) {
    const error_code error = found.empty() ? error_code(errc::xcom_not_found) : error_code();
    asio::post(executor_, asio::append(std::move(handler), error, std::move(found)));
    return;
  }
  std::make_shared<LocalPull>(std::move(query), shared_from_this(), xcoms_, std::move(handler))->start();
}

void EndpointState::start_push(boost::json::object&& outputs, PushHandler handler) {
  start_push_with(std::move(outputs), std::move(handler));
}

void EndpointState::start_push(boost::json::object&& outputs, AwaitablePushHandler&& handler) {
  if (can_complete_without_allocation(handler)) {
    start_push_with(std::move(outputs), std::move(handler));
  } else {
    start_push_with(std::move(outputs), PushHandler(std::move(handler)));
  }
}

// ---- invocations -------------------------------------------------------------------------

void EndpointState::start_invocation() {
  invocation_running_ = true;
  took_request_in_invocation_ = false;
  boost::asio::awaitable<void> invocation;
  try {
    invocation = task_(Endpoint(shared_from_this()));
  } catch (...) {
    // The task function threw before it returned a coroutine. End the invocation from the queue,
    // not from here: ending it may invoke the task again, and this must not recurse.
    asio::post(executor_,
               [self = shared_from_this(), error = std::current_exception()] { self->on_invocation_end(error); });
    return;
  }
  asio::co_spawn(executor_, std::move(invocation), InvocationEnd(shared_from_this(), invocation_cancel_.slot()));
}

void EndpointState::on_invocation_end(const std::exception_ptr& error) {
  invocation_running_ = false;
  bool caller_told = false;  // whether a caller's status carries `error`
  if (held_) {
    const std::string message = error ? "task of endpoint " + to_string(key_) + " threw: " + describe(error)
                                      : "task of endpoint " + to_string(key_) + " ended without pushing a reply";
    held_->fail(grpc::Status(grpc::StatusCode::INTERNAL, message));
    held_.reset();
    record_failure(message);
    caller_told = true;
  } else if (!took_request_in_invocation_ && !closed_) {
    // The task ended without taking a request: fail the oldest so the endpoint always advances.
    QueuedRequest request;
    if (pop_live(request)) {
      const std::string message =
          error ? "task of endpoint " + to_string(key_) + " threw before get(): " + describe(error)
                : "task of endpoint " + to_string(key_) + " ended without calling get()";
      request.reply->fail(grpc::Status(grpc::StatusCode::INTERNAL, message));
      record_failure(message);
      caller_told = true;
    }
  }
  // After close, an exception is how a cancelled task ends (its co_await threw): not an error.
  if (error && !caller_told && !closed_ && !caller_has_heard(error)) {
    report_task_error(error);
  }
  if (!closed_ && !queue_.empty()) {
    start_invocation();
  } else {
    release_queue_storage();
  }
}

void EndpointState::report_task_error(const std::exception_ptr& error) {
  // Nobody else would hear of it (the last push had gone out): the server's hook, or else the
  // io_context's run(), as Asio surfaces a handler's exception. Posted, never thrown here: this
  // may run on a gRPC thread that borrowed the loop.
  if (on_task_error_ && *on_task_error_) {
    try {
      (*on_task_error_)(key_, error);
      return;
    } catch (...) {
      asio::post(executor_.query(asio::execution::context),
                 [hook_error = std::current_exception()] { std::rethrow_exception(hook_error); });
      return;
    }
  }
  asio::post(executor_.query(asio::execution::context), [error] { std::rethrow_exception(error); });
}

void EndpointState::close(const grpc::Status& status) {
  if (closed_) {
    return;
  }
  closed_ = true;
  close_status_ = std::make_unique<grpc::Status>(status);
  if (held_) {
    held_->fail(status);
    held_.reset();
  }
  // Pushes still being encoded fail now; the worker's result, when it comes, finds them gone.
  if (encodings_) {
    const std::unique_ptr<std::deque<EncodingPtr>> encodings = std::move(encodings_);
    for (const EncodingPtr& encoding : *encodings) {
      if (encoding->reply) {
        encoding->reply->fail(status);
        encoding->reply.reset();
      }
      complete_later(std::move(encoding->handler), errc::endpoint_closed);
    }
  }
  // Moved out first: failing a request may reach remove() through the transport.
  boost::container::devector<QueuedRequest> queued = std::move(queue_);
  queue_.clear();
  for (QueuedRequest& request : queued) {
    request.reply->leave_queue();
    request.reply->fail(status);
  }
  queued.clear();
  if (auto* const get_waiter = std::get_if<GetHandler>(&waiter_)) {
    GetHandler handler;
    handler.swap(*get_waiter);
    waiter_.emplace<std::monostate>();
    handler.get_cancellation_slot().clear();
    complete_later(std::move(handler), errc::endpoint_closed, {});
  } else if (auto* const next_waiter = std::get_if<NextHandler>(&waiter_)) {
    NextHandler handler;
    handler.swap(*next_waiter);
    waiter_.emplace<std::monostate>();
    handler.get_cancellation_slot().clear();
    complete_later(std::move(handler), errc::endpoint_closed, {});
  } else if (auto* const awaiting = std::get_if<AwaitableGetHandler>(&waiter_)) {
    AwaitableGetHandler handler(std::move(*awaiting));
    waiter_.emplace<std::monostate>();
    handler.get_cancellation_slot().clear();
    if (deferred_.busy()) {
      complete_later(GetHandler(std::move(handler)), errc::endpoint_closed, {});
    } else {
      complete_later(std::move(handler), errc::endpoint_closed, {});
    }
  }
  if (invocation_running_) {
    // On the loop, at once when this thread runs it: what Asio's co_spawn does when the completion
    // handler has an executor. InvocationEnd has none (to keep co_spawn's handler small), so the
    // dispatch is done here.
    asio::dispatch(executor_, [signal = &invocation_cancel_] { signal->emit(asio::cancellation_type::all); });
  }
}

}  // namespace rx::detail
