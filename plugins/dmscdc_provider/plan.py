"""TablePlan: exactly what one table's merge will do, pinned at planning time.

A plan names the files to read and their order, the table's keys, where the lake table is,
the controller version it was planned against and the watermarks a successful merge
commits. A retried merge repeats the same plan; it never lists raw files again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta, timezone

from dmscdc_provider.dms_files import cdc_name_time, file_name
from dmscdc_provider.storage import join

STAGING_FOLDER = "_dmscdc_staging"
# A table's history table is ``<schema>.<table>_history`` (docs/merge-semantics.md, "History tables").
HISTORY_SUFFIX = "_history"
# Plans too large for an XCom, stored once by the planner and read by the merge task.
PLANS_FOLDER = "_dmscdc_plans"
PLAN_INLINE_LIMIT_BYTES = 4096
# An Iceberg table's data files live under <table>/data/<attempt_id>/.
ICEBERG_DATA_FOLDER = "data"
# A stored plan outlives any retry or clear that can still apply it (older plans conflict anyway).
PLAN_RETENTION = timedelta(days=7)


@dataclass(frozen=True)
class TablePlan:
    """One table's merge.

    :param table: ``schema.table``.
    :param state_path: the controller item's key.
    :param base_version: the controller StateVersion this plan was made from.
    :param mode: ``full`` (rebuild from LOAD files, then CDC) or ``incremental``.
    :param files: ordered ``{"path", "kind", "size"}`` entries.
    :param lake_root: the lake location; the table lives at ``<lake_root>/<schema>/<table>``.
    :param new_last_full_load_date: LastFullLoadDate after a successful merge.
    :param new_last_incremental_file: LastIncrementalFile after a successful merge.
    :param superseded_files: CDC files a full load skips because the reload supersedes them.
    :param engine: the engine that merges this plan (``auto`` resolves it per table at planning
        time); None: the caller's configured engine.
    :param engine_reason: why that engine was chosen (shown in progress lines and task logs).
    :param table_format: ``parquet`` (a folder of files) or ``iceberg`` (docs/table-formats.md).
    :param iceberg_catalog: the Iceberg catalog (``sqlite:///PATH``, ``glue://DATABASE``) of an
        ``iceberg`` table.
    :param raw_listed_at: when the planner listed the table's raw folder (ISO, UTC); the commit
        records it, and the next planning reports CDC files named before the watermark that
        arrived after it (late files).
    :param file_versions: each planned file's last-modified time (ISO) when it was listed; the
        merge task compares raw with it to tell a file removed or replaced since planning.
    :param replaced_files: planned files replaced (same name, newer last-modified time, ISO)
        between planning and the merge: the merge reads the copy, and the commit records it so the
        next planning does not take that copy for a late delivery. Set by the merge task.
    :param backlog: what raw held beyond this plan's new watermark when it was listed (files after
        the cutoff): ``{"files", "bytes", "oldest_modified"}`` (``observability.figures.backlog_of``);
        the commit reports it as the pending figures.
    :param commit_time_column: the column holding each change's commit time (DMS
        ``TimestampColumnName``), or None.
    :param keep_on_null: columns whose null in an update keeps the lake's value.
    :param history: None, or the history table's tracked columns (``TableState.history``).
    """

    table: str
    state_path: str
    base_version: int
    mode: str
    files: list[dict]
    lake_root: str
    primary_key: list[str]
    partition_key: list[str]
    new_last_full_load_date: str
    new_last_incremental_file: str | None
    order_column: str | None = None
    csv_delimiter: str = ","
    csv_null_value: str = "NULL"
    superseded_files: list[str] = field(default_factory=list)
    engine: str | None = None
    engine_reason: str | None = None
    raw_listed_at: str | None = None
    table_format: str = "parquet"
    iceberg_catalog: str | None = None
    file_versions: dict[str, str] = field(default_factory=dict)
    replaced_files: dict[str, str] = field(default_factory=dict)
    backlog: dict | None = None
    commit_time_column: str | None = None
    keep_on_null: list[str] = field(default_factory=list)
    history: dict | None = None

    @property
    def schema_name(self) -> str:
        return self.table.split(".", 1)[0]

    @property
    def table_name(self) -> str:
        return self.table.split(".", 1)[1]

    @property
    def lake_table_path(self) -> str:
        return join(self.lake_root, self.schema_name, self.table_name)

    @property
    def plan_id(self) -> str:
        """Stable id: the same table, version and files give the same id."""
        digest = hashlib.sha256(
            json.dumps([self.state_path, self.base_version, self.mode, self.files], sort_keys=True).encode()
        ).hexdigest()
        return digest[:16]

    @property
    def new_watermark(self) -> dict:
        """The table's watermarks once this plan is committed, by their controller attribute names."""
        return {"LastFullLoadDate": self.new_last_full_load_date,
                "LastIncrementalFile": self.new_last_incremental_file}

    def staging_path(self, attempt_id: str) -> str:
        """Where an attempt's engine writes its files: hidden from readers of a Parquet folder until
        published; for Iceberg where they stay (no snapshot names them until the commit)."""
        if self.table_format == "iceberg":
            return join(self.lake_table_path, ICEBERG_DATA_FOLDER, attempt_id)
        return join(self.lake_root, STAGING_FOLDER, self.schema_name, self.table_name, attempt_id)

    def staging_paths(self, attempt_id: str) -> list[str]:
        """Every folder an attempt's engine writes: the table's staging path, and its history table's."""
        paths = [self.staging_path(attempt_id)]
        if self.history is not None:
            paths.append(self.history_plan().staging_path(attempt_id))
        return paths

    def history_plan(self) -> "TablePlan":
        """The plan as it applies to the table's history table (``<table>_history`` beside it): the
        table format commits both with one record."""
        return replace(self, table=self.table + HISTORY_SUFFIX, history=None)

    def file_times(self) -> list[str]:
        """Per planned file, the instant its rows happened when there is no commit-time column
        (ISO, UTC): a CDC file's name time; for LOAD rows the full load's start (its earliest
        LOAD file's last-modified time)."""
        loads = [self.file_versions.get(f["path"]) for f in self.files if f["kind"] == "load"]
        load_time = min((t for t in loads if t), default=None)
        return [load_time if entry["kind"] == "load"
                else cdc_name_time(file_name(entry["path"])).astimezone(timezone.utc).isoformat()
                for entry in self.files]

    def engine_plan(self, attempt_id: str, lake_files: list | None = None,
                    column_types: dict[str, str] | None = None, widen_files: list[str] = (),
                    history_lake_files: list | None = None) -> dict:
        """The document the engines take (docs/plan-and-result.md).

        :param lake_files: the table's current data files (``LakeFile``), when the table format
            pins them (Iceberg); None: the engine lists the table folder.
        :param column_types: the table's column types by Spark name, which every file the merge
            writes carries (``input_checks.check_plan_inputs`` finds them).
        :param widen_files: lake files (relative paths) the merge rewrites because it widens one
            of their columns (Parquet folders; found by the same check).
        :param history_lake_files: the same for the history table.
        """
        def pin(files):
            return None if files is None else [{"path": f.relative_path, "size": f.size} for f in files]

        history = None
        if self.history is not None:
            history_plan = self.history_plan()
            history = {
                "lake_table_path": history_plan.lake_table_path,
                "staging_path": history_plan.staging_path(attempt_id),
                "lake_files": pin(history_lake_files),
                "columns": list(self.history.get("columns") or []),
                "except": list(self.history.get("except") or []),
                "file_times": self.file_times(),
            }
        pinned = pin(lake_files)
        return {
            "table": self.table,
            "plan_id": self.plan_id,
            "attempt_id": attempt_id,
            "mode": self.mode,
            "files": self.files,
            "lake_table_path": self.lake_table_path,
            "staging_path": self.staging_path(attempt_id),
            "primary_key": self.primary_key,
            "partition_key": self.partition_key,
            "order_column": self.order_column,
            "commit_time_column": self.commit_time_column,
            "keep_on_null": list(self.keep_on_null),
            "history": history,
            "csv_delimiter": self.csv_delimiter,
            "csv_null_value": self.csv_null_value,
            "lake_files": pinned,
            "column_types": column_types,
            "widen_files": list(widen_files),
        }

    def to_dict(self) -> dict:
        return {"plan_id": self.plan_id, **asdict(self)}

    @classmethod
    def from_dict(cls, document: dict) -> "TablePlan":
        known = set(cls.__dataclass_fields__)
        return cls(**{key: value for key, value in document.items() if key in known})


def plan_document_uri(plan: TablePlan) -> str:
    """Where a plan passed by reference is stored: ``<lake>/_dmscdc_plans/<schema>/<table>/<plan_id>.json``
    (a ``_`` folder, so readers and crawlers skip it)."""
    return join(plan.lake_root, PLANS_FOLDER, plan.schema_name, plan.table_name, f"{plan.plan_id}.json")


def plan_message(plan: TablePlan, storage, inline_limit: int = PLAN_INLINE_LIMIT_BYTES) -> dict:
    """What the plan task hands a merge task: the plan itself while small, else a reference to the
    plan document it stores through ``storage`` (XCom rows stay small whatever the backlog).

    A reference keeps ``table``, ``plan_id`` and ``mode`` so the UI and the run summary still read it.
    """
    document = plan.to_dict()
    encoded = json.dumps(document, sort_keys=True).encode()
    if len(encoded) <= inline_limit:
        return document
    uri = plan_document_uri(plan)
    storage.write_bytes(uri, encoded, "application/json")
    expired = datetime.now(timezone.utc) - PLAN_RETENTION
    for stored in storage.list_files(uri.rsplit("/", 1)[0]):
        if stored.modified < expired:
            storage.delete(stored.path)
    return {"table": plan.table, "plan_id": plan.plan_id, "mode": plan.mode, "file_count": len(plan.files),
            "plan_uri": uri}


def plan_from_message(message: dict, storage_for) -> TablePlan:
    """The plan a ``plan_message`` carries or points to.

    :param storage_for: opens the storage for a URI (called only for a reference).
    """
    if "plan_uri" not in message:
        return TablePlan.from_dict(message)
    try:
        stored = storage_for(message["plan_uri"]).read_bytes(message["plan_uri"])
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{message['table']}: the plan document {message['plan_uri']} is gone (stored plans are kept "
            f"{PLAN_RETENTION.days} days); clear the run's plan task to plan again") from None
    plan = TablePlan.from_dict(json.loads(stored))
    if plan.plan_id != message["plan_id"]:
        raise ValueError(f"{message['table']}: the plan document {message['plan_uri']} holds plan {plan.plan_id}, "
                         f"not {message['plan_id']}; clear the run's plan task to plan again")
    return plan
