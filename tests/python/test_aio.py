"""(d) rx.aio: concurrent awaits, errors, and cancellation that cancels the gRPC call."""

import asyncio
import signal
import unittest

import remote_xcomm as rx

import support


class Aio(unittest.TestCase):
    def test_concurrent_awaits_each_get_their_own_reply(self):
        with support.ServerProcess(support.python_server_command()) as server:
            async def scheduler():
                calls = [rx.aio.requests(port=server.port, data=support.example_data(index=i)) for i in range(20)]
                return await asyncio.wait_for(asyncio.gather(*calls), timeout=60)

            replies = asyncio.run(scheduler())
            self.assertEqual([reply["echo"]["xcoms"]["index"] for reply in replies], list(range(20)))
            self.assertEqual(server.stop(signal.SIGTERM), 0, server.output())

    def test_failed_await_raises_rpc_error_and_others_complete(self):
        with support.ServerProcess(support.python_server_command()) as server:
            async def scheduler():
                good = rx.aio.requests(port=server.port, data=support.example_data())
                bad = rx.aio.requests(port=server.port, data=dict(support.example_data(), task_id="nope"))
                return await asyncio.gather(good, bad, return_exceptions=True)

            reply, error = asyncio.run(scheduler())
            self.assertEqual(reply["output_key"], "hello_world")
            self.assertIsInstance(error, rx.RpcError)
            self.assertIs(error.code, rx.StatusCode.NOT_FOUND)
            self.assertEqual(server.stop(signal.SIGTERM), 0, server.output())

    def test_cancelling_the_task_cancels_the_call(self):
        # The task sleeps 2 s per request. Cancelling the first await cancels its RPC: the task's
        # push then fails (request_cancelled), and a second call still gets its reply.
        with support.ServerProcess(support.python_server_command("--sleep", "2")) as server:
            async def scheduler():
                call = asyncio.ensure_future(rx.aio.requests(port=server.port, data=support.example_data(n=1)))
                await asyncio.sleep(0.3)
                call.cancel()
                with self.assertRaises(asyncio.CancelledError):
                    await call
                return await rx.aio.requests(port=server.port, data=support.example_data(n=2), timeout=60)

            reply = asyncio.run(scheduler())
            self.assertEqual(reply["echo"]["xcoms"], {"n": 2})
            self.assertEqual(server.stop(signal.SIGTERM), 0, server.output())
            self.assertTrue(any("request_cancelled" in line for line in server.errors), server.output())

    def test_aio_pull_waits_for_the_xcom(self):
        with support.ServerProcess(support.python_server_command("--sleep", "0.5")) as server:
            async def scheduler():
                pull = rx.aio.pull(port=server.port, dag_id="example_dag", run_id="manual__2026-11-29",
                                   task_id="hello_task", key="seen", wait=True, timeout=60)
                send = rx.aio.requests(port=server.port, data=support.example_data(tag="pulled"))
                return await asyncio.gather(pull, send)

            [xcom], reply = asyncio.run(scheduler())
            self.assertEqual(xcom["value"], {"tag": "pulled"})
            self.assertEqual(reply["output_key"], "hello_world")
            self.assertEqual(server.stop(signal.SIGTERM), 0, server.output())


if __name__ == "__main__":
    unittest.main()
