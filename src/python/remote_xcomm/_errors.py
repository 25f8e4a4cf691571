"""The exceptions of remote_xcomm (raised by its C++ engine too)."""

import enum

__all__ = ["StatusCode", "Error", "RpcError", "EndpointError"]


class StatusCode(enum.IntEnum):
    """gRPC's status codes: ``code.name`` is "NOT_FOUND", ``int(code)`` is 5."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class Error(Exception):
    """Base class of the errors remote_xcomm raises for a failed call."""


class RpcError(Error):
    """A call failed with a gRPC status: ``code`` (a StatusCode) and ``details`` (its message)."""

    def __init__(self, code, details):
        try:
            code = StatusCode(code)
        except ValueError:  # a code newer than this list: keep the number
            pass
        self.code = code
        self.details = details
        super().__init__(code, details)

    def __str__(self):
        name = self.code.name if isinstance(self.code, StatusCode) else str(self.code)
        return f"{name}: {self.details}" if self.details else name

    def __repr__(self):
        return f"RpcError({self.code!r}, {self.details!r})"


class EndpointError(Error):
    """A task-side call (``rxcomm.get``/``push``/``xcom_push``) failed.

    ``reason`` names the cause as the C++ ``rx::errc`` does ("request_cancelled" when the
    scheduler gave up on the request, "endpoint_closed" when the server is stopping, ...).
    """

    def __init__(self, reason, message):
        self.reason = reason
        self.message = message
        super().__init__(reason, message)

    def __str__(self):
        return f"{self.reason}: {self.message}" if self.reason else self.message
