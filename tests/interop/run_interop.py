#!/usr/bin/python3
"""Interop test: stock grpcio (no Remote XComm library) against the C++ example server.

Registered with CTest as PythonGrpcioClientTalksToCppServer by tests/python_interop.cmake:

    /usr/bin/python3 run_interop.py --server build/examples/server --stubs build/tests/python_stubs \
        --client examples/python/client.py

It starts the example server on port 0 of loopback, reads the port from the server's first line,
runs examples/python/client.py against it, then calls the server directly with the generated stubs
to check the wire contract of docs/protocol.md: concurrent calls, NOT_FOUND, INVALID_ARGUMENT,
RESOURCE_EXHAUSTED and DEADLINE_EXCEEDED, each followed by a call that must still be answered, and
the Exchange stream (batches matched by id, per-frame errors, a clean end after the half-close).
Finally it stops the server with SIGTERM and requires exit status 0. Every wait is bounded.
Exit status 0 and a one-line summary on success; 1 and what went wrong (with the server's output)
on failure; 2 for bad arguments.
"""

import argparse
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid

# The key of the example server's DummyTaskInstance (examples/server.cpp).
EXAMPLE_KEY = {"dag_id": "example_dag", "task_id": "hello_task", "run_id": "manual__2026-11-29", "map_index": -1}
EXAMPLE_KEY_TEXT = "example_dag/hello_task/manual__2026-11-29[-1]"
SERVING_LINE = re.compile(r"^remote_xcomm: serving (?P<key>.+) on (?P<host>[^ ]+):(?P<port>\d+)$")

STARTUP_TIMEOUT_S = 20.0
CALL_TIMEOUT_S = 10.0
CONCURRENT_CALLS = 20
CONCURRENT_TIMEOUT_S = 30.0
CLIENT_PROCESS_TIMEOUT_S = 30.0
SHUTDOWN_TIMEOUT_S = 20.0  # the server lets calls drain for up to 5 s (ServerOptions::shutdown_grace)
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_JSON_DEPTH = 64


class CheckFailed(Exception):
    pass


def require(condition, message):
    if not condition:
        raise CheckFailed(message)


class ServerProcess:
    """The example server as a child process whose output is drained by threads (so it never blocks)."""

    def __init__(self, path, arguments=("--port", "0")):
        self.stdout_lines = []
        self.stderr_lines = []
        self._first_lines = queue.Queue()
        self.process = subprocess.Popen([path, *arguments], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, errors="replace",
                                        preexec_fn=_die_with_parent)
        self._pumps = [threading.Thread(target=self._pump, args=(self.process.stdout, self.stdout_lines, True),
                                        daemon=True),
                       threading.Thread(target=self._pump, args=(self.process.stderr, self.stderr_lines, False),
                                        daemon=True)]
        for pump in self._pumps:
            pump.start()

    def _pump(self, stream, lines, announce):
        for line in stream:
            lines.append(line.rstrip("\n"))
            if announce:
                self._first_lines.put(line.rstrip("\n"))
        if announce:
            self._first_lines.put(None)  # end of output: the server exited

    def first_line(self, timeout):
        try:
            line = self._first_lines.get(timeout=timeout)
        except queue.Empty:
            raise CheckFailed(f"the server printed nothing within {timeout:.0f} s") from None
        if line is None:
            self.process.wait(timeout=5)
            raise CheckFailed(f"the server exited with status {self.process.returncode} before it listened")
        return line

    def stop(self, timeout):
        """SIGTERMs the server if it still runs and returns its exit status; kills it after `timeout` s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
            raise CheckFailed(f"the server did not exit within {timeout:.0f} s of SIGTERM (killed)") from None
        for pump in self._pumps:
            pump.join(timeout=5)
        return status

    def output(self):
        return ("--- server stdout ---\n" + "\n".join(self.stdout_lines) +
                "\n--- server stderr ---\n" + "\n".join(self.stderr_lines))


def proto_fields(data):
    """The (number, value) pairs of a protobuf message's length-delimited and varint fields."""
    def varint(at):
        value, shift = 0, 0
        while True:
            byte = data[at]
            value |= (byte & 0x7F) << shift
            at += 1
            if byte < 0x80:
                return value, at
            shift += 7
    out, at = [], 0
    while at < len(data):
        tag, at = varint(at)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            value, at = varint(at)
        elif wire_type == 2:
            length, at = varint(at)
            value, at = data[at:at + length], at + length
        else:
            raise CheckFailed(f"unexpected wire type {wire_type} in a reflection response")
        out.append((number, value))
    return out


def _die_with_parent():
    # If this script is killed (say by CTest's timeout), the server must not outlive it.
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except Exception:  # not Linux: the finally block still stops the server in every other case
        pass


class Interop:
    def __init__(self, args):
        self.args = args
        self.log = []
        self.checks = 0
        self.server = None
        sys.path.insert(0, os.path.abspath(args.stubs))
        try:
            import grpc
            from remote_xcomm.v1 import remote_xcomm_pb2, remote_xcomm_pb2_grpc
        except ImportError as error:
            raise CheckFailed(f"cannot import grpc or the stubs in {args.stubs} ({error}); build the target "
                              "remote_xcomm_python_stubs and run with /usr/bin/python3") from None
        self.grpc = grpc
        self.pb2 = remote_xcomm_pb2
        self.pb2_grpc = remote_xcomm_pb2_grpc

    def passed(self, name, detail=""):
        self.checks += 1
        self.log.append(f"ok {self.checks:2d} {name}" + (f": {detail}" if detail else ""))

    # --- the pieces of a call ---------------------------------------------------------------------

    def key(self, **overrides):
        return self.pb2.TaskInstanceKey(**{**EXAMPLE_KEY, **overrides})

    def payload(self, **xcoms):
        return json.dumps({**EXAMPLE_KEY, "xcoms": xcoms})

    def request(self, payload_json, key=None):
        return self.pb2.SendRequest(key=key if key is not None else self.key(), payload_json=payload_json)

    def check_reply(self, reply_json, what):
        try:
            reply = json.loads(reply_json)
        except ValueError as error:
            raise CheckFailed(f"{what}: reply_json is not JSON ({error}): {reply_json!r}") from None
        require(isinstance(reply, dict), f"{what}: reply is not a JSON object: {reply_json!r}")
        require(reply.get("output_key") == "hello_world", f"{what}: output_key is not \"hello_world\": {reply!r}")
        output = reply.get("output")
        try:
            canonical = str(uuid.UUID(output))
        except (TypeError, ValueError, AttributeError):
            canonical = None
        require(canonical == output, f"{what}: output is not a UUID: {reply!r}")
        return output

    def expect_answer(self, stub, what, payload_json=None):
        request = self.request(payload_json if payload_json is not None else self.payload(check=what))
        try:
            response = stub.Send(request, timeout=CALL_TIMEOUT_S)
        except self.grpc.RpcError as error:
            raise CheckFailed(f"{what}: the call failed with {error.code().name}: {error.details()}") from None
        return self.check_reply(response.reply_json, what)

    def expect_error(self, stub, what, request, code, timeout=CALL_TIMEOUT_S, method=None):
        try:
            response = (method or stub.Send)(request, timeout=timeout)
        except self.grpc.RpcError as error:
            require(error.code() == code,
                    f"{what}: expected {code.name}, got {error.code().name}: {error.details()}")
            return error.details()
        raise CheckFailed(f"{what}: expected {code.name}, got OK with {response!r}")

    # --- the checks -------------------------------------------------------------------------------

    def run(self):
        self.server = ServerProcess(self.args.server)
        try:
            self.talk_to(self.server)
        except BaseException:
            try:
                self.server.stop(SHUTDOWN_TIMEOUT_S)
            except CheckFailed as also:
                self.log.append(f"also: {also}")
            raise
        status = self.server.stop(SHUTDOWN_TIMEOUT_S)
        require(status == 0, f"the server exited with status {status} after SIGTERM, expected 0")
        self.passed("server exits with status 0 on SIGTERM")
        return self.port

    def talk_to(self, server):
        line = server.first_line(STARTUP_TIMEOUT_S)
        match = SERVING_LINE.match(line)
        require(match is not None, f"unexpected first line from the server: {line!r}")
        require(match["key"] == EXAMPLE_KEY_TEXT, f"server serves {match['key']}, expected {EXAMPLE_KEY_TEXT}")
        require(match["host"] == "127.0.0.1", f"server listens on {match['host']}, expected loopback 127.0.0.1")
        self.port = int(match["port"])
        require(self.port != 0, "server announced port 0")
        self.passed("server announces its key and port", line)

        # Opened before the first request: a waiting Pull and a Watch that the example client's
        # request must wake (XComs, docs/xcoms.md).
        xcom_channel = self.grpc.insecure_channel(f"127.0.0.1:{self.port}")
        xcom_stub = self.pb2_grpc.RemoteXCommStub(xcom_channel)
        waiting_pull, watch_events, watch_call, watch_thread = self.start_xcom_waiters(xcom_stub)

        self.check_example_client()
        self.check_xcom_waiters(waiting_pull, watch_events, watch_call, watch_thread)

        grpc = self.grpc
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=CALL_TIMEOUT_S)
            except grpc.FutureTimeoutError:
                raise CheckFailed(f"cannot connect to 127.0.0.1:{self.port} within {CALL_TIMEOUT_S:.0f} s") from None
            stub = self.pb2_grpc.RemoteXCommStub(channel)
            self.check_concurrent_calls(stub)

            details = self.expect_error(stub, "unknown key", self.request(self.payload(), self.key(dag_id="no_such_dag")),
                                        grpc.StatusCode.NOT_FOUND)
            self.passed("unknown key -> NOT_FOUND", details)

            details = self.expect_error(stub, "payload not JSON", self.request("{not json"),
                                        grpc.StatusCode.INVALID_ARGUMENT)
            self.expect_answer(stub, "call after a payload that is not JSON")
            self.passed("payload \"{not json\" -> INVALID_ARGUMENT, then the server answers", details)

            details = self.expect_error(stub, "array payload", self.request(json.dumps([EXAMPLE_KEY])),
                                        grpc.StatusCode.INVALID_ARGUMENT)
            self.passed("JSON array payload -> INVALID_ARGUMENT", details)

            self.expect_answer(stub, "empty payload_json", payload_json="")
            self.passed("empty payload_json reads as {} and is answered")

            nested = '{"a":' * (MAX_JSON_DEPTH + 1) + "1" + "}" * (MAX_JSON_DEPTH + 1)
            details = self.expect_error(stub, "payload too deep", self.request(nested),
                                        grpc.StatusCode.INVALID_ARGUMENT)
            self.passed(f"payload nested {MAX_JSON_DEPTH + 1} deep -> INVALID_ARGUMENT", details)

            huge = self.payload(blob="x" * MAX_MESSAGE_BYTES)
            details = self.expect_error(stub, "message over 4 MiB", self.request(huge),
                                        grpc.StatusCode.RESOURCE_EXHAUSTED)
            self.expect_answer(stub, "call after a message over 4 MiB")
            self.passed("message over 4 MiB -> RESOURCE_EXHAUSTED, then the server answers", details)

            details = self.expect_error(stub, "1 ms deadline", self.request(self.payload(check="deadline")),
                                        grpc.StatusCode.DEADLINE_EXCEEDED, timeout=0.001)
            self.expect_answer(stub, "call after a missed deadline")
            self.passed("1 ms deadline -> DEADLINE_EXCEEDED, then the server answers", details)

            self.check_exchange(stub)
            self.expect_answer(stub, "Send after an Exchange stream")
            self.check_xcoms(stub)
            self.check_list_and_stats(stub)
            self.check_health_and_reflection(channel)
            self.check_hostile_input(channel, stub)
        xcom_channel.close()

    def start_xcom_waiters(self, stub):
        pb2 = self.pb2
        key = EXAMPLE_KEY
        pull = stub.Pull.future(pb2.PullRequest(dag_id=key["dag_id"], run_id=key["run_id"], task_id=key["task_id"],
                                                wait=True), timeout=CONCURRENT_TIMEOUT_S)
        call = stub.Watch(pb2.WatchRequest(dag_id=key["dag_id"], run_id=key["run_id"], task_id=key["task_id"]),
                          timeout=CONCURRENT_TIMEOUT_S)
        events = queue.Queue()

        def read():
            try:
                for response in call:
                    for event in response.events:
                        events.put(event)
            except self.grpc.RpcError as error:
                events.put(error)
            events.put(None)

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        return pull, events, call, thread

    def check_xcom_waiters(self, pull, events, call, thread):
        grpc = self.grpc
        try:
            response = pull.result()
        except grpc.RpcError as error:
            raise CheckFailed(f"waiting Pull failed with {error.code().name}: {error.details()}") from None
        require(len(response.xcoms) == 1, f"waiting Pull returned {len(response.xcoms)} XComs, expected 1")
        xcom = response.xcoms[0]
        require(xcom.key == "return_value", f"waiting Pull returned key {xcom.key!r}")
        self.check_reply(xcom.value_json, "the return_value a waiting Pull got")
        self.passed("Pull(wait=True) opened before the first request is woken by the task's reply")
        seen = []
        deadline = time.monotonic() + CALL_TIMEOUT_S
        while "SUCCESS" not in seen and time.monotonic() < deadline:
            try:
                event = events.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                break
            require(event is not None and not isinstance(event, grpc.RpcError), f"Watch ended early: {event}")
            change = event.WhichOneof("change")
            if change == "xcom":
                seen.append("xcom:" + event.xcom.key)
            elif change == "state":
                seen.append(self.pb2.TaskState.Name(event.state.state).removeprefix("TASK_STATE_"))
        require(seen[:3] == ["RUNNING", "xcom:return_value", "SUCCESS"],
                f"Watch saw {seen}, expected RUNNING, xcom:return_value, SUCCESS first")
        call.cancel()
        thread.join(CALL_TIMEOUT_S)
        self.passed("Watch opened before the first request sees running, the return_value XCom, success")

    def check_xcoms(self, stub):
        """Pull, GetState and Watch from grpcio after the requests above."""
        grpc, pb2 = self.grpc, self.pb2
        key = EXAMPLE_KEY
        where = dict(dag_id=key["dag_id"], run_id=key["run_id"], task_id=key["task_id"])
        response = stub.Pull(pb2.PullRequest(**where), timeout=CALL_TIMEOUT_S)  # key and map_index unset
        require(len(response.xcoms) == 1 and response.xcoms[0].key == "return_value",
                f"Pull of return_value got {response}")
        self.check_reply(response.xcoms[0].value_json, "the pulled return_value")
        require(response.xcoms[0].attempt == 1 and response.xcoms[0].sequence > 0,
                f"Pull: attempt {response.xcoms[0].attempt}, sequence {response.xcoms[0].sequence}")
        self.passed("Pull of return_value (key and map_index left unset) -> the last reply")

        details = self.expect_error(stub, "Pull of a key never pushed", pb2.PullRequest(key="never", **where),
                                    grpc.StatusCode.NOT_FOUND, method=stub.Pull)
        self.passed("Pull of a key never pushed -> NOT_FOUND", details)
        details = self.expect_error(stub, "waiting Pull of a key never pushed",
                                    pb2.PullRequest(key="never", wait=True, **where),
                                    grpc.StatusCode.DEADLINE_EXCEEDED, timeout=0.3, method=stub.Pull)
        self.passed("waiting Pull of a key never pushed -> DEADLINE_EXCEEDED at its deadline", details)
        details = self.expect_error(stub, "Pull without task_id",
                                    pb2.PullRequest(dag_id=key["dag_id"], run_id=key["run_id"]),
                                    grpc.StatusCode.INVALID_ARGUMENT, method=stub.Pull)
        self.passed("Pull without task_id -> INVALID_ARGUMENT", details)

        state = stub.GetState(pb2.GetStateRequest(task_instance=self.key()), timeout=CALL_TIMEOUT_S)
        require(state.state == pb2.TASK_STATE_SUCCESS and state.since_us > 0,
                f"GetState: {pb2.TaskState.Name(state.state)} since {state.since_us}")
        self.passed("GetState -> TASK_STATE_SUCCESS after the last reply")
        details = self.expect_error(stub, "GetState of an unknown key",
                                    pb2.GetStateRequest(task_instance=self.key(dag_id="no_such_dag")),
                                    grpc.StatusCode.NOT_FOUND, method=stub.GetState)
        self.passed("GetState of an unknown key -> NOT_FOUND", details)

        call = stub.Watch(pb2.WatchRequest(from_start=True, **where), timeout=CALL_TIMEOUT_S)
        kinds = set()
        for response in call:
            kinds.update(event.WhichOneof("change") for event in response.events)
            if {"xcom", "state"} <= kinds:
                break
        call.cancel()
        require({"xcom", "state"} <= kinds, f"Watch from_start replayed only {kinds}")
        self.passed("Watch(from_start=True) replays XComs and state changes")

    def check_list_and_stats(self, stub):
        """List and Stats from grpcio after the requests above."""
        grpc, pb2 = self.grpc, self.pb2
        listed = stub.List(pb2.ListRequest(), timeout=CALL_TIMEOUT_S)
        require(len(listed.endpoints) == 1 and listed.total_matching == 1 and not listed.next_page_token,
                f"List: {listed}")
        info = listed.endpoints[0]
        require(info.state.task_instance == self.key() and info.state.state == pb2.TASK_STATE_SUCCESS
                and info.queued_requests == 0 and not info.holding_request, f"List: {info}")
        filtered = stub.List(pb2.ListRequest(dag_id="no_such_dag"), timeout=CALL_TIMEOUT_S)
        require(len(filtered.endpoints) == 0 and filtered.total_matching == 0, f"List filtered: {filtered}")
        details = self.expect_error(stub, "List with a bad page_token", pb2.ListRequest(page_token="nonsense"),
                                    grpc.StatusCode.INVALID_ARGUMENT, method=stub.List)
        self.passed("List -> the example endpoint, its state and queue; a filter; a bad token", details)

        stats = stub.Stats(pb2.StatsRequest(), timeout=CALL_TIMEOUT_S)
        methods = {method.method: method for method in stats.methods}
        require(list(methods) == ["Send", "Exchange", "Pull", "GetState", "Watch", "List", "Stats"],
                f"Stats methods: {list(methods)}")
        send = {count.code: count.count for count in methods["Send"].statuses}
        # The calls above: NOT_FOUND 1 (unknown key), INVALID_ARGUMENT 3, RESOURCE_EXHAUSTED 0 (refused by
        # gRPC before the service), DEADLINE_EXCEEDED or OK for the 1 ms call; many OK.
        require(send.get(5, 0) == 1 and send.get(3, 0) == 3 and send.get(0, 0) > CONCURRENT_CALLS,
                f"Stats Send statuses: {send}")
        latency_count = sum(bucket.count for bucket in methods["Send"].latency)
        require(latency_count == sum(send.values()), f"Stats Send latency count {latency_count} vs {send}")
        require(stats.endpoints == 1 and stats.requests_in_flight == 0 and stats.uptime_us > 0, f"Stats: {stats}")
        self.passed("Stats -> Send counted by status code with a latency histogram",
                    f"Send {sorted(send.items())}")

    def check_health_and_reflection(self, channel):
        """gRPC's standard services, called with raw bytes: no stubs, no proto files."""
        grpc = self.grpc
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        answer = check(b"", timeout=CALL_TIMEOUT_S)  # HealthCheckRequest{service: ""}
        require(answer == b"\x08\x01", f"Health/Check -> {answer!r}, expected SERVING (08 01)")
        self.passed("grpc.health.v1.Health/Check -> SERVING")

        reflect = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
        responses = list(reflect(iter([b"\x3a\x01*"]), timeout=CALL_TIMEOUT_S))  # list_services: "*"
        require(len(responses) == 1, f"reflection answered {len(responses)} messages")
        names = []
        for number, value in proto_fields(responses[0]):
            if number == 6:  # list_services_response
                for service_number, service in proto_fields(value):
                    if service_number == 1:
                        names.extend(name.decode() for n, name in proto_fields(service) if n == 1)
        require("remote_xcomm.v1.RemoteXComm" in names, f"reflection lists {names}")
        self.passed("reflection lists the services", ", ".join(sorted(names)))

    def check_hostile_input(self, channel, stub):
        """Bad input from stock grpcio, with raw bytes where the stubs refuse to send it (docs/protocol.md,
        "Limits" and "Bad input"): each gets a precise, short status; after each the server answers, and
        requests queued before them are answered too."""
        grpc, pb2 = self.grpc, self.pb2
        # Queued behind one another at the example endpoint (its task works 20 ms per request) while
        # the rows run: none may be lost.
        queued = [stub.Send.future(self.request(self.payload(queued=i)), timeout=CONCURRENT_TIMEOUT_S)
                  for i in range(5)]

        def refused(what, call, request, code, names):
            try:
                response = call(request, timeout=CALL_TIMEOUT_S)
            except grpc.RpcError as error:
                details = error.details() or ""
                require(error.code() == code, f"{what}: expected {code.name}, got {error.code().name}: {details}")
                require(names in details, f"{what}: the message does not say {names!r}: {details!r}")
                require(len(details) < 400, f"{what}: a {len(details)}-character message")
                self.expect_answer(stub, f"call after {what}")
                return details
            raise CheckFailed(f"{what}: expected {code.name}, got OK with {response!r}")

        details = refused("an 8,000-byte dag_id", stub.Send, self.request("{}", self.key(dag_id="d" * 8000)),
                          grpc.StatusCode.INVALID_ARGUMENT, "key.dag_id is 8000 bytes")
        self.passed("an 8,000-byte dag_id -> INVALID_ARGUMENT, readable, then the server answers", details)

        # An unknown method is gRPC's UNIMPLEMENTED, with an empty message that never quotes the path;
        # a path that makes the request's headers pass gRPC's 8 KiB metadata limit is refused by the
        # server's gRPC transport before any method lookup, with a readable RESOURCE_EXHAUSTED.
        # gRPC's transport may close the connection after headers over its limit: a channel (and a
        # connection: grpcio shares them between channels by default) of its own.
        for length, code in ((1024, grpc.StatusCode.UNIMPLEMENTED), (10240, grpc.StatusCode.RESOURCE_EXHAUSTED)):
            side = grpc.insecure_channel(f"127.0.0.1:{self.port}", options=[("grpc.use_local_subchannel_pool", 1)])
            method = side.unary_unary("/remote_xcomm.v1.RemoteXComm/" + "M" * length)
            try:
                method(b"", timeout=CALL_TIMEOUT_S, wait_for_ready=True)
                raise CheckFailed(f"a {length}-byte method path: expected {code.name}, got OK")
            except grpc.RpcError as error:
                details = error.details() or ""
                require(error.code() == code and len(details) < 400,
                        f"a {length}-byte method path: expected {code.name}, got {error.code().name}: {details}")
            finally:
                side.close()
            self.expect_answer(stub, f"call after a {length}-byte method path")
            self.passed(f"a {length}-byte method path -> {code.name}, readable, then the server answers", details)

        # Raw bytes: a string field holding \xff (grpcio's stubs refuse to build such a message).
        bad = b"bad\xff"
        key = bytes([0x0a, len(bad)]) + bad + b"\x12\x01t\x1a\x01r\x20\x01"
        rows = [
            ("Send", bytes([0x0a, len(key)]) + key + b"\x12\x02{}", "key.dag_id is not valid UTF-8"),
            ("Pull", b"\x0a\x03dag\x12\x03run\x1a" + bytes([len(bad)]) + bad, "task_id is not valid UTF-8"),
            ("GetState", bytes([0x0a, len(key)]) + key, "task_instance.dag_id is not valid UTF-8"),
            ("List", b"\x12" + bytes([len(bad)]) + bad, "run_id is not valid UTF-8"),
            ("Send", b"\x0a\x05ab", "malformed protobuf"),
        ]
        for method, request, names in rows:
            call = channel.unary_unary(f"/remote_xcomm.v1.RemoteXComm/{method}")
            details = refused(f"{method} with {names}", call, request, grpc.StatusCode.INVALID_ARGUMENT, names)
            self.passed(f"{method}: {names} -> INVALID_ARGUMENT, then the server answers", details)
        watch = channel.unary_stream("/remote_xcomm.v1.RemoteXComm/Watch")
        try:
            list(watch(b"\x0a\x03dag\x12" + bytes([len(bad)]) + bad, timeout=CALL_TIMEOUT_S))
            raise CheckFailed("Watch with a run_id that is not UTF-8: expected INVALID_ARGUMENT, got OK")
        except grpc.RpcError as error:
            require(error.code() == grpc.StatusCode.INVALID_ARGUMENT and "run_id is not valid UTF-8" in error.details(),
                    f"Watch with a bad run_id: {error.code().name}: {error.details()}")
        self.passed("Watch: run_id is not valid UTF-8 -> INVALID_ARGUMENT")

        details = refused("exponent 2147483648", stub.Send, self.request('{"a":1e2147483648}'),
                          grpc.StatusCode.INVALID_ARGUMENT, "number too large for a double")
        self.passed("{\"a\":1e2147483648} -> INVALID_ARGUMENT (too large for a double)", details)
        self.expect_answer(stub, "exponent -2147483648", payload_json='{"a":1e-2147483648}')
        self.passed("{\"a\":1e-2147483648} reads as 0 and is answered")

        for i, future in enumerate(queued):
            try:
                self.check_reply(future.result(timeout=CONCURRENT_TIMEOUT_S).reply_json, f"queued request {i}")
            except grpc.RpcError as error:
                raise CheckFailed(f"queued request {i} failed: {error.code().name}: {error.details()}") from None
        self.passed("the requests queued while the bad ones came were all answered")

    def check_example_client(self):
        command = [sys.executable, self.args.client, "--url", "127.0.0.1", "--port", str(self.port),
                   "--timeout", str(CALL_TIMEOUT_S), "--stubs", self.args.stubs]
        try:
            done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=CLIENT_PROCESS_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise CheckFailed(f"examples/python/client.py did not finish within {CLIENT_PROCESS_TIMEOUT_S:.0f} s") \
                from None
        require(done.returncode == 0, f"examples/python/client.py exited with status {done.returncode}:\n"
                                      f"stdout: {done.stdout}\nstderr: {done.stderr}")
        lines = done.stdout.strip().splitlines()
        require(len(lines) == 1, f"examples/python/client.py should print one line, printed: {done.stdout!r}")
        self.check_reply(lines[0], "examples/python/client.py")
        self.passed("examples/python/client.py gets the task's reply", lines[0])

    def check_exchange(self, stub):
        """The Exchange stream from grpcio: batches, ids, per-frame errors, then a clean end."""
        grpc, pb2 = self.grpc, self.pb2
        good = [pb2.ExchangeFrame(id=i, key=self.key(), payload_json=self.payload(frame=i)) for i in range(10)]
        bad = [pb2.ExchangeFrame(id=100, key=self.key(), payload_json="{not json"),
               pb2.ExchangeFrame(id=101, key=self.key(dag_id="no_such_dag"), payload_json="{}"),
               pb2.ExchangeFrame(id=102, cancel=True)]
        frames = good + bad
        batches = [pb2.ExchangeRequest(frames=frames[:6]), pb2.ExchangeRequest(frames=frames[6:])]
        # The iterator ends after the last batch: grpcio half-closes, and the server must still
        # answer every request before it ends the stream with OK.
        call = stub.Exchange(iter(batches), timeout=CONCURRENT_TIMEOUT_S)
        replies = {}
        try:
            for response in call:
                for reply in response.replies:
                    require(reply.id not in replies, f"Exchange: request {reply.id} answered twice")
                    replies[reply.id] = reply
        except grpc.RpcError as error:
            raise CheckFailed(f"Exchange: the stream failed with {error.code().name}: {error.details()}") from None
        require(call.code() == grpc.StatusCode.OK, f"Exchange: the stream ended with {call.code().name}")
        require(sorted(replies) == [frame.id for frame in frames],
                f"Exchange: replies for {sorted(replies)}, expected one for each of {[f.id for f in frames]}")
        outputs = set()
        for frame in good:
            reply = replies[frame.id]
            require(reply.code == 0, f"Exchange: request {frame.id} failed with {reply.code}: {reply.message}")
            outputs.add(self.check_reply(reply.reply_json, f"Exchange request {frame.id}"))
        require(len(outputs) == len(good), f"Exchange: {len(good)} requests got {len(outputs)} distinct outputs")
        expected = {100: grpc.StatusCode.INVALID_ARGUMENT, 101: grpc.StatusCode.NOT_FOUND, 102: grpc.StatusCode.NOT_FOUND}
        for frame_id, code in expected.items():
            reply = replies[frame_id]
            require(reply.code == code.value[0],
                    f"Exchange: frame {frame_id} expected {code.name}, got {reply.code}: {reply.message}")
        self.passed(f"Exchange: {len(good)} requests in 2 batches answered by id; bad JSON, unknown key and "
                    "a cancel of an unknown id get their own errors; the stream ends OK")

    def check_concurrent_calls(self, stub):
        futures = [stub.Send.future(self.request(self.payload(call=i)), timeout=CONCURRENT_TIMEOUT_S)
                   for i in range(CONCURRENT_CALLS)]
        outputs = []
        for i, future in enumerate(futures):
            try:
                # Each call carries its own deadline, so result() returns within CONCURRENT_TIMEOUT_S.
                response = future.result()
            except self.grpc.RpcError as error:
                raise CheckFailed(f"concurrent call {i} failed with {error.code().name}: {error.details()}") from None
            outputs.append(self.check_reply(response.reply_json, f"concurrent call {i}"))
        require(len(set(outputs)) == CONCURRENT_CALLS,
                f"{CONCURRENT_CALLS} concurrent calls got only {len(set(outputs))} distinct outputs")
        self.passed(f"{CONCURRENT_CALLS} concurrent calls all answered, each with its own output")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True, help="the built C++ example server (examples/server.cpp)")
    parser.add_argument("--stubs", required=True, help="directory of the generated remote_xcomm/v1/*_pb2*.py")
    parser.add_argument("--client", required=True, help="examples/python/client.py")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each check as it passes")
    args = parser.parse_args()
    for path in (args.server, args.client):
        if not os.path.isfile(path):
            parser.error(f"no such file: {path}")

    started = time.monotonic()
    interop = None
    try:
        interop = Interop(args)
        port = interop.run()
    except CheckFailed as failure:
        if interop is not None:
            print("\n".join(interop.log), file=sys.stderr)
            if getattr(interop, "server", None) is not None:
                print(interop.server.output(), file=sys.stderr)
        print(f"run_interop: FAIL: {failure}", file=sys.stderr)
        return 1
    if args.verbose:
        print("\n".join(interop.log))
    print(f"run_interop: PASS: {interop.checks} checks, grpcio {interop.grpc.__version__} client vs C++ example "
          f"server on 127.0.0.1:{port}, {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
