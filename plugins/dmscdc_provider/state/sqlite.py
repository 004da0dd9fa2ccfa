"""SQLite controller store: the local default, one row per controller item."""

from __future__ import annotations

import json
import os
import sqlite3

from dmscdc_provider.state.base import (
    ConcurrentCommitError,
    ControllerStore,
    StoreBusyError,
    StoreUnavailableError,
    TableState,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dmscdc_controller (
    path TEXT PRIMARY KEY,
    state_version INTEGER NOT NULL,
    item TEXT NOT NULL
)
"""


class SqliteControllerStore(ControllerStore):
    """Controller items as JSON rows; conditional writes via ``UPDATE ... WHERE state_version = ?``.

    :param path: the database file; created with its folder on first use.
    :param busy_timeout: seconds to wait for another process's write lock before giving up
        (a run's writes take milliseconds; a longer wait means the file is held by something
        that will not let go soon, and every table would wait it out in turn).
    """

    def __init__(self, path: str, busy_timeout: float = 5.0):
        self.path = os.path.abspath(path)
        self.busy_timeout = busy_timeout
        self._connection: sqlite3.Connection | None = None

    @property
    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            try:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                # Autocommit: every statement is its own transaction, so a condition is checked
                # and applied atomically; WAL lets several processes (Airflow tasks) share the file.
                connection = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute(_SCHEMA)
            except sqlite3.OperationalError as error:
                if _is_locked(error):
                    raise self._busy(error) from error
                raise StoreUnavailableError(
                    f"cannot open the controller store {self.path} ({error}); check the --state "
                    "location exists and is writable"
                ) from error
            except (OSError, sqlite3.Error) as error:
                raise StoreUnavailableError(
                    f"cannot open the controller store {self.path} ({error}); check the --state "
                    "location exists and is writable"
                ) from error
            self._connection = connection
        return self._connection

    def _execute(self, sql: str, parameters: tuple = ()) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, parameters)
        except sqlite3.OperationalError as error:
            if _is_locked(error):
                raise self._busy(error) from error
            raise StoreUnavailableError(f"the controller store {self.path} failed: {error}") from error

    def _busy(self, error: sqlite3.Error) -> StoreBusyError:
        return StoreBusyError(
            f"the controller store {self.path} is locked by another process ({error}, waited "
            f"{self.busy_timeout:g} s); let the other dmscdc run or Airflow task using it finish, "
            "or stop it, then run again"
        )

    def get(self, path: str) -> TableState | None:
        row = self._execute("SELECT item FROM dmscdc_controller WHERE path = ?", (path,)).fetchone()
        return TableState.from_item(json.loads(row[0])) if row else None

    def list(self) -> list[TableState]:
        rows = self._execute("SELECT item FROM dmscdc_controller ORDER BY path").fetchall()
        return [TableState.from_item(json.loads(row[0])) for row in rows]

    def register(self, state: TableState) -> bool:
        cursor = self._execute(
            "INSERT OR IGNORE INTO dmscdc_controller (path, state_version, item) VALUES (?, ?, ?)",
            (state.path, state.version, json.dumps(state.to_item(), sort_keys=True)),
        )
        return cursor.rowcount == 1

    def replace(self, state: TableState, expected_version: int) -> TableState:
        written = state.evolve(version=expected_version + 1)
        cursor = self._execute(
            "UPDATE dmscdc_controller SET state_version = ?, item = ? "
            "WHERE path = ? AND state_version = ?",
            (written.version, json.dumps(written.to_item(), sort_keys=True), state.path, expected_version),
        )
        if cursor.rowcount != 1:
            raise ConcurrentCommitError(
                f"{state.name}: the controller item changed since version {expected_version} was read"
            )
        return written

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _is_locked(error: sqlite3.Error) -> bool:
    """SQLite's own words for a lock another connection holds (``database is locked``, ``busy``)."""
    text = str(error).lower()
    return "locked" in text or "busy" in text
