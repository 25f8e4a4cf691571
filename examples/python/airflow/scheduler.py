#!/usr/bin/python3
"""A scheduler fanning out to the mapped task instances of one task (docs/airflow.md).

Starts N `task_run.py` processes (map indexes 0..N-1), as Airflow's executor would, reads the
port each one prints, sends every instance its own payload at once with `rx.aio.requests`, and
gathers the replies. Exits 0 when every mapped instance answered with the square of its input.

    PYTHONPATH=build/python python3 examples/python/airflow/scheduler.py --mapped 8
"""

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys

import remote_xcomm as rx

HERE = os.path.dirname(os.path.abspath(__file__))
SERVING = re.compile(r"^remote_xcomm: serving .+ on (?P<host>[^ ]+):(?P<port>\d+)$")
DAG_ID, TASK_ID, RUN_ID = "square_dag", "square", "manual__2026-12-03"


def start_workers(count):
    """One task_run.py process per map index, and the port each serves on."""
    workers = []
    for map_index in range(count):
        command = [sys.executable, os.path.join(HERE, "task_run.py"), DAG_ID, TASK_ID, RUN_ID,
                   "--map-index", str(map_index), "--port", "0"]
        workers.append(subprocess.Popen(command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True))
    ports = []
    for worker in workers:
        line = worker.stdout.readline().strip()  # the line connect_ti_function prints once it listens
        match = SERVING.match(line)
        if not match:
            raise RuntimeError(f"a worker did not start: {line!r}")
        ports.append(int(match["port"]))
    return workers, ports


async def fan_out(ports):
    """Every mapped instance gets its payload at once; the replies in map-index order."""
    calls = []
    for map_index, port in enumerate(ports):
        data = {"dag_id": DAG_ID, "task_id": TASK_ID, "run_id": RUN_ID, "map_index": map_index,
                "params": {"x": map_index + 1}}
        calls.append(rx.aio.requests(url="127.0.0.1", port=port, data=data, timeout=30))
    return await asyncio.gather(*calls, return_exceptions=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mapped", type=int, default=4, help="how many mapped task instances")
    args = parser.parse_args()

    workers, ports = start_workers(args.mapped)
    try:
        replies = asyncio.run(fan_out(ports))
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)  # connect_ti_function stops cleanly and returns
        codes = [worker.wait(timeout=30) for worker in workers]

    ok = True
    for map_index, reply in enumerate(replies):
        expected = (map_index + 1) ** 2
        if isinstance(reply, rx.RpcError):
            print(f"map_index {map_index}: {reply.code.name}: {reply.details}")
            ok = False
        else:
            print(f"map_index {map_index}: {reply}")
            ok = ok and reply == {"return_value": expected}
    if any(code != 0 for code in codes):
        print(f"workers exited with {codes}")
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
