"""Randomized check against an in-memory model of the source database.

Each seed generates a source that changes over several batches (inserts, updates, deletes,
same-key bursts inside one file, updates that move a row to another partition) and a keyless
table fed the same way. After every batch the lake must equal the model exactly. More seeds:
``DMSCDC_RANDOM_SEEDS=50 pytest tests/core/test_randomized.py``.
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
        row = {**row, "name": f"u{rng.randrange(10**6)}", "qty": rng.randrange(100)}
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


def lake_view(rows: list[dict]) -> list[tuple]:
    return sorted((r["id"], r["name"], r["dept"], r["qty"]) for r in rows)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_change_streams_match_the_source_model(tmp_path, engine, table_format, seed):
    rng = random.Random(seed)
    lake = LakeHarness(tmp_path, engine, table_format)
    lake.configure("src.keyed", primary_key=["id"], partition_key=["dept"])
    lake.configure("src.keyless", partition_key=["dept"])
    keyed, keyless = SourceModel(rng), SourceModel(random.Random(seed + 1000))

    load_size = rng.randrange(0, 30)
    lake.load("src.keyed", [keyed.insert() for _ in range(load_size)], ROW)
    lake.load("src.keyless", [keyless.insert() for _ in range(load_size)], ROW)
    keyless.appended = [{"Op": "I", **r} for r in keyless.rows.values()]
    for batch in range(3):
        for _ in range(rng.randrange(1, 4)):
            at = lake.tick(rng.randrange(1, 90))
            lake.cdc("src.keyed", keyed.change_file(rng.randrange(1, 25)), ROW, at=at)
            lake.cdc("src.keyless", keyless.change_file(rng.randrange(1, 25)), ROW, at=at)
        lake.run_ok()
        assert lake_view(lake.rows("src.keyed")) == lake_view(keyed.rows.values()), f"seed {seed} batch {batch}"
        assert lake_view(lake.rows("src.keyless")) == lake_view(keyless.appended), f"seed {seed} batch {batch}"
