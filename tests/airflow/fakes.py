"""Stand-ins for what Airflow hands an operator at run time, and a scripted remote engine."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone


class FakeTaskInstance:
    """Records pushed XComs; serves pulls from ``xcoms[(task_id, key)]`` (a value, or a list for mapped
    tasks) and this run's task states from ``task_states`` (``{"merge_1": "failed", ...}``, mapped
    instances named as Airflow's execution API names them)."""

    def __init__(self, xcoms: dict | None = None, task_states: dict[str, str] | None = None):
        self.pushed: dict[str, object] = {}
        self.xcoms = xcoms or {}
        self.task_states = task_states or {}
        self.dag_id, self.run_id, self.task_id = "dmscdc_test", "manual__test", "refresh_catalog"

    def xcom_push(self, key: str, value) -> None:
        self.pushed[key] = value

    def xcom_pull(self, task_ids: str, key: str = "return_value"):
        return self.xcoms.get((task_ids, key))

    def get_task_states(self, dag_id: str, task_ids: list[str], run_ids: list[str]) -> dict[str, dict[str, str]]:
        assert (dag_id, run_ids) == (self.dag_id, [self.run_id])
        # As the execution API: no task_ids means every task of the run.
        return {self.run_id: {key: state for key, state in self.task_states.items()
                              if not task_ids or key in task_ids or key.rsplit("_", 1)[0] in task_ids}}


class OutletEvents(defaultdict):
    """``context["outlet_events"]``: one recorder of added Asset events per outlet."""

    def __init__(self):
        super().__init__(AddedEvents)


class AddedEvents(list):
    def add(self, asset, extra=None) -> None:
        self.append((asset, extra))


@dataclass
class RecordedAssetEvent:
    """An Asset event as ``context["inlet_events"][alias]`` returns it."""

    extra: dict
    source_dag_id: str = "dmscdc_test"
    source_run_id: str = "manual__test"
    source_task_id: str = "refresh_catalog"


class InletEvents(list):
    """``context["inlet_events"][alias]``: the alias's recorded events; remembers the ``after`` bound."""

    bound: str | None = None

    def after(self, after: str) -> "InletEvents":
        self.bound = after
        return self


class DagRun:
    run_after = datetime(2024, 3, 3, tzinfo=timezone.utc)


def make_context(data_interval_end: datetime | None = None, ti: FakeTaskInstance | None = None,
                 inlet_events: dict | None = None) -> dict:
    return {"ti": ti or FakeTaskInstance(), "data_interval_end": data_interval_end, "outlet_events": OutletEvents(),
            "inlet_events": inlet_events or {}, "dag_run": DagRun()}


class ScriptedRemoteEngine:
    """A RemoteMergeEngine whose "remote job" is the local Spark merge, run when its result is fetched.

    :param statuses: what ``poll`` answers, in turn (the last one repeats).
    :param aws_conn_id: the task's connection, which every engine takes (recorded).
    :param region_name: the task's region (recorded).
    """

    submitted: list[dict] = []

    def __init__(self, statuses: list[str] | None = None, aws_conn_id: str | None = None,
                 region_name: str | None = None):
        self.statuses = list(statuses or ["succeeded"])
        self.polls = 0
        self.connection = (aws_conn_id, region_name)

    def run(self, engine_plan: dict) -> dict:
        return self.fetch_result(self.submit(engine_plan), engine_plan)

    def submit(self, engine_plan: dict) -> str:
        ScriptedRemoteEngine.submitted.append(engine_plan)
        return f"job-{engine_plan['attempt_id']}"

    def poll(self, job_ref: str) -> str:
        status = self.statuses[min(self.polls, len(self.statuses) - 1)]
        self.polls += 1
        return status

    def cancel(self, job_ref: str) -> None:
        raise AssertionError(f"nothing cancels {job_ref} in these tests")

    def fetch_result(self, job_ref: str, engine_plan: dict) -> dict:
        from dmscdc_provider.engines.local import LocalSparkEngine

        assert job_ref == f"job-{engine_plan['attempt_id']}"
        return LocalSparkEngine().run(engine_plan)


class SleepingEngine:
    """A merge engine that works for ``seconds``, then reports bad input (nothing staged)."""

    def __init__(self, seconds: float, aws_conn_id: str | None = None, region_name: str | None = None):
        self.seconds = seconds

    def run(self, engine_plan: dict) -> dict:
        import time

        time.sleep(self.seconds)
        return {"status": "failed", "error": {"table": engine_plan["table"], "file": None,
                                              "problem": "bad input", "remedy": "fix it"}}


class UnreachableEngine:
    """A merge engine whose start fails the way an unreachable Spark master or endpoint does."""

    def __init__(self, aws_conn_id: str | None = None, region_name: str | None = None):
        pass

    def run(self, engine_plan: dict) -> dict:
        raise ConnectionError("could not connect to the Spark master spark://spark:7077")
