"""asyncio flavour of remote_xcomm's scheduler calls.

``await rx.aio.requests(...)`` and ``await rx.aio.pull(...)`` take the same arguments as their
blocking twins. The C++ engine runs the call; its completion is handed to the event loop with
``loop.call_soon_threadsafe`` from a thread of the module's (never from gRPC's threads), so the
event loop never blocks. Cancelling the awaiting task cancels the gRPC call.
"""

import asyncio

from . import _core
from ._errors import RpcError

__all__ = ["requests", "pull"]


def _settle(future, code, details, value):
    if future.done():  # cancelled meanwhile
        return
    if code == 0:
        future.set_result(value)
    else:
        future.set_exception(RpcError(code, details))


async def _run(start):
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def done(code, details, value):  # on the module's callback thread, with the GIL
        try:
            loop.call_soon_threadsafe(_settle, future, code, details, value)
        except RuntimeError:  # the event loop is closed: nobody waits any more
            pass

    call = start(done)
    try:
        return await future
    except asyncio.CancelledError:
        call.cancel()
        raise


async def requests(url="127.0.0.1", port=8081, data=None, *, timeout=30.0, wait_for_ready=False, target=None):
    """As remote_xcomm.requests, awaitable: the task's reply (a dict), or RpcError."""
    from . import _seconds, target_of

    if data is None:
        raise TypeError("requests() needs data=, a dict naming the task instance")
    to = target or target_of(url, port)
    seconds = _seconds(timeout)
    return await _run(lambda done: _core.start_send(to, data, seconds, bool(wait_for_ready), done))


async def pull(url="127.0.0.1", port=8081, *, dag_id, run_id, task_id, key="return_value", map_index=-1,
               all_map_indexes=False, wait=False, min_count=1, timeout=30.0, target=None):
    """As remote_xcomm.pull, awaitable."""
    from . import _seconds, target_of

    to = target or target_of(url, port)
    seconds = _seconds(timeout)
    return await _run(lambda done: _core.start_pull(to, dag_id, run_id, task_id, key, int(map_index),
                                                    bool(all_map_indexes), bool(wait), int(min_count), seconds,
                                                    done))
