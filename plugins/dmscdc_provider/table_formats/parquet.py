"""The plain Parquet format: a table is a folder of hive-partitioned Parquet files.

Publishing a commit moves each staged file into the table folder, then deletes each replaced
file (docs/crash-safety.md). Every step is idempotent. Readers that list the folder while a
commit is published can see the new files beside the ones they replace, or a file listed and
then deleted; the Iceberg format has no such window.
"""

from __future__ import annotations

from dmscdc_provider.plan import TablePlan
from dmscdc_provider.storage import Storage, join, local_path
from dmscdc_provider.table_formats import LakeFile, StepCallback, TableFormatName


def relative_to(root: str, path: str) -> str:
    """``path`` (as a storage lists it) relative to the folder ``root`` (as the plan spells it)."""
    if path.startswith(root.rstrip("/") + "/"):
        return path[len(root.rstrip("/")) + 1:]
    if not root.startswith("s3://") and not path.startswith("s3://"):
        # Local paths may be spelled relative, absolute or as file:// URIs.
        root, path = local_path(root).rstrip("/"), local_path(path)
        if path.startswith(root + "/"):
            return path[len(root) + 1:]
    raise ValueError(f"{path} is not under {root}")


class ParquetFolderFormat:
    """A table folder of Parquet files, published by moving staged files in.

    :param storage: the lake's storage.
    """

    name = TableFormatName.PARQUET

    def __init__(self, storage: Storage):
        self.storage = storage

    def data_files(self, plan: TablePlan) -> list[LakeFile]:
        try:
            listed = self.storage.list_files(plan.lake_table_path)
        except FileNotFoundError:  # a table not loaded yet
            return []
        found = [LakeFile(relative_to(plan.lake_table_path, stored.path), stored.size)
                 for stored in listed if stored.path.endswith(".parquet")]
        return sorted(found, key=lambda f: f.relative_path)

    def prepare(self, plan: TablePlan, state) -> None:
        pass  # a folder needs nothing made

    def pinned_data_files(self, plan: TablePlan) -> None:
        # The folder is the table: the engine lists it where it runs (Spark lists it in one go).
        return None

    def column_types(self, plan: TablePlan) -> dict:
        return {}  # the files are the schema: each holds its own types

    def allows_type_change(self, current, widened) -> bool:
        return True

    def publish_document(self, plan: TablePlan, attempt_id: str, result: dict) -> dict:
        staging = plan.staging_path(attempt_id)
        return {
            "moves": [[join(staging, added["path"]), join(plan.lake_table_path, added["path"])]
                      for added in result["files_added"]],
            "removes": [join(plan.lake_table_path, removed) for removed in result["files_removed"]],
        }

    def publish(self, pending: dict, on_step: StepCallback) -> None:
        for source, target in pending["moves"]:
            self.storage.move(source, target)
            on_step("file_published", {"path": target})
        on_step("files_published", {"count": len(pending["moves"])})
        for path in pending["removes"]:
            self.storage.delete(path)
            on_step("file_removed", {"path": path})
        on_step("files_removed", {"count": len(pending["removes"])})

    def clean_up(self, pending: dict) -> None:
        self.storage.delete_tree(pending["staging_path"])
