"""(a) The prototype's test/server.py and test/client.py, as processes, on the C++ engine."""

import json
import signal
import subprocess
import unittest

import support


class PrototypeScripts(unittest.TestCase):
    def test_client_script_gets_the_dummy_task_instances_replies(self):
        with support.ServerProcess(support.python_server_command()) as server:
            result = subprocess.run(support.python_client_command(server.port, count=3), capture_output=True,
                                    text=True, timeout=60)
            self.assertEqual(result.returncode, 0, result.stderr + server.output())
            replies = [json.loads(line) for line in result.stdout.splitlines()]
            self.assertEqual(len(replies), 3)
            for attempt, reply in enumerate(replies):
                self.assertEqual(reply["output_key"], "hello_world")
                self.assertEqual(len(reply["output"]), 36)  # a UUID
                # get() gave the task the whole dict the scheduler sent.
                self.assertEqual(reply["echo"], support.example_data(greeting="hello from the scheduler",
                                                                      attempt=attempt))
            self.assertEqual(len({reply["output"] for reply in replies}), 3)
            # Task code runs on the thread that called connect_ti_function, never on a gRPC thread.
            self.assertEqual({reply["task_thread"] for reply in replies}, {"MainThread"})
            self.assertEqual(server.stop(signal.SIGTERM), 0, server.output())
            self.assertIn("server.py: connect_ti_function returned 15", server.lines)

    def test_connect_ti_function_checks_func_and_method_before_serving(self):
        import remote_xcomm as rx

        class NotAnInstance:
            dag_id, task_id, run_id, map_index = "d", "t", "r", None

        with self.assertRaises(TypeError):
            rx.connect_ti_function(port=0, ti=NotAnInstance(), method="missing_but_checked", func="other")
        with self.assertRaises(AttributeError):
            rx.connect_ti_function(port=0, ti=NotAnInstance(), method="missing")


if __name__ == "__main__":
    unittest.main()
