"""Runs a dmscdc DAG the way the scheduler would, in this process, and prints task states as JSON.

Run as a script in a child process (Airflow reads AIRFLOW_HOME once, at import):

    python tests/airflow/dag_runs.py test DAG_ID LOGICAL_DATE
    python tests/airflow/dag_runs.py clear-failed DAG_ID LOGICAL_DATE

``clear-failed`` does what "Clear" on the failed task instances (with downstream) does in the
UI, then runs the cleared task instances of that same DAG run, with its pinned XComs.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime


def _dag(dag_id: str):
    import os

    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    if bag.import_errors:
        raise SystemExit(f"import errors: {bag.import_errors}")
    return bag.dags[dag_id]


def _states(dag_id: str, logical_date: datetime) -> dict:
    from sqlalchemy import select

    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.logical_date == logical_date))
        instances = {
            ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.rendered_map_index or ti.map_index}]": {
                "state": _text(ti.state), "try_number": ti.try_number}
            for ti in run.get_task_instances(session=session)
        }
        return {"run_id": run.run_id, "state": _text(run.state), "tasks": instances}


def _text(state) -> str | None:
    return None if state is None else str(getattr(state, "value", state))


def run_test(dag_id: str, logical_date: datetime) -> dict:
    _dag(dag_id).test(logical_date=logical_date)
    return _states(dag_id, logical_date)


def clear_failed_and_resume(dag_id: str, logical_date: datetime) -> dict:
    from sqlalchemy import select

    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import clear_task_instances
    from airflow.sdk.definitions.dag import _run_task
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, State, TaskInstanceState

    from airflow.serialization.serialized_objects import DagSerialization

    dag = _dag(dag_id)
    scheduler_dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    with create_session() as session:
        run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.logical_date == logical_date))
        failed = [ti for ti in run.get_task_instances(session=session)
                  if ti.state in (TaskInstanceState.FAILED, TaskInstanceState.UPSTREAM_FAILED)]
        downstream = set()
        for ti in failed:
            downstream |= dag.get_task(ti.task_id).get_flat_relative_ids(upstream=False)
        to_clear = failed + [ti for ti in run.get_task_instances(session=session)
                             if ti.task_id in downstream and ti not in failed]
        clear_task_instances(to_clear, session, dag_run_state=DagRunState.RUNNING)
        session.commit()

        # The scheduler's loop, as DAG.test runs it, over the cleared instances of this run.
        run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.logical_date == logical_date))
        run.dag = scheduler_dag
        while run.state == DagRunState.RUNNING:
            session.expire_all()
            schedulable, _ = run.update_state(session=session)
            for ti in schedulable:
                ti.try_number += 1
                ti.state = TaskInstanceState.SCHEDULED
            session.commit()
            for ti in [t for t in run.get_task_instances(session=session) if t.state == State.SCHEDULED]:
                try:
                    _run_task(ti=ti, task=dag.task_dict[ti.task_id], run_triggerer=True)
                except Exception:  # a failing task is an outcome to report, not a reason to stop
                    pass
    return _states(dag_id, logical_date)


COMMANDS = {"test": run_test, "clear-failed": clear_failed_and_resume}

if __name__ == "__main__":
    command, dag_id, date_text = sys.argv[1:4]
    print("DAG_RUN_STATES=" + json.dumps(COMMANDS[command](dag_id, datetime.fromisoformat(date_text))))
