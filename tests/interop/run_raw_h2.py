#!/usr/bin/python3
"""Raw HTTP/2 test: gRPC framing no gRPC client will send, against `rxcomm serve` (issue 10).

Registered with CTest as PythonRawHttp2BadFraming by tests/python_interop.cmake:

    /usr/bin/python3 run_raw_h2.py --rxcomm build/src/cli/rxcomm

It speaks HTTP/2 itself with python3-h2 (Debian 12: 4.1.0), so that it can send what grpcio and
gRPC C++ never do: a message flagged compressed without `grpc-encoding`, an unknown encoding,
reserved bits in the message flag byte, a length prefix longer than the bytes sent, a length over
the server's limit, two messages on a unary call, a wrong content-type, a 10 KiB :path. It starts
`rxcomm serve` on port 0 of loopback (echo-0, echo-1, sleep-0) and, for each case of CASES, sends
the bad request to echo-0 and requires the exact answer docs/protocol.md ("Bad input") gives: the
grpc-status and message, or the RST_STREAM code. After each case, a request queued at sleep-0 on the
same connection before the bad one must be answered, and a valid Send to echo-1 must be answered on
the same connection (unless the server closed it) and on a new one. Finally the server must exit 0
on SIGTERM. Every wait is bounded; nothing is timed. Exit status 0 on success, 1 on failure (with
the server's output), 2 for bad arguments; --report prints what each case got without checking.
"""

import argparse
import gzip
import json
import os
import socket
import struct
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_interop import CheckFailed, ServerProcess, require  # noqa: E402  (the same harness)

CALL_TIMEOUT_S = 10.0
STARTUP_TIMEOUT_S = 20.0
SHUTDOWN_TIMEOUT_S = 20.0
MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # ServerOptions::max_message_bytes, rxcomm serve's default
SLEEP_MS = 50
SEND_PATH = "/remote_xcomm.v1.RemoteXComm/Send"

OK, CANCELLED, INVALID_ARGUMENT, RESOURCE_EXHAUSTED = 0, 1, 3, 8
HTTP2_INTERNAL_ERROR = 2


def varint(value):
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number, data):
    return varint(number << 3 | 2) + varint(len(data)) + data


def send_request(task_id, payload):
    """A remote_xcomm.v1.SendRequest for rxcomm serve's endpoint `task_id`, built by hand."""
    key = field(1, b"rxcomm") + field(2, task_id.encode()) + field(3, b"demo") + varint(4 << 3) + varint(-1)
    return field(1, key) + field(2, json.dumps(payload).encode())


def frame(message, flag=0, length=None):
    """gRPC's length-prefixed message: the flag byte, a big-endian 32-bit length, the bytes."""
    return struct.pack(">BI", flag, len(message) if length is None else length) + message


def reply_json(data):
    """The reply_json of a SendResponse in one gRPC message (its only field, number 1)."""
    require(len(data) >= 5 and data[0] == 0, f"reply is not one uncompressed gRPC message: {data[:16]!r}")
    body = data[5:5 + struct.unpack(">I", data[1:5])[0]]
    require(body[:1] == b"\x0a", f"reply is not a SendResponse: {body[:16]!r}")
    at, length, shift = 1, 0, 0
    while True:
        byte = body[at]
        length |= (byte & 0x7F) << shift
        at += 1
        shift += 7
        if byte < 0x80:
            break
    return json.loads(body[at:at + length])


class Stream:
    def __init__(self):
        self.headers = {}
        self.data = b""
        self.ended = False
        self.reset = None  # the RST_STREAM error code, if the stream was reset before it ended
        self.late_headers = []  # header blocks the server sent on the stream after it had ended it

    def status(self):
        """(grpc-status, grpc-message) from the trailers or a trailers-only response, or None."""
        if "grpc-status" not in self.headers:
            return None
        return int(self.headers["grpc-status"]), urllib.parse.unquote(self.headers.get("grpc-message", ""))

    def answer(self):
        if self.reset is not None:
            return f"RST_STREAM {self.reset}"
        status = self.status()
        more = "".join(f" (then on the ended stream: {late})" for late in self.late_headers)
        return ("no answer" if status is None else f"grpc-status {status[0]} {status[1]!r}") + more


class Connection:
    """One HTTP/2 connection to the server, driven by hand with h2's state machine."""

    def __init__(self, port):
        import h2.config
        import h2.connection
        import hyperframe.frame
        self.h2 = h2
        self.frames = hyperframe.frame
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=CALL_TIMEOUT_S)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.streams = {}
        self.pending = b""
        self.goaway = None  # (error code, debug data) once the server sent GOAWAY
        self.closed = False
        self.flush()

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            try:
                self.socket.sendall(data)
            except OSError:
                self.closed = True

    def start(self, path=SEND_PATH, headers=(), content_type="application/grpc"):
        stream_id = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream_id, [(":method", "POST"), (":scheme", "http"), (":path", path),
                                           (":authority", "127.0.0.1"), ("content-type", content_type),
                                           ("te", "trailers"), *headers])
        self.streams[stream_id] = Stream()
        self.flush()
        return stream_id

    def send(self, stream_id, data, end_stream=True):
        """Sends `data` within the flow-control windows, then (optionally) END_STREAM."""
        deadline = time.monotonic() + CALL_TIMEOUT_S
        while data:
            stream = self.streams[stream_id]
            if stream.ended or stream.reset is not None or self.closed:
                return  # the server answered before it read everything: what it answered is the result
            window = min(self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size)
            if window <= 0:
                require(time.monotonic() < deadline, "the server's flow-control window stayed shut")
                self.receive(deadline)
                continue
            self.conn.send_data(stream_id, data[:window])
            data = data[window:]
            self.flush()
        if end_stream:
            self.conn.end_stream(stream_id)
            self.flush()

    def call(self, message_bytes, path=SEND_PATH, headers=(), content_type="application/grpc"):
        stream_id = self.start(path, headers, content_type)
        self.send(stream_id, message_bytes)
        return stream_id

    def receive(self, deadline):
        """Reads one chunk from the socket and applies its events; False once the connection is gone."""
        h2 = self.h2
        if self.closed:
            return False
        self.socket.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            chunk = self.socket.recv(65536)
        except socket.timeout:
            return True
        except OSError:
            chunk = b""
        if not chunk:
            self.closed = True
            return False
        # Fed to h2 a frame at a time, so that a header block on a stream the server already ended
        # (gRPC 1.51 answers a stream twice after a header block over its limit) can be taken out:
        # h2 would make it a connection error. It is decoded here all the same, so that HPACK's
        # table stays the server's.
        self.pending += chunk
        while len(self.pending) >= 9 and len(self.pending) >= 9 + int.from_bytes(self.pending[:3], "big"):
            size = 9 + int.from_bytes(self.pending[:3], "big")
            one, self.pending = self.pending[:size], self.pending[size:]
            stream = self.streams.get(int.from_bytes(one[5:9], "big") & 0x7FFFFFFF)
            if one[3] == 0x1 and stream is not None and (stream.ended or stream.reset is not None):
                headers, length = self.frames.Frame.parse_frame_header(memoryview(one[:9]))
                headers.parse_body(memoryview(one[9:]))
                require("END_HEADERS" in headers.flags, "a header block continued in CONTINUATION frames")
                stream.late_headers.append(dict(self.conn.decoder.decode(bytes(headers.data), raw=False)))
                continue
            for event in self.conn.receive_data(one):
                self.apply(event)
        self.flush()
        return True

    def apply(self, event):
        h2 = self.h2
        stream = self.streams.get(getattr(event, "stream_id", None))
        if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
            stream.headers.update(dict(event.headers))
        elif isinstance(event, h2.events.DataReceived):
            stream.data += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            stream.ended = True
        elif isinstance(event, h2.events.StreamReset):
            if stream is not None and not stream.ended:
                stream.reset = event.error_code
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = (event.error_code, event.additional_data)

    def wait(self, stream_id):
        stream = self.streams[stream_id]
        deadline = time.monotonic() + CALL_TIMEOUT_S
        while not stream.ended and stream.reset is None and time.monotonic() < deadline:
            if not self.receive(deadline):
                break
        return stream

    def close(self):
        if not self.closed:
            try:
                self.conn.close_connection()
                self.flush()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass
        self.socket.close()


def echo_request(n):
    return frame(send_request("echo-1", {"check": n}))


# What each case sends to echo-0: a function of a connection that returns the stream id. CASES says
# what it must get.
def case_compressed_without_encoding(conn):
    return conn.call(frame(send_request("echo-0", {"case": "a"}), flag=1))


def case_compressed_without_encoding_gzip_bytes(conn):
    return conn.call(frame(gzip.compress(send_request("echo-0", {"case": "a2"})), flag=1))


def case_gzip_not_gzip(conn):
    return conn.call(frame(send_request("echo-0", {"case": "b"}), flag=1), headers=[("grpc-encoding", "gzip")])


def case_gzip_really(conn):
    return conn.call(frame(gzip.compress(send_request("echo-0", {"case": "b2"})), flag=1),
                     headers=[("grpc-encoding", "gzip")])


def case_unknown_encoding(flag):
    def run(conn):
        return conn.call(frame(send_request("echo-0", {"case": "c"}), flag=flag),
                         headers=[("grpc-encoding", "bogus-codec")])
    return run


def case_reserved_bits(flag):
    def run(conn):
        return conn.call(frame(send_request("echo-0", {"case": "d"}), flag=flag))
    return run


def case_reserved_bits_then_end(conn):
    stream_id = conn.start()
    conn.send(stream_id, frame(send_request("echo-0", {"case": "d2"}), flag=0x02), end_stream=False)
    conn.send(stream_id, b"")  # END_STREAM in an empty DATA frame of its own
    return stream_id


def case_short_message(conn):
    message = send_request("echo-0", {"case": "e"})
    return conn.call(frame(message, length=len(message) + 100))


def case_over_limit_prefix_only(conn):
    return conn.call(frame(b"\x0a\x00", length=MAX_MESSAGE_BYTES + 1))


def case_over_limit(conn):
    payload = "x" * MAX_MESSAGE_BYTES
    return conn.call(frame(send_request("echo-0", {"blob": payload})))


def case_two_messages(conn):
    return conn.call(frame(send_request("echo-0", {"case": "g1"})) + frame(send_request("echo-0", {"case": "g2"})))


def case_wrong_content_type(conn):
    return conn.call(frame(send_request("echo-0", {"case": "h"})), content_type="application/json")


def case_long_path(conn):
    return conn.call(frame(send_request("echo-0", {"case": "i"})), path="/remote_xcomm.v1.RemoteXComm/" + "M" * 10240)


NOT_FOUND = 5
METADATA_LIMIT = "received initial metadata size exceeds limit"
NO_MESSAGE = "the call ended without a complete request message"
# gRPC 1.51 drops a message with reserved flag bits and holds the call until END_STREAM: if END_STREAM
# came with the message, the method gets an empty message (an unset key: NOT_FOUND); if it came later,
# no message (CANCELLED, NO_MESSAGE). Never served.
RESERVED_BITS_ANSWERS = {NOT_FOUND, CANCELLED}
# name, what it sends to echo-0, the answer it gets (measured with Debian 12's gRPC 1.51, documented in
# docs/protocol.md "Bad input"):
#   ("ok", reply)              served: echo-0 replies `reply`
#   ("status", code, words)    that grpc-status, with a message that contains `words`
#   ("status or closed", code, words)  that, or nothing before the server closes the connection
#   ("reset", code)            RST_STREAM with that HTTP/2 error code, no grpc-status
#   ("refused", codes)         one of these grpc-status codes (gRPC 1.51 races with itself), never OK
# and what a request queued before it on the same connection gets: OK but for the 10 KiB :path.
CASES = [
    ("(a) flag 1, no grpc-encoding, plain bytes", case_compressed_without_encoding, ("ok", {"case": "a"})),
    ("(a) flag 1, no grpc-encoding, gzip bytes", case_compressed_without_encoding_gzip_bytes,
     ("status", INVALID_ARGUMENT, "does not decode as a remote_xcomm.v1.SendRequest (malformed protobuf)")),
    ("(b) flag 1, grpc-encoding gzip, bytes not gzip", case_gzip_not_gzip, ("reset", HTTP2_INTERNAL_ERROR)),
    ("(b) flag 1, grpc-encoding gzip, gzip bytes", case_gzip_really, ("ok", {"case": "b2"})),
    ("(c) flag 1, grpc-encoding bogus-codec", case_unknown_encoding(1), ("ok", {"case": "c"})),
    ("(c) flag 0, grpc-encoding bogus-codec", case_unknown_encoding(0), ("ok", {"case": "c"})),
    ("(d) flag 0x02", case_reserved_bits(0x02), ("refused", RESERVED_BITS_ANSWERS)),
    ("(d) flag 0x80", case_reserved_bits(0x80), ("refused", RESERVED_BITS_ANSWERS)),
    ("(d) flag 0xff", case_reserved_bits(0xFF), ("refused", RESERVED_BITS_ANSWERS)),
    ("(d) flag 0x02, END_STREAM in a later empty DATA frame", case_reserved_bits_then_end,
     ("refused", RESERVED_BITS_ANSWERS)),
    ("(e) length prefix 100 bytes past the data, then END_STREAM", case_short_message,
     ("status", CANCELLED, NO_MESSAGE)),
    ("(f) length prefix 4 MiB + 1, 2 bytes, END_STREAM", case_over_limit_prefix_only,
     ("status", CANCELLED, NO_MESSAGE)),
    ("(f) a message of 4 MiB + 52 bytes", case_over_limit,
     ("status", RESOURCE_EXHAUSTED, "Received message larger than max (")),
    ("(g) two messages on a unary Send", case_two_messages, ("ok", {"case": "g1"})),
    ("(h) content-type application/json", case_wrong_content_type, ("ok", {"case": "h"})),
    ("(i) a 10 KiB :path", case_long_path, ("status or closed", RESOURCE_EXHAUSTED, METADATA_LIMIT)),
]
# gRPC 1.51 fails every open stream of the connection with the answer given here when one header block
# is over its limit, then closes the connection (no GOAWAY); the close races the answers' write, so a
# stream may get nothing before the connection ends (a gRPC client sees UNAVAILABLE).
CLOSES_CONNECTION = {"(i) a 10 KiB :path": (RESOURCE_EXHAUSTED, METADATA_LIMIT)}


class RawHttp2:
    def __init__(self, args):
        self.args = args
        self.log = []
        self.checks = 0
        self.server = None
        self.port = None

    def passed(self, name, detail=""):
        self.checks += 1
        self.log.append(f"ok {self.checks:2d} {name}" + (f": {detail}" if detail else ""))

    def valid_send(self, conn, what):
        stream = conn.wait(conn.call(echo_request(what)))
        require(stream.status() == (OK, ""), f"{what}: a valid Send to echo-1 got {stream.answer()}")
        reply = reply_json(stream.data)
        require(reply == {"check": what}, f"{what}: echo-1 replied {reply!r}")

    def run(self):
        self.server = ServerProcess(self.args.rxcomm, ("serve", "--port", "0", "-n", "2", "--sleep-endpoints", "1",
                                                       "--sleep-ms", str(SLEEP_MS)))
        try:
            line = self.server.first_line(STARTUP_TIMEOUT_S)
            host, _, port = line.rpartition(":")
            require(host == "127.0.0.1" and port.isdigit() and int(port) != 0, f"rxcomm serve printed {line!r}")
            self.port = int(port)
            self.cases()
        except BaseException:
            try:
                self.server.stop(SHUTDOWN_TIMEOUT_S)
            except CheckFailed as also:
                self.log.append(f"also: {also}")
            raise
        status = self.server.stop(SHUTDOWN_TIMEOUT_S)
        require(status == 0, f"rxcomm serve exited with status {status} after SIGTERM, expected 0")
        self.passed("rxcomm serve exits with status 0 on SIGTERM")

    def cases(self):
        # Queued at sleep-0 before any case, on a connection of their own: none may be lost.
        background = Connection(self.port)
        queued = [background.call(frame(send_request("sleep-0", {"queued": i}))) for i in range(3)]
        results = []
        for number, (name, send, expected) in enumerate(CASES):
            conn = Connection(self.port)
            try:
                self.valid_send(conn, f"before case {number}")
                waiting = conn.call(frame(send_request("sleep-0", {"queued_before": number})))
                stream = conn.wait(send(conn))
                answer = stream.answer()
                goaway = conn.goaway
                results.append((name, answer + (f", GOAWAY {goaway[0]}" if goaway else "")))
                if not self.args.report:
                    self.check_answer(name, conn, stream, expected)
                # The request queued before it on the same connection, and a new request there.
                if name in CLOSES_CONNECTION:
                    queued_stream = conn.wait(waiting)
                    # OK too when its sleep ended before gRPC read the bad header block (a loaded machine).
                    require(queued_stream.status() in (CLOSES_CONNECTION[name], (OK, ""), None)
                            and queued_stream.reset is None,
                            f"{name}: the request queued before it on the same connection got {queued_stream.answer()}")
                    deadline = time.monotonic() + CALL_TIMEOUT_S
                    while conn.receive(deadline) and time.monotonic() < deadline:
                        pass
                    require(conn.closed, f"{name}: the server did not close the connection")
                    where = "on a new connection (gRPC closed it; the request queued on it got the same status, nothing, or OK if it was done first)"
                elif not conn.closed and conn.goaway is None:
                    queued_stream = conn.wait(waiting)
                    require(queued_stream.status() == (OK, ""),
                            f"{name}: the request queued before it on the same connection got {queued_stream.answer()}")
                    self.valid_send(conn, f"after case {number}, same connection")
                    where = "on the same connection and a new one"
                else:
                    raise CheckFailed(f"{name}: the server ended the connection (GOAWAY {goaway})")
            finally:
                conn.close()
            fresh = Connection(self.port)
            try:
                self.valid_send(fresh, f"after case {number}, new connection")
            finally:
                fresh.close()
            self.passed(f"{name} -> {stream.answer()}", f"then echo-1 answers {where}")
        for i, stream_id in enumerate(queued):
            stream = background.wait(stream_id)
            require(stream.status() == (OK, ""), f"request {i} queued before all cases got {stream.answer()}")
        background.close()
        self.passed("the requests queued at sleep-0 before all cases were all answered")
        if self.args.report:
            for name, answer in results:
                print(f"{name:60s} {answer}")

    def check_answer(self, name, conn, stream, expected):
        if expected[0] == "reset":
            require(stream.reset == expected[1], f"{name}: expected RST_STREAM {expected[1]}, got {stream.answer()}")
            return
        status = stream.status()
        if expected[0] == "status or closed" and status is None and stream.reset is None:
            deadline = time.monotonic() + CALL_TIMEOUT_S
            while conn.receive(deadline) and time.monotonic() < deadline:
                pass
            require(conn.closed, f"{name}: no answer, and the connection stays open")
            return
        require(status is not None, f"{name}: expected a grpc-status, got {stream.answer()}")
        if expected[0] == "ok":
            require(status == (OK, ""), f"{name}: expected OK, got {stream.answer()}")
            reply = reply_json(stream.data)
            require(reply == expected[1], f"{name}: echo-0 replied {reply!r}, expected {expected[1]!r}")
            return
        if expected[0] == "refused":
            require(status[0] in expected[1] and len(status[1]) < 400,
                    f"{name}: expected one of {sorted(expected[1])}, got {stream.answer()}")
            return
        _, code, words = expected
        require(status[0] == code and words in status[1] and len(status[1]) < 400,
                f"{name}: expected grpc-status {code} saying {words!r}, got {stream.answer()}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rxcomm", required=True, help="the built rxcomm (src/cli)")
    parser.add_argument("--report", action="store_true", help="print each case's answer instead of checking it")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each check as it passes")
    args = parser.parse_args()
    if not os.path.isfile(args.rxcomm):
        parser.error(f"no such file: {args.rxcomm}")
    try:
        import h2  # noqa: F401
        import hyperframe  # noqa: F401
    except ImportError:
        print("run_raw_h2: FAIL: cannot import h2 (Debian: python3-h2); run with /usr/bin/python3", file=sys.stderr)
        return 1

    started = time.monotonic()
    test = RawHttp2(args)
    try:
        test.run()
    except CheckFailed as failure:
        print("\n".join(test.log), file=sys.stderr)
        if test.server is not None:
            print(test.server.output(), file=sys.stderr)
        print(f"run_raw_h2: FAIL: {failure}", file=sys.stderr)
        return 1
    if args.verbose:
        print("\n".join(test.log))
    print(f"run_raw_h2: PASS: {test.checks} checks, {len(CASES)} cases, raw HTTP/2 (h2) against rxcomm serve on "
          f"127.0.0.1:{test.port}, {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
