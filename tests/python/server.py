#!/usr/bin/python3
"""The prototype's test/server.py on the C++ engine: serves one DummyTaskInstance until Ctrl-C.

    python3 server.py --port 0        # prints: remote_xcomm: serving KEY on 127.0.0.1:PORT

--sleep makes each request take that long (the deadline test); --fail makes the task raise;
--linger makes it wait in a second get() after replying.
"""

import argparse
import threading
import time
import uuid

import remote_xcomm as rx


class DummyTaskInstance:
    dag_id = "example_dag"
    task_id = "hello_task"
    run_id = "manual__2026-11-29"
    map_index = -1

    def __init__(self, sleep=0.0, fail=False, linger=False):
        self.sleep = sleep
        self.fail = fail
        self.linger = linger

    def _run_raw_task(self, mark_success=None, test_mode=None, job_id=None, pool=None, session=None):
        req_payloads = self.rxcomm.get()
        if self.fail:
            raise ValueError(f"the task failed on purpose for {req_payloads.get('xcoms')}")
        time.sleep(self.sleep)
        self.rxcomm.xcom_push("seen", req_payloads.get("xcoms"))
        resp_payloads = {"output": str(uuid.uuid4()), "output_key": "hello_world", "echo": req_payloads,
                         "task_thread": threading.current_thread().name}
        self.rxcomm.push(resp_payloads)
        if self.linger:  # wait in get() for the next request, inside this invocation
            self.rxcomm.get()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("-p", "--port", type=int, default=8081)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--fail", action="store_true")
    parser.add_argument("--linger", action="store_true")
    args = parser.parse_args()

    ti = DummyTaskInstance(sleep=args.sleep, fail=args.fail, linger=args.linger)
    stopped_by = rx.connect_ti_function(port=args.port, ti=ti, func="_run_raw_task")  # HERE!
    print(f"server.py: connect_ti_function returned {stopped_by}", flush=True)
