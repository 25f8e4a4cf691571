#!/usr/bin/python3
"""A stand-in for `airflow tasks run` (airflow/cli/commands/task_command.py: task_run).

Airflow's executor starts one such process per task instance. After finding the task instance,
`task_run` hands it to Remote XComm, which serves it until SIGTERM or Ctrl-C (docs/airflow.md):

    python3 task_run.py square_dag square manual__1 --map-index 2 --port 0
"""

import argparse

import remote_xcomm as rx
from taskinstance import TaskInstance


def square(x):
    """The task's code: what a PythonOperator's callable would be."""
    return x * x


def task_run(args):
    ti = TaskInstance(args.dag_id, args.task_id, args.run_id, args.map_index, python_callable=square)

    rx.connect_ti_function(port=args.port, ti=ti, func="_run_raw_task")  # Remote XComm: serve it

    # Airflow goes on: ti.init_run_context(raw=args.raw), ...


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dag_id")
    parser.add_argument("task_id")
    parser.add_argument("run_id")
    parser.add_argument("--map-index", type=int, default=-1)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port; the printed line names it")
    task_run(parser.parse_args())
