#!/usr/bin/python3
"""The prototype's test/client.py on the C++ engine: sends payloads, prints each reply as JSON.

    python3 client.py --url 127.0.0.1 --port PORT -n 3
"""

import argparse
import json
import sys

import remote_xcomm as rx

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("-u", "--url", type=str, default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=8081)
    parser.add_argument("-n", "--count", type=int, default=1)
    args = parser.parse_args()

    for attempt in range(args.count):
        data = {
            "dag_id": "example_dag",
            "task_id": "hello_task",
            "run_id": "manual__2026-11-29",
            "map_index": -1,
            "xcoms": {"greeting": "hello from the scheduler", "attempt": attempt},
        }
        try:
            response = rx.requests(url=args.url, port=args.port, data=data)  # HERE!
        except rx.RpcError as error:
            print(f"request failed: {error}", file=sys.stderr)
            sys.exit(1)
        print(json.dumps(response), flush=True)
