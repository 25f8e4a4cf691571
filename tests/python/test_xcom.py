"""The XCom calls: a task's xcom_push, the scheduler's pull and watch."""

import signal
import unittest

import remote_xcomm as rx

import support

RUN = {"dag_id": "example_dag", "run_id": "manual__2026-11-29"}


class XComs(unittest.TestCase):
    def test_pull_and_watch_see_what_the_task_pushed(self):
        with support.ServerProcess(support.python_server_command()) as server:
            rx.requests(port=server.port, data=support.example_data(first=1))
            [seen] = rx.pull(port=server.port, task_id="hello_task", key="seen", **RUN)
            self.assertEqual(seen["value"], {"first": 1})
            self.assertEqual(seen["attempt"], 1)
            [returned] = rx.pull(port=server.port, task_id="hello_task", **RUN)
            self.assertEqual(returned["value"]["output_key"], "hello_world")

            watch = rx.watch(port=server.port, from_start=True, **RUN)
            kinds = []
            for _ in range(20):
                event = watch.next(timeout=30)
                kinds.append(event["kind"])
                if event["kind"] == "xcom" and event["xcom"]["key"] == "return_value":
                    break
            self.assertIn("state", kinds)
            self.assertEqual(kinds[-1], "xcom")
            last = watch.last_sequence
            self.assertGreater(last, 0)
            for _ in range(20):  # the rest of the history (the state changes), then a timed-out wait
                try:
                    last = watch.next(timeout=0.3)["sequence"]
                except TimeoutError:
                    break
            else:
                self.fail("the watch never ran out of events")
            rx.requests(port=server.port, data=support.example_data(second=2))
            for _ in range(20):  # the timed-out wait lost nothing: the new push comes through
                event = watch.next(timeout=30)
                if event["kind"] == "xcom" and event["xcom"]["key"] == "seen":
                    break
            self.assertEqual(event["xcom"]["value"], {"second": 2})
            self.assertGreater(event["sequence"], last)
            watch.cancel()
            self.assertEqual(list(watch), [])
            self.assertEqual(server.stop(signal.SIGTERM), 0, server.output())

    def test_waiting_pull_times_out_with_deadline_exceeded(self):
        with support.ServerProcess(support.python_server_command()) as server:
            with self.assertRaises(rx.RpcError) as raised:
                rx.pull(port=server.port, task_id="hello_task", key="never", wait=True, timeout=0.3, **RUN)
            self.assertIs(raised.exception.code, rx.StatusCode.DEADLINE_EXCEEDED)
            self.assertEqual(server.stop(signal.SIGTERM), 0, server.output())


if __name__ == "__main__":
    unittest.main()
