#!/usr/bin/python3
"""Sends one dict to a task instance and prints its reply, as the prototype's test/client.py did.

This client uses only stock grpcio and stubs generated from proto/remote_xcomm/v1/remote_xcomm.proto;
it does not need the Remote XComm C++ library. See README.md next to it for how to generate the
stubs. Against the C++ example server (examples/server.cpp):

    ./server --port 8081 &
    /usr/bin/python3 client.py --stubs build/tests/python_stubs --port 8081

Exit status: 0 with the reply printed as JSON on stdout; 1 when the call fails (the gRPC status
code and details go to stderr); 2 for bad arguments or missing stubs.
"""

import argparse
import json
import os
import sys

STUBS_ENV = "REMOTE_XCOMM_PYTHON_STUBS"


def fail_setup(message):
    print(f"client.py: {message}", file=sys.stderr)
    sys.exit(2)


def import_stubs(stubs_dir):
    """Imports the generated modules, from `stubs_dir` when given, else from sys.path."""
    if stubs_dir:
        if not os.path.isfile(os.path.join(stubs_dir, "remote_xcomm", "v1", "remote_xcomm_pb2_grpc.py")):
            fail_setup(f"no generated stubs in {stubs_dir!r} (expected remote_xcomm/v1/remote_xcomm_pb2_grpc.py "
                       "there); see examples/python/README.md")
        sys.path.insert(0, os.path.abspath(stubs_dir))
    try:
        import grpc
        from remote_xcomm.v1 import remote_xcomm_pb2, remote_xcomm_pb2_grpc
    except ImportError as error:
        fail_setup(f"cannot import grpc or the generated stubs ({error}); pass --stubs DIR or set {STUBS_ENV}=DIR "
                   "to the directory protoc wrote them to (see examples/python/README.md), and run with a Python "
                   "that has grpcio and protobuf (e.g. /usr/bin/python3)")
    return grpc, remote_xcomm_pb2, remote_xcomm_pb2_grpc


def main():
    parser = argparse.ArgumentParser(description="Remote XComm example: send one payload to a task instance")
    parser.add_argument("-u", "--url", default="127.0.0.1", help="host of the task instance's server")
    parser.add_argument("-p", "--port", type=int, default=8081, help="port of the task instance's server")
    parser.add_argument("-t", "--timeout", type=float, default=30.0, help="deadline of the call, in seconds")
    parser.add_argument("--stubs", default=os.environ.get(STUBS_ENV),
                        help=f"directory holding the generated remote_xcomm/v1/*_pb2*.py (default: ${STUBS_ENV}, "
                             "else whatever is importable)")
    args = parser.parse_args()
    grpc, pb2, pb2_grpc = import_stubs(args.stubs)

    # The prototype's payload: the annotations that name the task instance, then the input XComs.
    # The annotations match the key of the C++ example server's DummyTaskInstance.
    data = {
        "dag_id": "example_dag",
        "task_id": "hello_task",
        "run_id": "manual__2026-11-29",
        "map_index": -1,
        "xcoms": {"greeting": "hello from the scheduler", "attempt": 0},
    }
    key = pb2.TaskInstanceKey(dag_id=data["dag_id"], task_id=data["task_id"], run_id=data["run_id"],
                              map_index=data["map_index"])
    request = pb2.SendRequest(key=key, payload_json=json.dumps(data))

    host = f"[{args.url}]" if ":" in args.url and not args.url.startswith("[") else args.url
    with grpc.insecure_channel(f"{host}:{args.port}") as channel:
        stub = pb2_grpc.RemoteXCommStub(channel)
        try:
            response = stub.Send(request, timeout=args.timeout)
        except grpc.RpcError as error:
            print(f"request failed: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    print(json.dumps(json.loads(response.reply_json)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
