"""(c) Failed calls raise RpcError carrying the gRPC status; bad payloads fail before sending."""

import math
import signal
import threading
import time
import unittest

import remote_xcomm as rx

import support


class Errors(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = support.ServerProcess(support.python_server_command("--sleep", "3"))

    @classmethod
    def tearDownClass(cls):
        cls.server.stop(signal.SIGTERM)
        cls.server.kill()

    def test_unknown_key_raises_not_found(self):
        data = dict(support.example_data(), task_id="no_such_task")
        with self.assertRaises(rx.RpcError) as raised:
            rx.requests(port=self.server.port, data=data)
        self.assertIs(raised.exception.code, rx.StatusCode.NOT_FOUND)
        self.assertEqual(raised.exception.code.name, "NOT_FOUND")
        self.assertEqual(int(raised.exception.code), 5)
        self.assertIn("no_such_task", raised.exception.details)
        self.assertIsInstance(raised.exception, rx.Error)

    def test_short_timeout_against_a_sleeping_task_raises_deadline_exceeded(self):
        with self.assertRaises(rx.RpcError) as raised:
            rx.requests(port=self.server.port, data=support.example_data(), timeout=0.2)
        self.assertIs(raised.exception.code, rx.StatusCode.DEADLINE_EXCEEDED)

    def test_a_blocking_call_lets_other_python_threads_run(self):
        # The task sleeps 3 s. Were the GIL held during the wait, this thread could not take its
        # 50 short sleeps before the call ended.
        started = threading.Event()
        caller = threading.Thread(target=lambda: (started.set(), rx.requests(port=self.server.port,
                                                                             data=support.example_data())))
        caller.start()
        started.wait(timeout=30)
        for _ in range(50):
            time.sleep(0.001)
        self.assertTrue(caller.is_alive())
        caller.join(timeout=60)

    def test_nobody_listening_raises_unavailable(self):
        with self.assertRaises(rx.RpcError) as raised:
            rx.requests(port=1, data=support.example_data(), timeout=10)
        self.assertIs(raised.exception.code, rx.StatusCode.UNAVAILABLE)

    def test_pull_of_a_missing_xcom_raises_not_found(self):
        with self.assertRaises(rx.RpcError) as raised:
            rx.pull(port=self.server.port, dag_id="example_dag", run_id="manual__2026-11-29", task_id="hello_task",
                    key="never_pushed")
        self.assertIs(raised.exception.code, rx.StatusCode.NOT_FOUND)

    def test_data_without_a_key_raises_value_error(self):
        with self.assertRaises(ValueError):
            rx.requests(port=self.server.port, data={"xcoms": {}})

    def test_what_json_cannot_carry_is_refused_before_sending(self):
        port = 1  # nothing is sent: conversion fails first
        with self.assertRaisesRegex(TypeError, "set"):
            rx.requests(port=port, data=support.example_data(bad={1, 2}))
        with self.assertRaisesRegex(TypeError, "int"):
            rx.requests(port=port, data=dict(support.example_data(), **{"x": {1: "int key"}}))
        with self.assertRaises(OverflowError):
            rx.requests(port=port, data=support.example_data(big=2**64))
        with self.assertRaises(OverflowError):
            rx.requests(port=port, data=support.example_data(small=-2**63 - 1))
        for number in (math.nan, math.inf, -math.inf):
            with self.assertRaises(ValueError):
                rx.requests(port=port, data=support.example_data(number=number))
        looped = []
        looped.append(looped)
        with self.assertRaises(ValueError):
            rx.requests(port=port, data=support.example_data(looped=looped))
        with self.assertRaises(TypeError):
            rx.requests(port=port, data=["not", "a", "dict"])


class JsonRoundTrip(unittest.TestCase):
    def test_every_json_type_round_trips_through_a_task(self):
        with support.ServerProcess(support.python_server_command()) as server:
            sent = {"none": None, "true": True, "false": False, "zero": 0, "min": -2**63, "max_u64": 2**64 - 1,
                    "float": 2.5, "text": "héllo ✓", "empty": {}, "list": [1, [2, [3]], {"k": "v"}],
                    "tuple": (1, 2)}
            reply = rx.requests(port=server.port, data=support.example_data(**sent))
            echoed = reply["echo"]["xcoms"]
            self.assertEqual(echoed, dict(sent, tuple=[1, 2]))
            self.assertIs(echoed["true"], True)
            self.assertIsInstance(echoed["max_u64"], int)
            self.assertIsInstance(echoed["float"], float)
            self.assertEqual(server.stop(signal.SIGTERM), 0, server.output())


if __name__ == "__main__":
    unittest.main()
