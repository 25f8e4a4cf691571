"""Remote XComm for Python: the prototype's API on the C++ engine.

Task side::

    rx.connect_ti_function(port=8081, ti=ti, func="_run_raw_task")  # serves until Ctrl-C/SIGTERM
    # inside ti._run_raw_task: payloads = self.rxcomm.get(); ...; self.rxcomm.push(outputs)

Scheduler side::

    reply = rx.requests(url="127.0.0.1", port=8081, data=data)  # data names the task instance

See docs/python.md for the threading model, signals, errors and asyncio (remote_xcomm.aio).
"""

import atexit
import math
import signal
import threading

from . import _core
from ._errors import EndpointError, Error, RpcError, StatusCode

__all__ = [
    "connect_ti_function",
    "requests",
    "pull",
    "watch",
    "target_of",
    "StatusCode",
    "Error",
    "RpcError",
    "EndpointError",
    "RxComm",
]

RxComm = _core.RxComm


class _Stopping(BaseException):
    """Raised by connect_ti_function's SIGTERM handler to interrupt task code, as Ctrl-C does."""


def _stop_on(control):
    def handler(signum, frame):
        control.stop(signum)
        raise _Stopping(signum)

    return handler

# The module's threads stop before the interpreter finalises (they take the GIL to run callbacks).
atexit.register(_core._shutdown)


def target_of(url, port):
    """The gRPC target for ``url`` and ``port``: "host:port" (IPv6 hosts bracketed).

    A ``url`` that is already a target with a scheme ("unix:/path", "dns:///host:port") is
    returned as it is, and ``port`` is ignored.
    """
    if url.startswith(("unix:", "unix-abstract:", "dns:", "ipv4:", "ipv6:")):
        return url
    if url.startswith(("http://", "https://")):  # the prototype's users sometimes wrote URLs
        url = url.split("://", 1)[1].rstrip("/")
    if port is None:
        raise TypeError("port is required unless url is a gRPC target such as 'unix:/path'")
    if ":" in url and not url.startswith("["):
        url = f"[{url}]"
    return f"{url}:{int(port)}"


def _seconds(timeout):
    if timeout is None:
        return None
    timeout = float(timeout)
    if math.isnan(timeout) or timeout < 0:
        raise ValueError("timeout must be a number of seconds >= 0, or None")
    return timeout


def _key_of(ti):
    """(dag_id, task_id, run_id, map_index) of a task instance, as Airflow's TaskInstance has them."""
    fields = []
    for name in ("dag_id", "task_id", "run_id"):
        value = getattr(ti, name, None)
        if not isinstance(value, str) or not value:
            raise TypeError(f"ti.{name} must be a non-empty str, got {value!r}")
        fields.append(value)
    map_index = getattr(ti, "map_index", -1)
    if map_index is None:
        map_index = -1
    if isinstance(map_index, bool) or not isinstance(map_index, int):
        raise TypeError(f"ti.map_index must be an int or None, got {map_index!r}")
    if not -1 <= map_index < 2**31:
        raise ValueError(f"ti.map_index is out of range: {map_index} (it must be -1 or fit in a 32-bit int)")
    fields.append(map_index)
    return fields


def connect_ti_function(port=8081, ti=None, func=None, *, method=None, host="127.0.0.1", address=""):
    """Serves the task instance ``ti`` until SIGINT (Ctrl-C) or SIGTERM, then returns.

    ``ti`` names its key with ``dag_id``, ``task_id``, ``run_id`` and ``map_index`` (None or -1
    when not mapped). Each request runs ``getattr(ti, func)()`` on this thread, with
    ``ti.rxcomm`` set: the function calls ``self.rxcomm.get()`` for the scheduler's payload (a
    dict) and ``self.rxcomm.push(outputs)`` to reply; an exception it raises fails the request
    with INTERNAL and serving goes on. ``method=`` is accepted for ``func=`` (the prototype's
    Airflow example spelled it so). ``port`` 0 picks a free port; the line printed once
    listening names it: "remote_xcomm: serving KEY on HOST:PORT". ``address`` ("unix:/path")
    replaces ``host`` and ``port``.

    Signals: Ctrl-C (SIGINT, when Python's default handler raises KeyboardInterrupt) and SIGTERM
    (when no handler of the application's is installed) stop serving, interrupting task code that
    is running (its request fails with INTERNAL); the server shuts down (queued and held requests
    get UNAVAILABLE) and the function returns the signal number. An
    exception raised by another signal handler, or a BaseException that is not an Exception
    (SystemExit) raised by the task, is re-raised after the shutdown.
    """
    if func is not None and method is not None and func != method:
        raise TypeError("give func= or method=, not both")
    name = func if func is not None else method
    if ti is None or name is None:
        raise TypeError("connect_ti_function needs ti= and func= (the name of ti's method to run)")
    function = getattr(ti, name) if isinstance(name, str) else name
    if not callable(function):
        raise TypeError(f"ti.{name} is not callable")
    dag_id, task_id, run_id, map_index = _key_of(ti)
    rxcomm = _core.RxComm()
    ti.rxcomm = rxcomm

    control = _core.ServeControl()
    previous = None
    if threading.current_thread() is threading.main_thread():
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            previous = signal.signal(signal.SIGTERM, _stop_on(control))
    try:
        return _core.serve(dag_id, task_id, run_id, map_index, function, rxcomm, control, host, int(port), address)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def requests(url="127.0.0.1", port=8081, data=None, *, timeout=30.0, wait_for_ready=False, target=None):
    """Sends ``data`` (a dict) to the task instance it names and returns the task's reply (a dict).

    ``data`` names the task instance with its ``dag_id``, ``task_id``, ``run_id`` and
    ``map_index`` fields (the prototype's annotations) and is delivered whole to the task's
    ``rxcomm.get()``. Blocks with the GIL released; Ctrl-C cancels the call and raises
    KeyboardInterrupt. ``timeout`` (seconds, None: none) is the call's deadline.
    Raises RpcError (``.code``, ``.details``) when the call fails, ValueError when ``data`` does
    not name a task instance, TypeError/ValueError/OverflowError for what JSON cannot carry.
    """
    if data is None:
        raise TypeError("requests() needs data=, a dict naming the task instance")
    return _core.send(target or target_of(url, port), data, _seconds(timeout), bool(wait_for_ready))


def pull(url="127.0.0.1", port=8081, *, dag_id, run_id, task_id, key="return_value", map_index=-1,
         all_map_indexes=False, wait=False, min_count=1, timeout=30.0, target=None):
    """Pulls XComs from a server (the C++ Client::pull): a list of dicts.

    Each dict has the task instance's ``dag_id``, ``task_id``, ``run_id``, ``map_index``, the
    XCom's ``key`` and ``value`` (decoded JSON), its ``attempt``, ``sequence`` and ``timestamp``
    (seconds since the epoch). One XCom for one task instance; with ``all_map_indexes``, one per
    map index that has it, in map-index order. With ``wait``, the server waits (up to
    ``timeout``) until the XCom exists (``min_count`` map indexes with ``all_map_indexes``).
    Raises RpcError: NOT_FOUND when it does not exist and not waiting, DEADLINE_EXCEEDED, ...
    """
    return _core.pull(target or target_of(url, port), dag_id, run_id, task_id, key, int(map_index),
                      bool(all_map_indexes), bool(wait), int(min_count), _seconds(timeout))


def watch(url="127.0.0.1", port=8081, *, dag_id, run_id, task_id="", map_index=-1, all_map_indexes=False,
          from_start=False, after_sequence=0, target=None):
    """Follows a DAG run, a task or a task instance (the C++ Client::watch): an iterator of events.

    Each event is a dict: ``{"kind": "xcom", "sequence": n, "xcom": {...}}`` (as pull()'s dicts)
    or ``{"kind": "state" | "cleared", "sequence": n, "state": {..., "state": "running", ...}}``.
    Iteration blocks (GIL released, Ctrl-C ends it) and stops after ``cancel()``; a stream the
    server ends raises RpcError (resume with ``after_sequence=w.last_sequence``).
    ``w.next(timeout=...)`` waits at most ``timeout`` seconds (TimeoutError; the watch goes on).
    """
    return _core.Watch(target or target_of(url, port), dag_id, run_id, task_id or "", int(map_index),
                       bool(all_map_indexes), bool(from_start), int(after_sequence))


from . import aio  # noqa: E402  (after the names aio uses)
