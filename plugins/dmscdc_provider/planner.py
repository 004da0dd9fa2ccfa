"""Planning: compare what DMS wrote with the controller state and pin one plan per table.

Rules (docs/merge-semantics.md):
- a table folder found in raw for the first time is registered inactive with "null" keys;
- LOAD files newer than LastFullLoadDate (or a requested full refresh) mean a full load: the
  LOAD files in hex order (on a reload, only those the reload wrote: newer than
  LastFullLoadDate), then the CDC files written at or after the earliest of them; older CDC
  files are superseded by the reload and never applied over it;
- otherwise the CDC files after LastIncrementalFile, ordered by the time in their names;
- with ``cdc_before``, only CDC files named before that instant (a scheduled run's data
  interval end), so catch-up runs never race ahead.

The one rule for a reload and a cutoff (docs/scheduling.md): a reload is applied by the first
run that sees it, whatever the run's cutoff, and it supersedes every CDC file named before it
started (the earliest of its LOAD files' modification times), also those named at or after the
cutoff; of the CDC files named from its start on, those before the cutoff are applied on top.
The watermark moves past every superseded file, so no later run applies one over the reload.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Callable

from dmscdc_provider.dms_files import DmsFile, classify, dms_sort_key, file_name
from dmscdc_provider.observability.figures import backlog_of
from dmscdc_provider.plan import TablePlan
from dmscdc_provider.state.base import NEVER_LOADED, ControllerStore, TableState, history_tracking
from dmscdc_provider.storage import Storage, join, local_path

log = logging.getLogger(__name__)

DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


def controller_path(raw_root: str, schema: str, table: str) -> str:
    """The controller key for a table, as the blog writes it: ``bucket/prefix/schema/table/``.

    A local raw root is keyed by its absolute path, so ``raw``, ``./raw``, ``/abs/raw`` and
    ``file:///abs/raw`` name the same tables.
    """
    if "://" in raw_root and not raw_root.startswith("file:"):
        root = raw_root.split("://", 1)[-1].rstrip("/")
    else:
        root = local_path(raw_root).rstrip("/")
    return f"{root}/{schema}/{table}/"


def without_scheme(path: str) -> str:
    return path.split("://", 1)[-1]


def table_matches(name: str, patterns: str | None) -> bool:
    """``patterns``: comma-separated globs on ``schema.table`` (None or empty: every table)."""
    if not patterns:
        return True
    return any(fnmatch.fnmatchcase(name, p.strip()) for p in patterns.split(",") if p.strip())


@dataclass(frozen=True)
class PlanningProblem:
    """A table that could not be planned: the reason and what to do."""

    table: str
    problem: str


@dataclass
class PlanningReport:
    """Everything one planning pass found."""

    plans: list[TablePlan] = field(default_factory=list)
    registered: list[str] = field(default_factory=list)
    inactive: list[str] = field(default_factory=list)
    up_to_date: list[str] = field(default_factory=list)
    problems: list[PlanningProblem] = field(default_factory=list)
    # Findings that do not stop a table (files ignored, LOAD counter gaps): said, not fatal.
    warnings: list[PlanningProblem] = field(default_factory=list)


def list_table_files(storage: Storage, table_root: str, ignored: list[str] | None = None) -> list[DmsFile]:
    """DMS data files under one table folder (any depth: date-partitioned CDC folders).

    :param ignored: collects the paths of visible files that are not DMS data file names.
    """
    found = []
    for stored in storage.list_files(table_root):
        name = file_name(stored.path)
        kind = classify(name)
        if kind is None:
            log.debug("ignoring %s: not a DMS LOAD or CDC file", stored.path)
            if ignored is not None:
                ignored.append(stored.path)
            continue
        found.append(DmsFile(stored.path, name, kind, stored.size, stored.modified))
    return sorted(found, key=lambda f: f.sort_key)


def load_counter_gaps(loads: list[DmsFile]) -> list[str]:
    """Names of LOAD files missing from a full load: DMS numbers each segment's files 1, 2, 3 ..."""
    counters: dict[str, list[int]] = {}
    extension: dict[str, str] = {}
    for load in loads:
        _, segment, counter, name = load.sort_key
        counters.setdefault(segment, []).append(counter)
        extension.setdefault(segment, name[name.index("."):])
    missing = []
    for segment, present in sorted(counters.items()):
        prefix = f"LOAD_{segment}_" if segment else "LOAD"
        for counter in sorted(set(range(1, max(present) + 1)) - set(present)):
            missing.append(f"{prefix}{counter:08X}{extension[segment]}")
    return missing


def _seconds(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime(DATE_FORMAT)


def _parse_date(value: str) -> datetime:
    try:
        return datetime.strptime(value, DATE_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        return datetime.strptime(NEVER_LOADED, DATE_FORMAT).replace(tzinfo=timezone.utc)


def _entry(dms_file: DmsFile) -> dict:
    return {"path": dms_file.path, "kind": dms_file.kind, "size": dms_file.size}


def _version(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat()


class FullRefreshGlobError(ValueError):
    """A requested full refresh names tables that are not there: nothing is planned or merged."""


def unmatched_full_refresh_globs(globs: tuple[str, ...], states: list[TableState]) -> str | None:
    """One line naming each ``full_refresh`` glob that matches no active selected table, with the
    tables it could have meant; None when every glob matches one."""
    active = sorted(s.name for s in states if s.active)
    inactive = sorted(s.name for s in states if not s.active)
    problems = []
    for glob in globs:
        if any(fnmatch.fnmatchcase(name, glob) for name in active):
            continue
        asleep = [name for name in inactive if fnmatch.fnmatchcase(name, glob)]
        problems.append(f"{glob!r} matches only inactive tables ({', '.join(asleep)}): activate them first "
                        "with `dmscdc configure SCHEMA.TABLE --active`" if asleep else f"{glob!r} matches no table")
    if not problems:
        return None
    return (f"full refresh: {'; '.join(problems)}. The active tables are: {', '.join(active) or 'none'}. "
            "Nothing was planned or merged; give schema.table globs of active tables and run again.")


@dataclass(frozen=True)
class RawChanges:
    """How a plan's raw files differ from raw now: files removed, and files replaced (path -> new
    last-modified time, ISO) since the plan listed them."""

    removed: list[str]
    replaced: dict[str, str]


def raw_changes_since_planning(plan: TablePlan, storage: Storage) -> RawChanges:
    """Compare the plan's files with raw now: one (recursive) listing of the folder that holds them all.

    A plan made before plans recorded ``file_versions`` is checked for removed files only.
    """
    paths = [entry["path"] for entry in plan.files]
    folder = os.path.commonprefix([path.rsplit("/", 1)[0] + "/" for path in paths]).rsplit("/", 1)[0]
    try:
        present = {stored.path: stored.modified for stored in storage.list_files(folder)}
    except FileNotFoundError:
        present = {}
    removed = [path for path in paths if path not in present]
    replaced = {path: _version(present[path]) for path in paths
                if path in present and path in plan.file_versions
                and _version(present[path]) != plan.file_versions[path]}
    return RawChanges(removed, replaced)


def plan_table(
    state: TableState,
    files: list[DmsFile],
    lake_root: str,
    *,
    cdc_before: datetime | None = None,
    full_refresh: bool = False,
    csv_delimiter: str = ",",
    csv_null_value: str = "NULL",
) -> TablePlan | None:
    """The plan for one active table, or None when there is nothing new.

    :param state: the table's controller item (with any pending commit already applied).
    :param files: the table's DMS files, in DMS order.
    :param cdc_before: apply only CDC files whose name time is before this instant.
    :param full_refresh: rebuild from the LOAD files even if they are not new.
    """
    loads = [f for f in files if f.kind == "load"]
    all_cdcs = [f for f in files if f.kind == "cdc"]
    cdcs = all_cdcs if cdc_before is None else [f for f in all_cdcs if f.cdc_time < cdc_before]
    newest_load = max((f.modified.replace(microsecond=0) for f in loads), default=None)
    reload_due = newest_load is not None and newest_load > _parse_date(state.last_full_load_date)

    if loads and (full_refresh or reload_due):
        if reload_due:
            # A reload rewrites LOAD00000001... in place; files it did not rewrite (the old
            # load had more) are leftovers of the previous load, no newer than its date.
            previous_load = _parse_date(state.last_full_load_date)
            loads = [f for f in loads if f.modified.replace(microsecond=0) > previous_load]
        reload_start = min(f.modified for f in loads).replace(microsecond=0)
        # Superseded whatever the cutoff: a CDC file named before the reload started holds a change
        # the LOAD files already hold, so no run may apply it over them (module docstring).
        superseded = [f for f in all_cdcs if f.cdc_time < reload_start]
        applied = [f for f in cdcs if f.cdc_time >= reload_start]
        watermark_files = applied or superseded
        return _plan(
            state, "full", loads + applied, lake_root, _seconds(newest_load),
            without_scheme(watermark_files[-1].path) if watermark_files else None,
            csv_delimiter, csv_null_value, [f.path for f in superseded],
        )
    watermark = state.last_incremental_file
    if watermark is not None and classify(file_name(watermark)) == "cdc":
        # The blog's controller starts tables at "<path>0.parquet", which is no CDC name:
        # like no watermark at all, every CDC file is new.
        after = dms_sort_key(file_name(watermark))
        cdcs = [f for f in cdcs if f.sort_key > after]
    if not cdcs:
        return None
    return _plan(
        state, "incremental", cdcs, lake_root, state.last_full_load_date,
        without_scheme(cdcs[-1].path), csv_delimiter, csv_null_value, [],
    )


def files_beyond(files: list[DmsFile], last_full_load_date: str, last_incremental_file: str | None) -> list[DmsFile]:
    """The files a table with these watermarks has not applied: LOAD files newer than its last full
    load, and CDC files after its last incremental file (every CDC file when it has none, or the
    blog's starting ``0.parquet``). Late files (named before the watermark) are not among them."""
    loaded = _parse_date(last_full_load_date)
    beyond = [f for f in files if f.kind == "load" and f.modified.replace(microsecond=0) > loaded]
    if last_incremental_file is not None and classify(file_name(last_incremental_file)) == "cdc":
        after = dms_sort_key(file_name(last_incremental_file))
        return beyond + [f for f in files if f.kind == "cdc" and f.sort_key > after]
    return beyond + [f for f in files if f.kind == "cdc"]


def late_files(state: TableState, files: list[DmsFile]) -> list[DmsFile]:
    """CDC files named at or before the table's watermark that arrived after the run that
    moved the watermark listed raw: an incremental plan would never apply them.

    The instant is the listing time the last commit recorded (``LastRun.raw_listed_at``); for a
    state without one (written by an older version or the blog), the watermark file's own
    LastModified.
    """
    watermark = state.last_incremental_file
    if watermark is None or classify(file_name(watermark)) != "cdc":
        return []
    last = dms_sort_key(file_name(watermark))
    listed_at = _instant((state.last_run or {}).get("raw_listed_at"))
    if listed_at is None:
        mark = next((f for f in files if f.name == file_name(watermark)), None)
        if mark is None:
            return []
        listed_at = mark.modified
    # A planned file replaced by a good copy (same name) before its merge ran: the merge read that
    # copy and its commit recorded it, so the copy is applied, not late.
    replaced = {path: _instant(modified) for path, modified in
                ((state.last_run or {}).get("replaced_files") or {}).items()}
    return [f for f in files if f.kind == "cdc" and f.sort_key <= last and f.modified > listed_at
            and not (f.path in replaced and replaced[f.path] is not None and f.modified <= replaced[f.path])]


def _instant(text: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def late_files_problem(state: TableState, late: list[DmsFile], has_load_files: bool) -> PlanningProblem:
    names = ", ".join(f.path for f in late[:5]) + (f" and {len(late) - 5} more" if len(late) > 5 else "")
    if has_load_files:
        remedy = (f"`dmscdc run --full-refresh {state.name}` (the DAG's full_refresh param) rebuilds the table "
                  "from its LOAD files and applies every CDC file after them in name order, these included")
    else:
        remedy = ("reload the table in DMS (reload-target): the next run rebuilds it from the new LOAD files, "
                  "which hold these changes")
    return PlanningProblem(state.name, (
        f"{len(late)} CDC file(s) named before the table's watermark {file_name(state.last_incremental_file)} "
        f"arrived after it was applied (a late delivery or a restored copy), so an incremental merge would "
        f"never apply them: {names}. Remedy: {remedy}; if a file is a copy of one already applied, remove "
        "it from raw. The table is not merged until then; its state is unchanged."))


def _plan(state, mode, files, lake_root, full_date, incremental_file, delimiter, null_value, superseded):
    return TablePlan(
        file_versions={f.path: _version(f.modified) for f in files},
        table=state.name,
        state_path=state.path,
        base_version=state.version,
        mode=mode,
        files=[_entry(f) for f in files],
        lake_root=lake_root,
        primary_key=list(state.primary_key),
        partition_key=list(state.partition_key),
        order_column=state.order_column,
        commit_time_column=state.commit_time_column,
        keep_on_null=list(state.keep_on_null),
        history=state.history,
        new_last_full_load_date=full_date,
        new_last_incremental_file=incremental_file,
        csv_delimiter=delimiter,
        csv_null_value=null_value,
        superseded_files=superseded,
    )


def plan_applied_by_state(plan: TablePlan, state: TableState) -> bool:
    """Whether the table's committed state already covers every file of ``plan``: a later run
    planned and committed them (so this plan conflicts, and has nothing left to do)."""
    if _parse_date(state.last_full_load_date) < _parse_date(plan.new_last_full_load_date):
        return False
    if plan.new_last_incremental_file is None:
        return True
    current = state.last_incremental_file
    if current is None or classify(file_name(current)) != "cdc":
        return False
    return dms_sort_key(file_name(current)) >= dms_sort_key(file_name(plan.new_last_incremental_file))


def state_after_pending(state: TableState) -> TableState:
    """The state a table will have once its recorded commit is finished (see commit.py)."""
    pending = state.pending_commit
    if pending is None:
        return state
    return state.evolve(
        last_full_load_date=pending["new_last_full_load_date"],
        last_incremental_file=pending["new_last_incremental_file"],
        pending_commit=None,
        version=state.version + 1,
    )


TABLE_SETTING_KEYS = ("commit_time_column", "keep_on_null", "history", "history_columns", "history_except")


def apply_table_settings(state: TableState, table_settings: dict[str, dict]) -> TableState:
    """The state with the settings of every glob that matches the table applied, in order: a
    ``commit_time_column``, ``keep_on_null`` columns, ``history`` (true/false) with
    ``history_columns`` or ``history_except`` (docs/airflow.md, "Per-table settings")."""
    for pattern, settings in table_settings.items():
        if not table_matches(state.name, pattern):
            continue
        changes: dict = {}
        if "commit_time_column" in settings:
            changes["commit_time_column"] = settings["commit_time_column"] or None
        if "keep_on_null" in settings:
            changes["keep_on_null"] = _setting_columns(settings["keep_on_null"])
        if settings.get("history") is False:
            changes["history"] = None
        elif settings.get("history") or "history_columns" in settings or "history_except" in settings:
            changes["history"] = history_tracking(_setting_columns(settings.get("history_columns")),
                                                  _setting_columns(settings.get("history_except")))
        state = state.evolve(**changes)
    return state


def _setting_columns(value) -> tuple[str, ...]:
    """A YAML list of columns, or a comma list."""
    if not value:
        return ()
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return tuple(str(item).strip() for item in items if str(item).strip())


class Planner:
    """Lists a raw DMS location, registers new tables, and plans the active ones.

    :param raw_root: where DMS writes (``<raw_root>/<schema>/<table>/``).
    :param lake_root: where the lake tables live.
    :param store: the controller store.
    :param storage: storage for ``raw_root``.
    :param tables: comma-separated globs on ``schema.table``.
    :param choose_engine: names the engine of each plan (``EngineConfig.choose``); None: plans
        name no engine.
    :param table_format: the format of tables whose controller item names none (``parquet``,
        ``iceberg``).
    :param iceberg_catalog: the catalog of Iceberg tables (``sqlite:///PATH``, ``glue://DATABASE``).
    :param table_settings: glob on ``schema.table`` -> change semantics that override the
        controller item's (the DAG YAML's ``table_settings``; ``apply_table_settings``).
    """

    def __init__(
        self,
        raw_root: str,
        lake_root: str,
        store: ControllerStore,
        storage: Storage,
        tables: str | None = None,
        csv_delimiter: str = ",",
        csv_null_value: str = "NULL",
        choose_engine: Callable[[TablePlan], TablePlan] | None = None,
        table_format: str = "parquet",
        iceberg_catalog: str | None = None,
        table_settings: dict[str, dict] | None = None,
    ):
        self.raw_root = raw_root
        self.lake_root = lake_root
        self.store = store
        self.storage = storage
        self.tables = tables
        self.ambiguous_folders: list[tuple[str, str]] = []
        self.csv_delimiter = csv_delimiter
        self.csv_null_value = csv_null_value
        self.choose_engine = choose_engine
        self.table_format = table_format
        self.iceberg_catalog = iceberg_catalog
        self.table_settings = dict(table_settings or {})

    def discover(self) -> list[tuple[str, str]]:
        """``(schema, table)`` folders under the raw root.

        A schema folder whose name holds a dot is left out (see ``ambiguous_folders``): a table
        is named ``schema.table``, and ``a.b/c`` and ``a/b.c`` would both be ``a.b.c``.
        """
        found = []
        self.ambiguous_folders = []
        for schema in self.storage.list_folders(self.raw_root):
            for table in self.storage.list_folders(join(self.raw_root, schema)):
                if table_matches(f"{schema}.{table}", self.tables):
                    (self.ambiguous_folders if "." in schema else found).append((schema, table))
        return found

    def ambiguous_folder_problems(self) -> list[PlanningProblem]:
        """Problems for the dotted schema folders the last ``discover`` left out."""
        return [PlanningProblem(
            f"{schema}.{table}",
            f"the schema folder {join(self.raw_root, schema)!r} has a dot in its name, so the table name "
            f"{schema}.{table} cannot be told apart from schema {schema.split('.', 1)[0]!r}, table "
            f"'{schema.split('.', 1)[1]}.{table}'; the folder is not registered or merged. Remedy: rename "
            "the schema in the DMS task's table mappings (a transformation rule with rule-target schema "
            "and rule-action rename, e.g. to a name with '_' for '.').",
        ) for schema, table in self.ambiguous_folders]

    def selected_paths(self) -> list[str]:
        """Controller keys of the selected table folders under the raw root."""
        return [controller_path(self.raw_root, schema, table) for schema, table in self.discover()]

    def register_new(self, report: PlanningReport) -> list[TableState]:
        """Register tables seen for the first time (inactive, "null" keys) and return the
        selected tables' states."""
        states = []
        for schema, table in self.discover():
            path = controller_path(self.raw_root, schema, table)
            state = self.store.get(path)
            if state is None:
                # Versions before local keys were absolute keyed a table by the raw path as typed.
                as_typed = f"{self.raw_root.rstrip('/')}/{schema}/{table}/"
                typed_locally = "://" not in self.raw_root
                earlier = self.store.get(as_typed) if typed_locally and as_typed != path else None
                if earlier is not None:
                    if self.store.register(earlier.evolve(path=path)):
                        log.info("%s: continues from the controller item %s", earlier.name, as_typed)
                else:
                    state = TableState(path=path, schema=schema, table=table)
                    if self.store.register(state):
                        report.registered.append(state.name)
                        log.info("registered %s (inactive): activate it with `dmscdc configure`", state.name)
                state = self.store.get(path)
            states.append(state)
        return states

    def plan(
        self,
        *,
        cdc_before: datetime | None = None,
        full_refresh: tuple[str, ...] = (),
    ) -> PlanningReport:
        """Plan every selected active table.

        :param cdc_before: apply only CDC files named before this instant.
        :param full_refresh: globs of tables to rebuild from their LOAD files.
        :raises FullRefreshGlobError: a ``full_refresh`` glob matches no active selected table.
        """
        report = PlanningReport()
        states = self.register_new(report)
        unmatched = unmatched_full_refresh_globs(full_refresh, states) if full_refresh else None
        if unmatched:
            raise FullRefreshGlobError(unmatched)
        report.problems.extend(self.ambiguous_folder_problems())
        for state in states:
            if not state.active:
                report.inactive.append(state.name)
                continue
            table_root = join(self.raw_root, state.schema, state.table)
            # Recorded with the commit: a CDC file named before the new watermark that arrives
            # after this instant was not seen by this run (``late_files``).
            listed_at = datetime.now(timezone.utc)
            ignored: list[str] = []
            try:
                files = list_table_files(self.storage, table_root, ignored)
            except OSError as error:
                report.problems.append(PlanningProblem(
                    state.name,
                    f"cannot list {table_root} ({error}); check that the folder exists and is "
                    "readable by this worker. The table's state is unchanged.",
                ))
                continue
            current = apply_table_settings(state_after_pending(state), self.table_settings)
            plan = plan_table(
                current,
                files,
                self.lake_root,
                cdc_before=cdc_before,
                full_refresh=table_matches(state.name, ",".join(full_refresh)) if full_refresh else False,
                csv_delimiter=self.csv_delimiter,
                csv_null_value=self.csv_null_value,
            )
            for path in ignored:
                report.warnings.append(PlanningProblem(
                    state.name, f"ignored {path}: not a DMS file name (LOAD<hex counter> or "
                    "YYYYMMDD-HHMMSS<fraction>, .parquet/.csv/.csv.gz); rename or move it if it holds changes"))
            late = late_files(current, files) if plan is None or plan.mode == "incremental" else []
            if late:
                problem = late_files_problem(current, late, any(f.kind == "load" for f in files))
                log.warning("%s: %s", problem.table, problem.problem)
                report.problems.append(problem)
            elif plan is None:
                report.up_to_date.append(state.name)
            else:
                backlog = files_beyond(files, plan.new_last_full_load_date, plan.new_last_incremental_file)
                plan = replace(plan, raw_listed_at=listed_at.isoformat(),
                               table_format=state.table_format or self.table_format,
                               iceberg_catalog=self.iceberg_catalog, backlog=backlog_of(backlog))
                report.plans.append(self.choose_engine(plan) if self.choose_engine else plan)
                missing = load_counter_gaps([f for f in files if f.path in {e["path"] for e in plan.files}
                                             and f.kind == "load"])
                if missing:
                    report.warnings.append(PlanningProblem(
                        state.name, f"the full load has no {', '.join(missing)} (DMS numbers LOAD files "
                        "without gaps): its rows are not in the lake; if the file was lost, reload "
                        "the table in DMS (the next run loads the new LOAD files)"))
        return report
