"""Randomized check against an in-memory model of the source database.

Each seed generates a source that changes over several batches (inserts, updates, deletes,
same-key bursts inside one file, updates that move a row to another partition) and a keyless
table fed the same way. After every batch the lake must equal the model exactly. More seeds:
``DMSCDC_RANDOM_SEEDS=50 pytest tests/core/test_randomized.py``.

The keyed table also keeps a history table (``qty`` untracked), which must equal the model's
every version: per file time, each key the file touched ends in one state (the last), which
closes, opens or rewrites in place its current version; a DMS reload in the middle of the
stream changes no version (the snapshot equals what the changes made).
"""

from __future__ import annotations

import os
import random

import pyarrow as pa
import pytest

from tests.core.harness import LakeHarness

ROW = pa.schema([("id", pa.int64()), ("name", pa.string()), ("dept", pa.string()), ("qty", pa.int32())])
DEPTS = ["a", "b", "c"]
SEEDS = range(int(os.environ.get("DMSCDC_RANDOM_SEEDS", "6")))


class ItemShape:
    """The rows of ``ROW``: what a new row holds and how a change alters one (the model's only
    knowledge of the table's columns)."""

    def new_row(self, rng: random.Random, key: int) -> dict:
        return {"id": key, "name": f"n{rng.randrange(10**6)}", "dept": rng.choice(DEPTS), "qty": rng.randrange(100)}

    def changed_row(self, rng: random.Random, row: dict) -> dict:
        row = {**row, "qty": rng.randrange(100)}
        if rng.random() < 0.8:  # else only the quantity: a history table's untracked column
            row["name"] = f"u{rng.randrange(10**6)}"
        if rng.random() < 0.3:
            row["dept"] = rng.choice(DEPTS)  # a partition move
        return row

    def deleted_row(self, rng: random.Random, row: dict) -> dict:
        """What a delete carries: the row as DMS last saw it."""
        return row


class SourceModel:
    """The source table as a dict (by an integer key the shape turns into the row's key columns),
    plus the DMS change rows its changes produce.

    :param shape: the table's columns (default: ``ROW``'s).
    """

    def __init__(self, rng: random.Random, shape=None):
        self.rng = rng
        self.shape = shape or ItemShape()
        self.rows: dict[int, dict] = {}
        self.next_id = 1
        self.appended: list[dict] = []  # what a keyless copy of the changes holds

    def random_row(self, key: int) -> dict:
        return self.shape.new_row(self.rng, key)

    def insert(self) -> dict:
        row = self.random_row(self.next_id)
        self.rows[self.next_id] = row
        self.next_id += 1
        return {"Op": "I", **row}

    def update(self, key: int) -> dict:
        row = self.shape.changed_row(self.rng, self.rows[key])
        self.rows[key] = row
        return {"Op": "U", **row}

    def delete(self, key: int) -> dict:
        return {"Op": "D", **self.shape.deleted_row(self.rng, self.rows.pop(key))}

    def reinsert(self, key: int) -> dict:
        row = self.random_row(key)
        self.rows[key] = row
        return {"Op": "I", **row}

    def change_file(self, size: int) -> list[dict]:
        changes, deleted = [], []
        for _ in range(size):
            roll = self.rng.random()
            if roll < 0.1 and self.rows:  # a burst on one key inside this file
                key = self.rng.choice(sorted(self.rows))
                changes.append(self.update(key))
                changes.append(self.delete(key))
                changes.append(self.reinsert(key))
                changes.append(self.update(key))
            elif roll < 0.4 or not self.rows:
                changes.append(self.insert())
            elif roll < 0.75:
                changes.append(self.update(self.rng.choice(sorted(self.rows))))
            elif roll < 0.9:
                key = self.rng.choice(sorted(self.rows))
                changes.append(self.delete(key))
                deleted.append(key)
            elif deleted:
                changes.append(self.reinsert(deleted.pop()))
        self.appended += [dict(c) for c in changes if c["Op"] == "I"]
        return changes


class HistoryModel:
    """Every version of each key: ``[row, start, end]`` (end None: current)."""

    TRACKED = ("id", "name", "dept")

    def __init__(self):
        self.versions: dict[int, list[list]] = {}

    def apply(self, touched: set[int], rows: dict[int, dict], at) -> None:
        """The state each touched key is in after a file of time ``at``."""
        for key in touched:
            chain = self.versions.setdefault(key, [])
            current = chain[-1] if chain and chain[-1][2] is None else None
            now = rows.get(key)
            if now is None:
                if current is not None:
                    current[2] = at
            elif current is not None and all(current[0][c] == now[c] for c in self.TRACKED):
                current[0] = dict(now)
            else:
                if current is not None:
                    current[2] = at
                chain.append([dict(now), at, None])

    def view(self) -> list[tuple]:
        return sorted((row["id"], row["name"], row["dept"], row["qty"], start, end)
                      for chain in self.versions.values() for row, start, end in chain)


def history_view(rows: list[dict]) -> list[tuple]:
    def utc(moment):
        return None if moment is None else moment.replace(tzinfo=None)

    return sorted((r["id"], r["name"], r["dept"], r["qty"], utc(r["__start_at"]), utc(r["__end_at"])) for r in rows)


def lake_view(rows: list[dict]) -> list[tuple]:
    return sorted((r["id"], r["name"], r["dept"], r["qty"]) for r in rows)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_change_streams_match_the_source_model(tmp_path, engine, table_format, seed):
    rng = random.Random(seed)
    lake = LakeHarness(tmp_path, engine, table_format)
    lake.configure("src.keyed", primary_key=["id"], partition_key=["dept"], history={"except": ["qty"]})
    lake.configure("src.keyless", partition_key=["dept"])
    keyed, keyless = SourceModel(rng), SourceModel(random.Random(seed + 1000))
    versions = HistoryModel()

    load_size = rng.randrange(0, 30)
    lake.load("src.keyed", [keyed.insert() for _ in range(load_size)], ROW)
    lake.load("src.keyless", [keyless.insert() for _ in range(load_size)], ROW)
    versions.apply(set(keyed.rows), keyed.rows, lake.clock.replace(tzinfo=None))
    keyless.appended = [{"Op": "I", **r} for r in keyless.rows.values()]
    for batch in range(3):
        if batch == 1 and rng.random() < 0.5:  # DMS reloads the keyed table: the same rows again
            lake.load("src.keyed", [{"Op": "I", **r} for r in keyed.rows.values()], ROW, modified=lake.tick(5))
        for _ in range(rng.randrange(1, 4)):
            at = lake.tick(rng.randrange(1, 90))
            changes = keyed.change_file(rng.randrange(1, 25))
            lake.cdc("src.keyed", changes, ROW, at=at)
            versions.apply({c["id"] for c in changes}, keyed.rows, at.replace(tzinfo=None))
            lake.cdc("src.keyless", keyless.change_file(rng.randrange(1, 25)), ROW, at=at)
        lake.run_ok()
        assert lake_view(lake.rows("src.keyed")) == lake_view(keyed.rows.values()), f"seed {seed} batch {batch}"
        assert lake_view(lake.rows("src.keyless")) == lake_view(keyless.appended), f"seed {seed} batch {batch}"
        assert history_view(lake.rows("src.keyed_history")) == versions.view(), f"seed {seed} batch {batch}"


LOB_ROW = pa.schema([("id", pa.int64()), ("name", pa.string()), ("doc", pa.string())])


@pytest.mark.parametrize("seed", SEEDS)
def test_random_updates_that_send_unchanged_lobs_as_null_keep_the_source_value(tmp_path, engine, table_format, seed):
    """DMS limited-LOB mode: an update carries null for a LOB it did not change; with
    ``keep_on_null`` the lake keeps the source's value through bursts, deletes and re-inserts."""
    rng = random.Random(seed)
    lake = LakeHarness(tmp_path, engine, table_format)
    lake.configure("src.docs", primary_key=["id"], keep_on_null=["doc"])
    source: dict[int, dict] = {}

    def document() -> str | None:
        return None if rng.random() < 0.2 else f"doc {rng.randrange(10**6)}"

    def insert(key: int) -> dict:
        source[key] = {"id": key, "name": f"n{rng.randrange(10**6)}", "doc": document()}
        return {"Op": "I", **source[key]}

    def update(key: int) -> dict:
        source[key]["name"] = f"u{rng.randrange(10**6)}"
        if rng.random() < 0.4:  # the LOB changed: DMS sends it (a new value)
            source[key]["doc"] = f"doc {rng.randrange(10**6)}"
            return {"Op": "U", **source[key]}
        return {"Op": "U", **source[key], "doc": None}  # unchanged: DMS sends null

    lake.load("src.docs", [insert(key) for key in range(rng.randrange(0, 20))], LOB_ROW)
    next_key = len(source)
    for batch in range(3):
        for _ in range(rng.randrange(1, 4)):
            changes = []
            for _ in range(rng.randrange(1, 20)):
                roll = rng.random()
                if roll < 0.3 or not source:
                    changes.append(insert(next_key))
                    next_key += 1
                elif roll < 0.8:
                    changes.append(update(rng.choice(sorted(source))))
                elif roll < 0.9:
                    key = rng.choice(sorted(source))
                    changes.append({"Op": "D", **source.pop(key)})
                else:  # a burst on one key: update, delete, re-insert, update
                    key = rng.choice(sorted(source))
                    changes += [update(key), {"Op": "D", **source.pop(key)}, insert(key), update(key)]
            lake.cdc("src.docs", changes, LOB_ROW, at=lake.tick(rng.randrange(1, 90)))
        lake.run_ok()
        assert sorted((r["id"], r["name"], r["doc"]) for r in lake.rows("src.docs")) == sorted(
            (r["id"], r["name"], r["doc"]) for r in source.values()), f"seed {seed} batch {batch}"
