"""TablePlan: exactly what one table's merge will do, pinned at planning time.

A plan names the files to read and their order, the table's keys, where the lake table is,
the controller version it was planned against and the watermarks a successful merge
commits. A retried merge repeats the same plan; it never lists raw files again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from dmscdc_provider.storage import join

STAGING_FOLDER = "_dmscdc_staging"


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
    :param raw_listed_at: when the planner listed the table's raw folder (ISO, UTC); the commit
        records it, and the next planning reports CDC files named before the watermark that
        arrived after it (late files).
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

    def staging_path(self, attempt_id: str) -> str:
        return join(self.lake_root, STAGING_FOLDER, self.schema_name, self.table_name, attempt_id)

    def engine_plan(self, attempt_id: str) -> dict:
        """The document the Spark engine takes (docs/plan-and-result.md)."""
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
            "csv_delimiter": self.csv_delimiter,
            "csv_null_value": self.csv_null_value,
        }

    def to_dict(self) -> dict:
        return {"plan_id": self.plan_id, **asdict(self)}

    @classmethod
    def from_dict(cls, document: dict) -> "TablePlan":
        known = set(cls.__dataclass_fields__)
        return cls(**{key: value for key, value in document.items() if key in known})
