"""(b) Python and C++ clients and servers, in every pairing (C++ to C++ is the C++ suite's)."""

import json
import signal
import subprocess
import unittest

import remote_xcomm as rx

import support


def cpp_client(port, count):
    return subprocess.run([support.example_binary("client"), "--url", "127.0.0.1", "--port", str(port), "-n",
                           str(count)], capture_output=True, text=True, timeout=60)


class Interop(unittest.TestCase):
    def test_python_client_to_cpp_server(self):
        with support.ServerProcess([support.example_binary("server"), "--port", "0"]) as server:
            for attempt in range(3):
                reply = rx.requests(url="127.0.0.1", port=server.port, data=support.example_data(attempt=attempt))
                self.assertEqual(reply["output_key"], "hello_world")
                self.assertEqual(len(reply["output"]), 36)
            # The C++ task pushes nothing by key; its reply is pullable as return_value.
            [xcom] = rx.pull(port=server.port, dag_id="example_dag", run_id="manual__2026-11-29",
                             task_id="hello_task")
            self.assertEqual(xcom["key"], "return_value")
            self.assertEqual(xcom["value"]["output_key"], "hello_world")
            self.assertEqual(server.stop(signal.SIGTERM), 0, server.output())

    def test_cpp_client_to_python_server(self):
        with support.ServerProcess(support.python_server_command()) as server:
            result = cpp_client(server.port, 3)
            self.assertEqual(result.returncode, 0, result.stderr + server.output())
            replies = [json.loads(line) for line in result.stdout.splitlines()]
            self.assertEqual([reply["output_key"] for reply in replies], ["hello_world"] * 3)
            self.assertEqual([reply["echo"]["xcoms"]["attempt"] for reply in replies], [0, 1, 2])
            self.assertEqual(server.stop(signal.SIGINT), 0, server.output())

    def test_python_client_to_python_server(self):
        with support.ServerProcess(support.python_server_command()) as server:
            result = subprocess.run(support.python_client_command(server.port, count=2), capture_output=True,
                                    text=True, timeout=60)
            self.assertEqual(result.returncode, 0, result.stderr + server.output())
            self.assertEqual(len(result.stdout.splitlines()), 2)
            reply = rx.requests(port=server.port, data=support.example_data(note="in process"))
            self.assertEqual(reply["echo"]["xcoms"], {"note": "in process"})
            self.assertEqual(server.stop(signal.SIGTERM), 0, server.output())


if __name__ == "__main__":
    unittest.main()
