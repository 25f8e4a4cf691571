// Fan-out: a window of Client sends over many targets, on the Client's loop. Every member of
// FanOutState runs on that loop, one thread at a time; only its wait ids are taken elsewhere.
#include <remote_xcomm/fan_out.hpp>

#include <boost/asio/any_completion_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <deque>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <utility>

namespace rx::detail {

namespace asio = boost::asio;
using boost::system::error_code;

namespace {

// A next() or all() waiting on the loop, with work kept on its handler's executor until it has run.
template <typename Handler>
struct Wait {
  Handler handler;
  asio::any_completion_executor work;
  std::uint64_t id = 0;
};

// Runs `handler(args...)` on its own executor, releasing `work` after it. Clears the handler's
// cancellation slot first, there: the slot belongs to the handler's executor, and a cancellation
// emitted afterwards must not reach this fan-out.
template <typename Handler, typename... Args>
void run_on_own_executor(const LoopExecutor& loop, Handler handler, asio::any_completion_executor work, Args... args) {
  const asio::any_completion_executor executor =
      asio::prefer(asio::get_associated_executor(handler, loop), asio::execution::outstanding_work.untracked);
  executor.execute([handler = std::move(handler), work = std::move(work), ... args = std::move(args)]() mutable {
    if (auto slot = handler.get_cancellation_slot(); slot.is_connected()) {
      slot.clear();
    }
    std::move(handler)(std::move(args)...);
  });
}

constexpr auto CANCELLING = asio::cancellation_type::terminal | asio::cancellation_type::partial;

}  // namespace

class FanOutState : public std::enable_shared_from_this<FanOutState> {
 public:
  FanOutState(Client& client, std::vector<FanOutRequest> requests, const FanOutOptions& options)
      : loop_(client.get_executor()),
        requests_(std::move(requests)),
        send_options_(options.send),
        max_in_flight_(std::max<std::size_t>(options.max_in_flight, 1)),
        max_per_target_(std::max<std::size_t>(options.max_in_flight_per_target, 1)),
        phase_(requests_.size(), Phase::unsent),
        group_of_(requests_.size()),
        signals_(std::make_unique<asio::cancellation_signal[]>(requests_.size())) {
    std::unordered_map<std::string_view, std::uint32_t> group_by_target;
    for (std::size_t i = 0; i < requests_.size(); ++i) {
      const auto [it, added] =
          group_by_target.try_emplace(requests_[i].target, static_cast<std::uint32_t>(groups_.size()));
      if (added) {
        groups_.emplace_back(client.connect(requests_[i].target));
      }
      group_of_[i] = it->second;
      groups_[it->second].unsent.push_back(static_cast<std::uint32_t>(i));
    }
  }

  [[nodiscard]] const LoopExecutor& loop() const noexcept { return loop_; }
  [[nodiscard]] std::uint64_t new_wait_id() noexcept { return wait_ids_.fetch_add(1, std::memory_order_relaxed) + 1; }

  void start() {
    for (std::uint32_t group = 0; group < groups_.size(); ++group) {
      ready_.push_back(group);
      groups_[group].queued = true;
    }
    pump();
    deliver();
  }

  void next(FanOutNextHandler handler, std::uint64_t id, bool initiating) {
    if (next_wait_ || all_wait_) {
      finish(std::move(handler), {}, initiating, error_code(errc::already_waiting), FanOutResult{});
      return;
    }
    if (!results_.empty() || taken_ == requests_.size()) {
      take_next(std::move(handler), {}, initiating);
      return;
    }
    asio::any_completion_executor work = tracked_work(handler);
    next_wait_.emplace(Wait<FanOutNextHandler>{std::move(handler), std::move(work), id});
  }

  void all(FanOutAllHandler handler, std::uint64_t id, bool initiating) {
    if (next_wait_ || all_wait_) {
      finish(std::move(handler), {}, initiating, error_code(errc::already_waiting), std::vector<FanOutResult>{});
      return;
    }
    asio::any_completion_executor work = tracked_work(handler);
    all_wait_.emplace(Wait<FanOutAllHandler>{std::move(handler), std::move(work), id});
    if (completed_ == requests_.size()) {
      deliver_all(initiating);
    }
  }

  // Cancels every send not yet complete: the unsent ones complete here, the others are cancelled
  // as a Client::send is, and complete when their cancellation has gone through.
  void cancel() {
    if (cancelled_) {
      return;
    }
    cancelled_ = true;
    ready_.clear();
    for (std::size_t i = 0; i < requests_.size(); ++i) {
      if (phase_[i] == Phase::unsent) {
        phase_[i] = Phase::complete;
        Group& group = groups_[group_of_[i]];
        group.unsent.clear();
        results_.push_back(
            {i, grpc::Status(grpc::StatusCode::CANCELLED, "the fan-out was cancelled before this send started"), {}});
        ++completed_;
      }
    }
    // Read again on every turn: a cancellation may complete its send at once.
    for (std::size_t i = 0; i < requests_.size(); ++i) {
      if (phase_[i] == Phase::in_flight) {
        signals_[i].emit(asio::cancellation_type::terminal);
      }
    }
    deliver();
  }

  // A next() or all() was cancelled (on its executor, then brought here).
  void cancel_wait(std::uint64_t id, asio::cancellation_type type) {
    if ((type & CANCELLING) == asio::cancellation_type::none) {
      return;
    }
    if (next_wait_ && next_wait_->id == id) {
      Wait<FanOutNextHandler> wait = std::move(*next_wait_);
      next_wait_.reset();
      cancel();
      finish(std::move(wait.handler), std::move(wait.work), false, error_code(asio::error::operation_aborted),
             FanOutResult{});
    } else if (all_wait_ && all_wait_->id == id) {
      all_cancelled_ = true;
      cancel();  // all() completes, with operation_aborted, once every send has
    }
  }

  // The FanOut was destroyed: cancel what is left, and end a wait still pending.
  void abandon() {
    std::optional<Wait<FanOutNextHandler>> next_wait = std::exchange(next_wait_, std::nullopt);
    std::optional<Wait<FanOutAllHandler>> all_wait = std::exchange(all_wait_, std::nullopt);
    cancel();
    if (next_wait) {
      finish(std::move(next_wait->handler), std::move(next_wait->work), false,
             error_code(asio::error::operation_aborted), FanOutResult{});
    }
    if (all_wait) {
      finish(std::move(all_wait->handler), std::move(all_wait->work), false, error_code(asio::error::operation_aborted),
             std::vector<FanOutResult>{});
    }
  }

 private:
  enum class Phase : std::uint8_t { unsent, in_flight, complete };

  // One target's share of the window.
  struct Group {
    explicit Group(Connection to) : connection(std::move(to)) {}
    Connection connection;
    std::deque<std::uint32_t> unsent;
    std::size_t in_flight = 0;
    bool queued = false;  // in ready_
  };

  // A send's completion: on the loop (its executor is the Client's).
  struct SendDone {
    std::shared_ptr<FanOutState> state;
    std::uint32_t index;
    void operator()(grpc::Status status, boost::json::object reply) const {
      state->complete(index, std::move(status), std::move(reply));
    }
  };

  template <typename Handler>
  asio::any_completion_executor tracked_work(const Handler& handler) const {
    return asio::prefer(asio::get_associated_executor(handler, loop_), asio::execution::outstanding_work.tracked);
  }

  // Completes a wait; from inside its initiation, through a post, so that the handler never runs
  // before the initiating function has returned.
  template <typename Handler, typename... Args>
  void finish(Handler handler, asio::any_completion_executor work, bool initiating, Args... args) {
    if (!work) {
      work = tracked_work(handler);
    }
    if (initiating) {
      asio::post(loop_, [loop = loop_, handler = std::move(handler), work = std::move(work),
                         ... args = std::move(args)]() mutable {
        run_on_own_executor(loop, std::move(handler), std::move(work), std::move(args)...);
      });
    } else {
      run_on_own_executor(loop_, std::move(handler), std::move(work), std::move(args)...);
    }
  }

  void take_next(FanOutNextHandler handler, asio::any_completion_executor work, bool initiating) {
    if (results_.empty()) {
      finish(std::move(handler), std::move(work), initiating, error_code(errc::no_more_results), FanOutResult{});
      return;
    }
    FanOutResult result = std::move(results_.front());
    results_.pop_front();
    ++taken_;
    finish(std::move(handler), std::move(work), initiating, error_code(), std::move(result));
  }

  void deliver_all(bool initiating) {
    Wait<FanOutAllHandler> wait = std::move(*all_wait_);
    all_wait_.reset();
    std::vector<FanOutResult> results(std::make_move_iterator(results_.begin()),
                                      std::make_move_iterator(results_.end()));
    results_.clear();
    taken_ += results.size();
    std::sort(results.begin(), results.end(),
              [](const FanOutResult& a, const FanOutResult& b) { return a.index < b.index; });
    const error_code outcome = all_cancelled_ ? error_code(asio::error::operation_aborted) : error_code();
    finish(std::move(wait.handler), std::move(wait.work), initiating, outcome, std::move(results));
  }

  // Hands what is ready to the wait, if any.
  void deliver() {
    if (next_wait_ && (!results_.empty() || taken_ == requests_.size())) {
      Wait<FanOutNextHandler> wait = std::move(*next_wait_);
      next_wait_.reset();
      take_next(std::move(wait.handler), std::move(wait.work), false);
    } else if (all_wait_ && completed_ == requests_.size()) {
      deliver_all(false);
    }
  }

  // Starts sends while the window has room, one target after another.
  void pump() {
    if (pumping_) {
      return;  // a send completed inside a start below; the loop there goes on
    }
    pumping_ = true;
    while (!cancelled_ && in_flight_ < max_in_flight_ && !ready_.empty()) {
      const std::uint32_t index = ready_.front();
      ready_.pop_front();
      Group& group = groups_[index];
      group.queued = false;
      const std::uint32_t request = group.unsent.front();
      group.unsent.pop_front();
      if (!group.unsent.empty() && group.in_flight + 1 < max_per_target_) {
        ready_.push_back(index);
        group.queued = true;
      }
      send(request, group);
    }
    pumping_ = false;
  }

  void send(std::uint32_t index, Group& group) {
    phase_[index] = Phase::in_flight;
    ++in_flight_;
    ++group.in_flight;
    FanOutRequest& request = requests_[index];
    group.connection.send(request.key, request.payload, send_options_,
                          asio::bind_cancellation_slot(signals_[index].slot(), SendDone{shared_from_this(), index}));
    request.payload = {};  // serialised by send(); its memory goes now
  }

  void complete(std::uint32_t index, grpc::Status status, boost::json::object reply) {
    phase_[index] = Phase::complete;
    --in_flight_;
    Group& group = groups_[group_of_[index]];
    --group.in_flight;
    if (!group.queued && !group.unsent.empty() && !cancelled_) {
      ready_.push_back(group_of_[index]);
      group.queued = true;
    }
    results_.push_back({index, std::move(status), std::move(reply)});
    ++completed_;
    pump();
    deliver();
  }

  LoopExecutor loop_;
  std::vector<FanOutRequest> requests_;
  SendOptions send_options_;
  std::size_t max_in_flight_;
  std::size_t max_per_target_;
  std::vector<Phase> phase_;
  std::vector<std::uint32_t> group_of_;
  std::unique_ptr<asio::cancellation_signal[]> signals_;  // one per request, each send's slot
  std::vector<Group> groups_;
  std::deque<std::uint32_t> ready_;   // groups with unsent requests and room in their window
  std::deque<FanOutResult> results_;  // complete, not yet taken, in completion order
  std::size_t in_flight_ = 0;
  std::size_t completed_ = 0;
  std::size_t taken_ = 0;
  bool cancelled_ = false;
  bool all_cancelled_ = false;
  bool pumping_ = false;
  std::optional<Wait<FanOutNextHandler>> next_wait_;
  std::optional<Wait<FanOutAllHandler>> all_wait_;
  std::atomic<std::uint64_t> wait_ids_{0};
};

namespace {

// Runs `function(state)` on the state's loop: here when this thread runs it, else queued.
template <typename Function>
void on_loop(const std::shared_ptr<FanOutState>& state, Function function) {
  if (state->loop().running_in_this_thread()) {
    function(*state, true);
  } else {
    asio::post(state->loop(), [state, function = std::move(function)]() mutable { function(*state, false); });
  }
}

// Brings a wait's cancellation to the loop; holds the state weakly, as the signal may outlive it.
template <typename Handler>
void connect_cancellation(const std::shared_ptr<FanOutState>& state, Handler& handler, std::uint64_t id) {
  auto slot = handler.get_cancellation_slot();
  if (!slot.is_connected()) {
    return;
  }
  slot.assign([weak = std::weak_ptr<FanOutState>(state), id](asio::cancellation_type type) {
    if (const std::shared_ptr<FanOutState> alive = weak.lock()) {
      on_loop(alive, [id, type](FanOutState& fan_out, bool /*inline*/) { fan_out.cancel_wait(id, type); });
    }
  });
}

}  // namespace

std::shared_ptr<FanOutState> start_fan_out(Client& client, std::vector<FanOutRequest> requests,
                                           const FanOutOptions& options) {
  auto state = std::make_shared<FanOutState>(client, std::move(requests), options);
  on_loop(state, [](FanOutState& fan_out, bool /*inline*/) { fan_out.start(); });
  return state;
}

void fan_out_next(const std::shared_ptr<FanOutState>& state, FanOutNextHandler handler) {
  const std::uint64_t id = state->new_wait_id();
  connect_cancellation(state, handler, id);
  on_loop(state, [id, handler = std::move(handler)](FanOutState& fan_out, bool initiating) mutable {
    fan_out.next(std::move(handler), id, initiating);
  });
}

void fan_out_all(const std::shared_ptr<FanOutState>& state, FanOutAllHandler handler) {
  const std::uint64_t id = state->new_wait_id();
  connect_cancellation(state, handler, id);
  on_loop(state, [id, handler = std::move(handler)](FanOutState& fan_out, bool initiating) mutable {
    fan_out.all(std::move(handler), id, initiating);
  });
}

void fan_out_cancel(const std::shared_ptr<FanOutState>& state) {
  on_loop(state, [](FanOutState& fan_out, bool /*inline*/) { fan_out.cancel(); });
}

}  // namespace rx::detail

namespace rx {

FanOut::FanOut(Client& client, std::vector<FanOutRequest> requests, FanOutOptions options)
    : size_(requests.size()), executor_(client.get_executor()) {
  state_ = detail::start_fan_out(client, std::move(requests), options);
}

FanOut& FanOut::operator=(FanOut&& other) noexcept {
  if (this != &other) {
    FanOut gone(std::move(*this));
    state_ = std::move(other.state_);
    size_ = other.size_;
    executor_ = other.executor_;
  }
  return *this;
}

FanOut::~FanOut() {
  if (state_) {
    detail::on_loop(state_, [](detail::FanOutState& fan_out, bool /*inline*/) { fan_out.abandon(); });
  }
}

void FanOut::cancel() {
  if (state_) {
    detail::fan_out_cancel(state_);
  }
}

}  // namespace rx
