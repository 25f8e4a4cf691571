"""A stand-in for airflow/models/taskinstance.py, reduced to what Remote XComm touches.

Airflow's TaskInstance has the four fields of a task instance's key and runs the task's code in
`_run_raw_task`. The two lines marked `# Remote XComm` are all that changes: the task takes the
scheduler's payload before it runs, and pushes its result when it is done (docs/airflow.md).
"""


class TaskInstance:
    def __init__(self, dag_id, task_id, run_id, map_index=-1, python_callable=None):
        self.dag_id = dag_id
        self.task_id = task_id
        self.run_id = run_id
        self.map_index = map_index
        self.python_callable = python_callable

    def get_template_context(self):
        return {"ti": self, "params": {}, "map_index": self.map_index}

    def _execute_task_with_callbacks(self, context, test_mode=False):
        return self.python_callable(**context["params"])

    def _run_raw_task(self, mark_success=False, test_mode=False, job_id=None, pool=None, session=None):
        # ... Airflow: state checks, pre-execute hooks ...
        payloads = self.rxcomm.get()  # Remote XComm: the scheduler's payload, before the task runs

        context = self.get_template_context()
        context["params"].update(payloads.get("params", {}))
        result = self._execute_task_with_callbacks(context, test_mode)

        self.rxcomm.push({"return_value": result})  # Remote XComm: the result, once the task is done
        # ... Airflow: post-execute hooks, state to success ...
        return None
