// What the library's blocking calls need from the client's internals. Internal.
#pragma once

namespace rx::detail {

/// Starts now the sends that completions running on this thread made (they otherwise start when
/// the borrowed loop run is over). A blocking call that waits for its own send's reply calls this
/// first, or it would wait for a send that starts only after it returns.
void start_sends_deferred_on_this_thread();

}  // namespace rx::detail
