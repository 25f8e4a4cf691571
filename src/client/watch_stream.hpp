// The client side of one Watch stream: a gRPC read reactor whose events are handed out one by one
// to rx::Watch::next(). Internal.
#pragma once

#include "client/completion.hpp"
#include "client/target_channel.hpp"

#include <remote_xcomm/v1/remote_xcomm.grpc.pb.h>
#include <remote_xcomm/watch.hpp>
#include <remote_xcomm/xcom.hpp>

#include <boost/asio/cancellation_type.hpp>
#include <grpcpp/client_context.h>
#include <grpcpp/support/client_callback.h>
#include <grpcpp/support/status.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <tuple>
#include <utility>

namespace rx::detail {

/// One next()'s completion: its handler, and the outcome it completes with.
struct WatchNext final : ClientCompletion<WatchNext, grpc::Status, WatchEvent> {
  using ClientCompletion::ClientCompletion;
  std::tuple<grpc::Status, WatchEvent> take_outcome() { return {std::move(status), std::move(event)}; }
  grpc::Status status;
  WatchEvent event;
};

/// One Watch stream. Shared by its rx::Watch and by gRPC, which holds it from the start of the
/// call until OnDone: freed when both are done with it, so destroying the Watch with a read in
/// flight is safe. Its state is guarded by one mutex; gRPC calls (StartRead, RemoveHold) and
/// completions are made outside it.
///
/// Reads: the first read starts with the call; the next one only once every event read has been
/// handed out (from next() when it takes the last one, or from OnReadDone when a batch brought no
/// event), so at most one batch is buffered and a reader that stops stops the stream. A read
/// started outside a reaction needs the call alive: the stream holds a gRPC hold (AddHold) until it
/// starts no more reads (the caller ended the watch, or a read failed), so that OnDone cannot run
/// while next() starts a read.
class WatchStream final : public grpc::ClientReadReactor<remote_xcomm::v1::WatchResponse>,
                          public std::enable_shared_from_this<WatchStream> {
 public:
  /// Starts a Watch call on `channel` for `query`. `fallback` (the Client's loop) carries
  /// completions that next() makes at once for handlers with another executor than a Loop's.
  static std::shared_ptr<WatchStream> start(std::shared_ptr<const TargetChannel> channel, const WatchQuery& query,
                                            const LoopExecutor& fallback);

  WatchStream(const WatchStream&) = delete;
  WatchStream& operator=(const WatchStream&) = delete;
  ~WatchStream() override = default;

  /// Watch::next(): completes `job` with a buffered event or the end, or keeps it until one comes.
  void next(std::unique_ptr<WatchNext> job);
  /// Watch::cancel() and the Watch's destruction: ends the stream; a waiting next() completes
  /// with CANCELLED. Idempotent.
  void end_by_caller();
  [[nodiscard]] std::uint64_t last_sequence() const noexcept { return last_sequence_.load(std::memory_order_acquire); }

  void OnReadDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;

 private:
  WatchStream(std::shared_ptr<const TargetChannel> channel, const LoopExecutor& fallback);

  // The waiting next()'s cancellation slot: `id` names the wait it was connected for.
  void cancel_next(std::uint64_t id, boost::asio::cancellation_type type);
  // Hands out the oldest buffered event into `job`. Under the mutex.
  void hand_out(WatchNext& job);
  // No read is started from outside a reaction from now on. Under the mutex; true when the
  // caller must release the hold now (else the read being started releases it).
  bool stop_reads();
  // Starts a read from outside a reaction (next()), then releases the hold if stop_reads()
  // happened meanwhile. Called with `starting_read_` set, outside the mutex.
  void start_read_outside_reactions();

  const std::shared_ptr<const TargetChannel> channel_;  // its stub makes the call
  const LoopExecutor fallback_;                         // untracked: holds nothing of the io_context
  grpc::ClientContext context_;
  remote_xcomm::v1::WatchRequest request_;
  remote_xcomm::v1::WatchResponse response_;  // written by gRPC while a read is in flight

  mutable std::mutex mutex_;
  std::deque<WatchEvent> buffer_;
  std::unique_ptr<WatchNext> waiting_;
  std::uint64_t waiting_id_ = 0;
  std::uint64_t wait_ids_ = 0;
  bool reading_ = false;        // a read is in flight (or being started)
  bool starting_read_ = false;  // next() is starting one, outside a reaction
  bool reads_stopped_ = false;  // no read will be started from outside a reaction
  bool holding_ = false;        // the hold taken at the start is still held
  bool caller_ended_ = false;   // cancel(), a cancelled next() or the Watch's destruction
  bool done_ = false;           // OnDone ran; `end_` is the status next() completes with
  grpc::Status end_;
  std::atomic<std::uint64_t> last_sequence_{0};
  std::shared_ptr<WatchStream> grpc_reference_;  // gRPC's, from the start until OnDone
};

}  // namespace rx::detail
