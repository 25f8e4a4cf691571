"""(e) Ctrl-C (SIGINT) and SIGTERM stop a serving Python process cleanly and promptly."""

import signal
import subprocess
import threading
import unittest

import remote_xcomm as rx

import support


class Signals(unittest.TestCase):
    def test_sigint_stops_an_idle_server_cleanly(self):
        server = support.ServerProcess(support.python_server_command())
        status = server.stop(signal.SIGINT, timeout=10)
        self.assertEqual(status, 0, server.output())
        self.assertIn("remote_xcomm: signal 2 received, shutting down", server.lines)
        self.assertIn("server.py: connect_ti_function returned 2", server.lines)
        self.assertFalse([line for line in server.errors if "Traceback" in line], server.output())

    def test_sigterm_stops_an_idle_server_cleanly(self):
        server = support.ServerProcess(support.python_server_command())
        self.assertEqual(server.stop(signal.SIGTERM, timeout=10), 0, server.output())
        self.assertIn("server.py: connect_ti_function returned 15", server.lines)

    def test_sigint_while_task_code_waits_in_get_stops_cleanly(self):
        server = support.ServerProcess(support.python_server_command("--linger"))
        reply = rx.requests(port=server.port, data=support.example_data(), timeout=60)
        self.assertEqual(reply["output_key"], "hello_world")  # the task now waits in its second get()
        self.assertEqual(server.stop(signal.SIGINT, timeout=10), 0, server.output())
        self.assertIn("server.py: connect_ti_function returned 2", server.lines)

    def test_sigint_while_a_task_runs_fails_its_request_and_stops(self):
        self.check_signal_while_a_task_runs(signal.SIGINT)

    def test_sigterm_while_a_task_runs_fails_its_request_and_stops(self):
        self.check_signal_while_a_task_runs(signal.SIGTERM)

    def check_signal_while_a_task_runs(self, signal_number):
        server = support.ServerProcess(support.python_server_command("--sleep", "30"))
        outcome = {}

        def call():
            try:
                outcome["reply"] = rx.requests(port=server.port, data=support.example_data(), timeout=60)
            except rx.RpcError as error:
                outcome["error"] = error

        caller = threading.Thread(target=call)
        caller.start()
        # Wait for the task to hold the request: its state becomes "running".
        watch = rx.watch(port=server.port, dag_id="example_dag", run_id="manual__2026-11-29", from_start=True)
        for _ in range(50):
            event = watch.next(timeout=30)
            if event["kind"] == "state" and event["state"]["state"] == "running":
                break
        watch.cancel()
        status = server.stop(signal_number, timeout=10)  # far less than the task's 30 s sleep
        caller.join(timeout=30)
        self.assertFalse(caller.is_alive())
        self.assertEqual(status, 0, server.output())
        self.assertIn("error", outcome)
        self.assertIn(outcome["error"].code, (rx.StatusCode.INTERNAL, rx.StatusCode.UNAVAILABLE))
        self.assertIn(f"server.py: connect_ti_function returned {int(signal_number)}", server.lines)

    def test_ctrl_c_interrupts_a_blocking_request(self):
        server = support.ServerProcess(support.python_server_command("--sleep", "30"))
        try:
            script = ("import remote_xcomm as rx, support\n"
                      "try:\n"
                      f"    rx.requests(port={server.port}, data=support.example_data(), timeout=60)\n"
                      "except KeyboardInterrupt:\n"
                      "    print('interrupted', flush=True)\n")
            client = subprocess.Popen([support.sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                                      cwd=support.HERE)
            watch = rx.watch(port=server.port, dag_id="example_dag", run_id="manual__2026-11-29", from_start=True)
            for _ in range(50):
                event = watch.next(timeout=30)
                if event["kind"] == "state" and event["state"]["state"] == "running":
                    break
            watch.cancel()
            client.send_signal(signal.SIGINT)
            out, _ = client.communicate(timeout=10)
            self.assertEqual(client.returncode, 0)
            self.assertEqual(out.strip(), "interrupted")
        finally:
            self.assertEqual(server.stop(signal.SIGTERM, timeout=10), 0, server.output())


if __name__ == "__main__":
    unittest.main()
