#!/usr/bin/python3
"""Interop test of docs/security.md: stock grpcio against `rxcomm serve` with TLS and a scheduler token.

Registered with CTest as PythonGrpcioSecurityStatuses by tests/python_interop.cmake:

    /usr/bin/python3 run_security_interop.py --rxcomm build/rxcomm --stubs build/tests/python_stubs \
        --make-ca tests/helpers/make_test_ca.sh

It makes a throw-away CA (make_test_ca.sh, in a temporary directory), starts `rxcomm serve` on port 0
of loopback with TLS and a scheduler token, and checks with grpcio's own TLS credentials: no token ->
UNAUTHENTICATED, a wrong token -> PERMISSION_DENIED (Send and List), the token -> served; the health
service needs no token; a plain-text channel and a channel trusting another CA -> UNAVAILABLE. Then
SIGTERM, exit status 0. Every wait is bounded. Exit 0 and a one-line summary on success, 1 and the
reason (with the server's stderr) on failure.
"""

import argparse
import os
import signal
import subprocess
import sys
import tempfile

TOKEN = "interop-scheduler-token-5a1f"
CALL_TIMEOUT_S = 10.0
STARTUP_TIMEOUT_S = 20.0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rxcomm", required=True)
    parser.add_argument("--stubs", required=True)
    parser.add_argument("--make-ca", required=True)
    args = parser.parse_args()
    sys.path.insert(0, os.path.abspath(args.stubs))
    import grpc
    from remote_xcomm.v1 import remote_xcomm_pb2 as pb2, remote_xcomm_pb2_grpc as pb2_grpc

    with tempfile.TemporaryDirectory(prefix="rx-interop-ca-") as ca:
        subprocess.run([args.make_ca, ca], check=True, timeout=60)

        def pem(name):
            with open(os.path.join(ca, name), "rb") as file:
                return file.read()

        server = subprocess.Popen(
            [args.rxcomm, "serve", "-n", "1", "--tls-cert", os.path.join(ca, "server.pem"), "--tls-key",
             os.path.join(ca, "server.key"), "--scheduler-token", TOKEN],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        checks = []
        try:
            target = read_target(server)
            trusted = grpc.ssl_channel_credentials(root_certificates=pem("ca.pem"))
            key = pb2.TaskInstanceKey(dag_id="rxcomm", task_id="echo-0", run_id="demo", map_index=-1)
            request = pb2.SendRequest(key=key, payload_json='{"a": 1}')

            def expect(code, call, what):
                try:
                    call()
                    got = grpc.StatusCode.OK
                except grpc.RpcError as error:
                    got = error.code()
                if got != code:
                    raise AssertionError(f"{what}: expected {code.name}, got {got.name}")
                checks.append(what)

            with grpc.secure_channel(target, trusted) as channel:
                stub = pb2_grpc.RemoteXCommStub(channel)
                expect(grpc.StatusCode.UNAUTHENTICATED, lambda: stub.Send(request, timeout=CALL_TIMEOUT_S),
                       "Send without a token")
                expect(grpc.StatusCode.UNAUTHENTICATED,
                       lambda: stub.Send(request, timeout=CALL_TIMEOUT_S, metadata=(("authorization", TOKEN),)),
                       "Send with a token that is not Bearer")
                wrong = (("authorization", "Bearer not-the-token"),)
                expect(grpc.StatusCode.PERMISSION_DENIED,
                       lambda: stub.Send(request, timeout=CALL_TIMEOUT_S, metadata=wrong), "Send with a wrong token")
                expect(grpc.StatusCode.PERMISSION_DENIED,
                       lambda: stub.List(pb2.ListRequest(), timeout=CALL_TIMEOUT_S, metadata=wrong),
                       "List with a wrong token")
                right = (("authorization", "Bearer " + TOKEN),)
                reply = stub.Send(request, timeout=CALL_TIMEOUT_S, metadata=right)
                if reply.reply_json.replace(" ", "") != '{"a":1}':
                    raise AssertionError(f"Send with the token: unexpected reply {reply.reply_json!r}")
                checks.append("Send with the token")
                health = channel.unary_unary("/grpc.health.v1.Health/Check")
                answer = health(b"", timeout=CALL_TIMEOUT_S)  # HealthCheckRequest{}: no token
                if answer != b"\x08\x01":  # status: SERVING
                    raise AssertionError(f"health check without a token: unexpected answer {answer!r}")
                checks.append("health without a token")
            with grpc.insecure_channel(target) as channel:
                expect(grpc.StatusCode.UNAVAILABLE,
                       lambda: pb2_grpc.RemoteXCommStub(channel).Send(request, timeout=CALL_TIMEOUT_S),
                       "a plain-text channel to the TLS server")
            other = grpc.ssl_channel_credentials(root_certificates=pem("other_ca.pem"))
            with grpc.secure_channel(target, other) as channel:
                expect(grpc.StatusCode.UNAVAILABLE,
                       lambda: pb2_grpc.RemoteXCommStub(channel).Send(request, timeout=CALL_TIMEOUT_S),
                       "a channel trusting another CA")
            server.send_signal(signal.SIGTERM)
            status = server.wait(timeout=STARTUP_TIMEOUT_S)
            if status != 0:
                raise AssertionError(f"rxcomm serve exited with {status} after SIGTERM")
        except Exception as error:  # noqa: BLE001 - report anything, with the server's output
            if server.poll() is None:
                server.kill()
            _, err = server.communicate(timeout=10)
            print(f"FAILED: {error}\n--- rxcomm serve stderr ---\n{err}", file=sys.stderr)
            return 1
    print(f"grpcio security interop: {len(checks)} checks passed ({', '.join(checks)})")
    return 0


def read_target(server):
    """The one line `rxcomm serve` prints once it listens, within STARTUP_TIMEOUT_S."""
    import selectors
    selector = selectors.DefaultSelector()
    selector.register(server.stdout, selectors.EVENT_READ)
    if not selector.select(timeout=STARTUP_TIMEOUT_S):
        raise AssertionError(f"rxcomm serve printed nothing within {STARTUP_TIMEOUT_S:.0f} s")
    line = server.stdout.readline().strip()
    if not line:
        raise AssertionError("rxcomm serve exited before it listened")
    # "127.0.0.1:PORT": the certificate names 127.0.0.1 (and localhost), so both work as the target.
    return line


if __name__ == "__main__":
    sys.exit(main())
