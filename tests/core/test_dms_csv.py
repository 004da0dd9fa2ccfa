"""DMS CSV read exactly as DMS writes it (``Rfc4180=true``, ``addColumnName=true``,
``csvDelimiter``, ``csvNullValue``), by every engine."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest

from dmscdc_provider.dms_writer import cdc_file_name, load_file_name

from tests.core.harness import LakeHarness

ITEM = pa.schema([("id", pa.int64()), ("name", pa.string())])

# Values that need RFC 4180 quoting (or must survive without it), one per key.
AWKWARD = {
    1: 'quote"d',
    2: '"fully quoted"',
    3: "comma, inside",
    4: "semi; colon",
    5: "tab\there",
    6: "line\nbreak",
    7: "windows\r\nline break",
    8: "carriage\rreturn",
    9: "unicode: żółć 東京 😀",
    10: "  spaces kept  ",
    11: "",
    12: None,
    13: 'ends with a quote"',
    14: '""',
    15: "|pipe|",
}


@pytest.fixture
def lake(tmp_path, engine):
    return LakeHarness(tmp_path, engine)


def names(rows) -> dict:
    return {int(r["id"]): r["name"] for r in rows}


def write_raw(lake: LakeHarness, table: str, file_name: str, text: str) -> str:
    """A CSV file with exactly these bytes, as DMS would put it in raw, written at the lake's clock."""
    path = os.path.join(lake.table_dir(table), file_name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        handle.write(text)
    stamp = lake.clock.timestamp()
    os.utime(path, (stamp, stamp))
    return path


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_values_needing_rfc4180_quotes_load_and_update_exactly(lake, delimiter):
    lake.configure("s.t", primary_key=["id"])
    lake.load("s.t", [{"Op": "I", "id": k, "name": v} for k, v in AWKWARD.items()], ITEM,
              extension="csv", csv_delimiter=delimiter)
    lake.run_ok(csv_delimiter=delimiter)
    assert names(lake.rows("s.t", order_by="CAST(id AS INTEGER)")) == AWKWARD

    changed = {k: (v + " v2" if v is not None else None) for k, v in AWKWARD.items()}
    lake.cdc("s.t", [{"Op": "U", "id": k, "name": v} for k, v in changed.items()], ITEM,
             extension="csv", csv_delimiter=delimiter)
    lake.run_ok(csv_delimiter=delimiter)
    assert names(lake.rows("s.t", order_by="CAST(id AS INTEGER)")) == changed


def test_gzip_compressed_csv_reads_exactly(lake):
    lake.configure("s.t", primary_key=["id"])
    lake.load("s.t", [{"Op": "I", "id": k, "name": v} for k, v in AWKWARD.items()], ITEM, extension="csv.gz")
    lake.run_ok()
    assert names(lake.rows("s.t", order_by="CAST(id AS INTEGER)")) == AWKWARD


def test_doubled_quotes_are_one_quote_and_quoted_line_breaks_stay_in_their_value(lake):
    lake.configure("s.t", primary_key=["id"])
    write_raw(lake, "s.t", load_file_name(1, "csv"),
              'Op,id,name\n'
              'I,1,"quote""d"\n'
              'I,2,"first line\nsecond line, with comma"\n'
              'I,3,"crlf\r\ninside"\n'
              'I,4,""""\n')
    lake.run_ok()
    assert names(lake.rows("s.t", order_by="CAST(id AS INTEGER)")) == {
        1: 'quote"d', 2: "first line\nsecond line, with comma", 3: "crlf\r\ninside", 4: '"'}


def test_empty_string_and_null_marker_stay_apart(lake):
    lake.configure("s.t", primary_key=["id"])
    write_raw(lake, "s.t", load_file_name(1, "csv"),
              "Op,id,name\nI,1,\nI,2,\"\"\nI,3,NULL\nI,4,null\n")
    lake.run_ok()
    assert names(lake.rows("s.t", order_by="CAST(id AS INTEGER)")) == {1: "", 2: "", 3: None, 4: "null"}


def test_the_text_null_is_null_under_the_default_marker_and_text_under_another(lake):
    """DMS writes its null marker unquoted, so a source value that is the marker's text cannot be
    told from a null; a source holding the text NULL needs another ``csvNullValue``."""
    lake.configure("s.default", primary_key=["id"])
    lake.configure("s.custom", primary_key=["id"])
    text = 'Op,id,name\nI,1,NULL\nI,2,"NULL, quoted"\nI,3,<null>\n'
    write_raw(lake, "s.default", load_file_name(1, "csv"), text)
    lake.run_ok(tables="s.default")
    assert names(lake.rows("s.default", order_by="CAST(id AS INTEGER)")) == {
        1: None, 2: "NULL, quoted", 3: "<null>"}

    write_raw(lake, "s.custom", load_file_name(1, "csv"), 'Op,id,name\nI,1,NULL\nI,2,"NULL"\nI,3,<null>\n')
    lake.run_ok(tables="s.custom", csv_null_value="<null>")
    assert names(lake.rows("s.custom", order_by="CAST(id AS INTEGER)")) == {1: "NULL", 2: "NULL", 3: None}


def test_empty_null_marker_makes_unquoted_empty_fields_null_and_quoted_ones_empty(lake):
    lake.configure("s.t", primary_key=["id"])
    write_raw(lake, "s.t", load_file_name(1, "csv"), 'Op,id,name\nI,1,\nI,2,""\nI,3,NULL\n')
    lake.run_ok(csv_null_value="")
    assert names(lake.rows("s.t", order_by="CAST(id AS INTEGER)")) == {1: None, 2: "", 3: "NULL"}


def test_a_file_of_a_header_alone_holds_no_rows(lake):
    lake.configure("s.t", primary_key=["id"])
    lake.load("s.t", [], ITEM, extension="csv")
    lake.run_ok()
    assert lake.rows("s.t") == []
    lake.cdc("s.t", [], ITEM, extension="csv")
    lake.cdc("s.t", [{"Op": "I", "id": 1, "name": "one"}], ITEM, extension="csv")
    lake.run_ok()
    assert [(row["id"], row["name"]) for row in lake.rows("s.t")] == [("1", "one")]


def test_header_row_names_the_columns_in_the_files_order(lake):
    lake.configure("s.t", primary_key=["id"])
    write_raw(lake, "s.t", load_file_name(1, "csv"), "name,Op,id\none,I,1\n")
    write_raw(lake, "s.t", cdc_file_name(lake.tick(), extension="csv"), "Op,id,name\nU,1,uno\n")
    lake.run_ok()
    assert [(r["id"], r["name"], r["Op"]) for r in lake.rows("s.t")] == [("1", "uno", "U")]


def test_csv_load_files_without_op_are_inserts_and_cdc_files_with_op_apply(lake):
    lake.configure("s.t", primary_key=["id"])
    lake.load("s.t", [{"id": 1, "name": "one"}, {"id": 2, "name": "two, too"}], ITEM,
              extension="csv", with_op=False)
    lake.cdc("s.t", [{"Op": "D", "id": 1, "name": "one"}], ITEM, extension="csv")
    lake.run_ok()
    assert [(r["Op"], r["id"], r["name"]) for r in lake.rows("s.t")] == [("I", "2", "two, too")]


def test_row_order_holds_across_multiline_values(lake):
    """Changes to one key in one file, each value spanning lines: the last row wins."""
    lake.configure("s.t", primary_key=["id"])
    lake.cdc("s.t", [{"Op": "I" if v == 0 else "U", "id": 1, "name": f"version {v}\nline two, \"quoted\""}
                     for v in range(300)], ITEM, extension="csv")
    lake.run_ok()
    assert names(lake.rows("s.t")) == {1: 'version 299\nline two, "quoted"'}


def test_a_row_with_missing_fields_fails_the_table_naming_file_and_cause(lake):
    lake.configure("s.t", primary_key=["id"])
    path = write_raw(lake, "s.t", load_file_name(1, "csv"), "Op,id,name\nI,1,one\nI,2\n")
    (outcome,) = lake.run().outcomes
    assert outcome.status == "failed"
    assert outcome.error["file"] == path
    assert outcome.error["problem"] and "\n" not in outcome.error["problem"]
    assert lake.rows("s.t") == []
    assert lake.state("s.t").last_full_load_date == "1900-01-01 00:00:00"


ALPHABET = ['"', ",", ";", "\t", "\n", "\r\n", "\r", " ", "a", "Z", "0", "ż", "東", "😀", "NULL", "|", "\\", "'"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_values_survive_a_load_and_a_change_batch(lake, seed):
    """Values built from every character DMS quoting cares about, loaded then updated: the lake
    holds exactly what the source held (a value equal to the null marker aside, see above)."""
    import random

    rng = random.Random(seed)

    def value():
        if rng.random() < 0.1:
            return None
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(0, 8)))
        return text if text != "NULL" else text + "!"

    lake.configure("s.t", primary_key=["id"])
    source = {k: value() for k in range(60)}
    lake.load("s.t", [{"Op": "I", "id": k, "name": v} for k, v in source.items()], ITEM, extension="csv")
    changes = []
    for k in rng.sample(sorted(source), 30):
        source[k] = value()
        changes.append({"Op": "U", "id": k, "name": source[k]})
    for k in rng.sample(sorted(source), 5):
        del source[k]
        changes.append({"Op": "D", "id": k, "name": None})
    lake.cdc("s.t", changes, ITEM, extension="csv")
    lake.run_ok()
    assert names(lake.rows("s.t", order_by="CAST(id AS INTEGER)")) == source
