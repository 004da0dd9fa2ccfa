"""Running plans: one table at a time, through a merge engine, then the commit protocol.

The CLI and the Airflow operators both call ``run_table``; the engine decides where Spark
runs (this process, Glue, EMR, EMR Serverless).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Callable

from dmscdc_provider.engines import EngineUnavailable, MergeEngine
from dmscdc_provider.commit import StepCallback, _no_steps, commit_record, finish, record
from dmscdc_provider.observability.runs import append_run
from dmscdc_provider.plan import TablePlan
from dmscdc_provider.report import one_line, remedy_for_crash
from dmscdc_provider.state.base import (
    ConcurrentCommitError,
    ControllerStore,
    StoreBusyError,
    StoreUnavailableError,
    TableState,
)
from dmscdc_provider.storage import Storage
from dmscdc_provider.table_formats import table_format_for_plan

if TYPE_CHECKING:
    from dmscdc_provider.planner import Planner, PlanningReport

log = logging.getLogger(__name__)


SUCCEEDED, FAILED, CONFLICT = "succeeded", "failed", "conflict"

# A person watching a task log hears from a long merge at least this often.
PROGRESS_INTERVAL_SECONDS = 30.0


class MergeProgress:
    """Tells a person what one table's merge is doing: a sentence per commit-protocol step and,
    while a step lasts, a line every ``interval`` seconds naming the step and the time so far.

    Use it as a context manager around ``run_table`` (or ``complete_attempt``) with ``step`` as
    the ``on_step`` callback; the heartbeat runs in a daemon thread while the context is open.

    :param plan: the table's plan (table, files, lake path).
    :param say: where sentences go, e.g. the task's ``log.info``.
    :param interval: seconds between heartbeat lines.
    :param engine: the merge engine; one with a ``progress_note()`` (the local Spark engine:
        active stages and tasks done) adds what it is doing to each heartbeat line.
    """

    def __init__(self, plan: TablePlan, say: Callable[[str], None] = log.info,
                 interval: float = PROGRESS_INTERVAL_SECONDS, engine: MergeEngine | None = None):
        self.plan = plan
        self.say = say
        self.interval = interval
        self._engine_note = getattr(engine, "progress_note", None)
        self._activity: str | None = None
        self._step_started = self._started = time.monotonic()
        self._published = self._removed = 0
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "MergeProgress":
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._beat, name=f"progress {self.plan.table}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()

    def _beat(self) -> None:
        while not self._stopped.wait(self.interval):
            with self._lock:
                activity, step_started = self._activity, self._step_started
            if activity:
                now = time.monotonic()
                note = self._note() if activity.startswith("merging") else None
                self.say(f"{self.plan.table}: still {activity} ({now - step_started:.0f} s in this step, "
                         f"{now - self._started:.0f} s since the merge task started){': ' + note if note else ''}")

    def _note(self) -> str | None:
        if self._engine_note is None:
            return None
        try:
            return self._engine_note()
        except Exception as error:  # a progress line must never break the merge it reports on
            return f"(engine progress unavailable: {error})"

    def _set(self, activity: str | None, sentence: str | None = None) -> None:
        with self._lock:
            self._activity, self._step_started = activity, time.monotonic()
        if sentence:
            self.say(sentence)

    def step(self, step: str, detail: dict) -> None:
        """The ``on_step`` callback of ``run_table``, ``complete_attempt`` and ``commit.finish``."""
        plan, table = self.plan, self.plan.table
        if step == "merge_started":
            size = sum(entry.get("size") or 0 for entry in plan.files)
            self._set(
                f"merging {len(plan.files)} file(s) into {plan.lake_table_path} "
                "(reading them, rewriting the lake files their keys touch, writing the staged files)",
                f"{table}: merging {len(plan.files)} file(s) ({size / 1e6:.1f} MB) into {plan.lake_table_path}, "
                f"attempt {detail.get('attempt_id')}")
        elif step == "staged":
            self._set("recording the commit in the controller",
                      f"{table}: the merge staged {detail.get('files', 0)} file(s); recording the commit")
        elif step == "commit_recorded":
            self._set(f"publishing the staged files into {plan.lake_table_path}",
                      f"{table}: commit recorded (controller version {detail.get('version')}); "
                      "publishing the staged files")
        elif step == "file_published":
            self._published += 1
            self._set(f"publishing the staged files into {plan.lake_table_path} ({self._published} done)")
        elif step == "files_published":
            self._set("removing the replaced lake files",
                      f"{table}: published {detail.get('count', 0)} file(s) into {plan.lake_table_path}")
        elif step == "file_removed":
            self._removed += 1
            self._set(f"removing the replaced lake files ({self._removed} done)")
        elif step == "files_removed":
            self._set("committing the new watermark in the controller",
                      f"{table}: removed {detail.get('count', 0)} replaced lake file(s)")
        elif step == "snapshot_committed":
            self._set("committing the new watermark in the controller",
                      f"{table}: Iceberg snapshot committed (added {detail.get('files_added', 0)} file(s), "
                      f"removed {detail.get('files_removed', 0)})")
        elif step == "snapshot_found":
            self._set("committing the new watermark in the controller",
                      f"{table}: the Iceberg table already holds this attempt's snapshot")
        elif step == "state_committed":
            self._set(None, f"{table}: controller state committed (version {detail.get('version')})")


class FailureKind(StrEnum):
    """Why a merge failed, which decides whether running the same plan again can succeed.

    An engine's ``failed`` result is bad input unless its error says ``"kind":
    "infrastructure"`` (docs/plan-and-result.md): the engines report what they could not
    read or apply; a crash, a job that wrote no result or an unreachable service is
    reported by the code that saw it, with this kind.
    """

    INPUT = "input"  # bad input or configuration: fix it, then clear the task
    INFRASTRUCTURE = "infrastructure"  # store, network, engine start: a retry can heal it


def infrastructure_error(table: str, problem: str, remedy: str) -> dict:
    """The error document of a failure a retry may heal (no file to blame)."""
    return {"table": table, "file": None, "problem": problem, "remedy": remedy,
            "kind": FailureKind.INFRASTRUCTURE.value}


@dataclass
class TableOutcome:
    """What happened to one table in a run.

    :param status: ``succeeded``, ``failed`` (bad input or a crash; state unchanged) or
        ``conflict`` (another run committed the table first; nothing changed by this run).
    :param summary: rows read by Op, rows written, files read/added/removed, seconds.
    :param error: for failures: problem, file and remedy.
    """

    table: str
    status: str
    plan_id: str
    summary: dict = field(default_factory=dict)
    error: dict | None = None
    note: str | None = None
    seconds: float = 0.0

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCEEDED

    @property
    def failure_kind(self) -> FailureKind | None:
        """For a failed table: input (retrying the plan cannot help) or infrastructure."""
        if self.status != FAILED:
            return None
        return FailureKind((self.error or {}).get("kind") or FailureKind.INPUT)

    def to_dict(self) -> dict:
        return {
            "table": self.table, "status": self.status, "plan_id": self.plan_id,
            "summary": self.summary, "error": self.error, "note": self.note,
            "seconds": round(self.seconds, 3),
        }


def state_moved(plan: TablePlan, state: TableState | None) -> str | None:
    """How the table's controller item moved on since the plan was made (another run recorded
    or committed it), or None while it is still at the plan's ``base_version``."""
    if state is not None and state.version == plan.base_version:
        return None
    if state is None:
        return "the table's controller item was removed since this plan was made"
    return (f"the table's state moved from version {plan.base_version} to {state.version} since this plan was "
            "made (another run committed it)")


@dataclass(frozen=True)
class AttemptStart:
    """Either a new attempt to run (``attempt_id`` and the ``engine_plan`` to run it with) or an
    outcome that needs no merge."""

    attempt_id: str | None = None
    engine_plan: dict | None = None
    outcome: TableOutcome | None = None


def with_run_record(plan: TablePlan, storage: Storage, outcome: TableOutcome) -> TableOutcome:
    """``outcome``, once its record is in the lake's run history (written after any commit; a
    history that cannot be written is a warning, never a failure of the merge)."""
    append_run(storage, plan, outcome)
    return outcome


def start_attempt(
    plan: TablePlan,
    store: ControllerStore,
    storage: Storage,
    on_step: StepCallback = _no_steps,
    *,
    aws_conn_id: str | None = None,
    region_name: str | None = None,
) -> AttemptStart:
    """Before a merge: finish a commit an earlier attempt recorded, detect a plan already
    committed (a retry after the commit) or made stale by another run, check the plan's input
    (``input_checks``: every engine's merge goes through here), else name a new attempt.

    :param storage: storage of the lake (for publishing staged files).
    :param aws_conn_id: AWS connection for reading ``s3://`` footers (None: boto3's chain).
    :param region_name: AWS region for it.
    """
    started = time.monotonic()

    def done(status: str, **kwargs) -> AttemptStart:
        return AttemptStart(outcome=with_run_record(plan, storage, TableOutcome(
            plan.table, status, plan.plan_id, seconds=time.monotonic() - started, **kwargs)))

    state = store.get(plan.state_path)
    if state is None:
        return done(FAILED, error={"problem": "the table has no controller item", "remedy": "plan again"})
    if state.pending_commit is not None:
        own = state.pending_commit["plan_id"] == plan.plan_id
        log.info("%s: finishing the commit recorded by attempt %s", plan.table, state.pending_commit["attempt_id"])
        state = finish(store, storage, state, on_step, aws_conn_id=aws_conn_id, region_name=region_name)
        if own:
            return done(SUCCEEDED, summary=state.last_run or {}, note="finished the commit of an earlier attempt")
    if (state.last_run or {}).get("plan_id") == plan.plan_id and state.version > plan.base_version:
        return done(SUCCEEDED, summary=state.last_run, note="already committed by an earlier attempt")
    moved = state_moved(plan, state)
    if moved is not None:
        return done(CONFLICT, note=f"{moved}; nothing was changed, plan again")
    from dmscdc_provider.input_checks import check_plan_inputs  # pyarrow: not at DAG-parse time

    table_format = table_format_for_plan(plan, storage, aws_conn_id=aws_conn_id, region_name=region_name)
    table_format.prepare(plan, state)
    history_files = None
    if plan.history is not None:
        table_format.prepare(plan.history_plan(), state)
        history_files = table_format.pinned_data_files(plan.history_plan())
    checked = check_plan_inputs(plan, table_format, aws_conn_id=aws_conn_id, region_name=region_name)
    if checked.problem is not None:  # before anything is staged: the table's state stays where it was
        return done(FAILED, error=checked.problem.to_error())
    attempt_id = f"{plan.plan_id}-{uuid.uuid4().hex[:8]}"
    return AttemptStart(attempt_id=attempt_id, engine_plan=plan.engine_plan(
        attempt_id, table_format.pinned_data_files(plan), checked.column_types, checked.widen_files,
        history_files))


def complete_attempt(
    plan: TablePlan,
    attempt_id: str,
    result: dict,
    store: ControllerStore,
    storage: Storage,
    on_step: StepCallback = _no_steps,
    seconds: float = 0.0,
    *,
    aws_conn_id: str | None = None,
    region_name: str | None = None,
) -> TableOutcome:
    """After a merge: commit its staged files (or discard them if it failed).

    The result's own ``attempt_id`` names the staged files: a retried task that reattached to
    the job an earlier try started commits that job's attempt, not the one it planned.
    """
    started = time.monotonic() - seconds
    if result.get("plan_id", plan.plan_id) != plan.plan_id:
        raise ValueError(f"{plan.table}: the result is for plan {result.get('plan_id')}, not {plan.plan_id}")
    attempt_id = result.get("attempt_id") or attempt_id

    def outcome(status: str, **kwargs) -> TableOutcome:
        return with_run_record(plan, storage, TableOutcome(
            plan.table, status, plan.plan_id, seconds=time.monotonic() - started, **kwargs))

    def discard_staged() -> None:
        for staging in plan.staging_paths(attempt_id):
            storage.delete_tree(staging)

    if result.get("status") != SUCCEEDED:
        discard_staged()
        error = result.get("error") or {}
        if error.get("lake_file"):
            # A commit of another run replaces lake files after it is recorded: a lake file that
            # vanished under this merge is that run's doing when the state moved, not bad input.
            moved = state_moved(plan, store.get(plan.state_path))
            if moved is not None:
                return outcome(CONFLICT, note=f"{moved} while this merge read {error.get('file')}, a lake file "
                                              "that commit replaced; nothing was changed, plan again")
        return outcome(FAILED, error=result.get("error"), summary=_partial_summary(result))
    on_step("staged", {"files": len(result["files_added"])})
    try:
        table_format = table_format_for_plan(plan, storage, aws_conn_id=aws_conn_id, region_name=region_name)
        recorded = record(store, plan, commit_record(plan, attempt_id, result, table_format))
    except ConcurrentCommitError as error:
        discard_staged()
        return outcome(CONFLICT, note=f"{error}; another run committed this table first, nothing was changed")
    except StoreBusyError:
        # Nothing was recorded, so no later attempt can publish these files: drop them now.
        discard_staged()
        raise
    on_step("commit_recorded", {"version": recorded.version})
    committed = finish(store, storage, recorded, on_step, aws_conn_id=aws_conn_id, region_name=region_name)
    summary = dict(committed.last_run or {})
    if result.get("warnings"):
        summary["warnings"] = result["warnings"]
    return outcome(SUCCEEDED, summary=summary)


def run_table(
    plan: TablePlan,
    engine: MergeEngine,
    store: ControllerStore,
    storage: Storage,
    on_step: StepCallback = _no_steps,
    *,
    aws_conn_id: str | None = None,
    region_name: str | None = None,
) -> TableOutcome:
    """Merge one table's plan and commit it; repeating a plan never applies it twice.

    :param storage: storage of the lake (for publishing staged files).
    :param on_step: called with each protocol step (progress reporting).
    :param aws_conn_id: AWS connection for the input check's footer reads.
    :param region_name: AWS region for it.
    """
    started = time.monotonic()
    start = start_attempt(plan, store, storage, on_step, aws_conn_id=aws_conn_id, region_name=region_name)
    if start.outcome is not None:
        return start.outcome
    on_step("merge_started", {"attempt_id": start.attempt_id})
    try:
        result = engine.run(start.engine_plan)
    except EngineUnavailable:  # raised before the engine staged anything
        raise
    except Exception as error:  # the engine crashed: nothing was recorded, drop what it staged
        log.debug("%s: the merge failed", plan.table, exc_info=True)
        cause = one_line(error)
        result = {"status": FAILED, "error": infrastructure_error(
            plan.table, f"the merge failed: {cause}", remedy_for_crash(cause))}
    return complete_attempt(plan, start.attempt_id, result, store, storage, on_step,
                            seconds=time.monotonic() - started, aws_conn_id=aws_conn_id, region_name=region_name)


def _partial_summary(result: dict) -> dict:
    return {key: result[key] for key in ("rows_read", "seconds") if key in result}


def finish_pending_commits(store: ControllerStore, storage: Storage, states: list[TableState], *,
                           aws_conn_id: str | None = None, region_name: str | None = None) -> list[str]:
    """Finish the commits that crashed runs recorded for these tables; returns their names."""
    finished = []
    for state in states:
        if state.pending_commit is not None:
            finish(store, storage, state, aws_conn_id=aws_conn_id, region_name=region_name)
            finished.append(state.name)
    return finished


def store_failure(table: str, error: StoreUnavailableError) -> dict:
    """The error document of a table the controller store failed: the message names the store."""
    message = one_line(error)
    problem, _, remedy = message.partition("; ")
    return {"table": table, "file": None, "problem": problem, "store": True, "kind": FailureKind.INFRASTRUCTURE.value,
            "remedy": (remedy or "check the store and run again") + "; the table's state is unchanged"}


@dataclass
class SourceRun:
    """The outcome of one run over a raw location: planning findings and one outcome per table."""

    report: "PlanningReport"
    outcomes: list[TableOutcome]
    finished_commits: list[str]

    @property
    def succeeded(self) -> bool:
        return not self.report.problems and all(o.succeeded for o in self.outcomes)

    @property
    def store_failed(self) -> bool:
        """The controller store failed a table (locked, unreachable): not the input's fault."""
        return any((o.error or {}).get("store") for o in self.outcomes)


def run_source(
    planner: "Planner",
    engine: MergeEngine | Callable[[TablePlan], MergeEngine],
    lake_storage: Storage,
    *,
    cdc_before=None,
    full_refresh: tuple[str, ...] = (),
    on_table_start=None,
    on_table_done=None,
) -> SourceRun:
    """Finish commits left by crashed runs, plan, and merge every planned table in turn.

    A failing table does not stop the others; its state stays where it was.

    :param engine: the engine for every table, or a function giving the engine a plan names
        (``RunEngines.for_plan``).
    """
    selected = [s for s in (planner.store.get(p) for p in planner.selected_paths()) if s is not None]
    finished = finish_pending_commits(planner.store, lake_storage, selected)
    report = planner.plan(cdc_before=cdc_before, full_refresh=full_refresh)
    outcomes = []
    for index, plan in enumerate(report.plans, start=1):
        if on_table_start:
            on_table_start(index, len(report.plans), plan)
        try:
            table_engine = engine if isinstance(engine, MergeEngine) else engine(plan)
            table_outcome = run_table(plan, table_engine, planner.store, lake_storage)
        except EngineUnavailable:  # every table would fail the same way
            raise
        except StoreUnavailableError as error:
            log.debug("%s: the controller store failed", plan.table, exc_info=True)
            table_outcome = TableOutcome(plan.table, FAILED, plan.plan_id, error=store_failure(plan.table, error))
        except Exception as error:  # one table's infrastructure error must not stop the others
            log.debug("%s: the run failed", plan.table, exc_info=True)
            cause = one_line(error)
            table_outcome = TableOutcome(plan.table, FAILED, plan.plan_id, error=infrastructure_error(
                plan.table, cause, remedy_for_crash(cause)))
        outcomes.append(table_outcome)
        if on_table_done:
            on_table_done(index, len(report.plans), table_outcome)
    return SourceRun(report, outcomes, finished)
