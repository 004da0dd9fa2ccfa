"""Reading and writing through Spark and the Hadoop FileSystem API only.

Nothing here knows whether a path is local, ``s3://`` (EMRFS, Glue) or ``s3a://``: the same
calls run everywhere the job runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from dmscdc_spark.rules import FILE_SEQ, OP, ROW_POS, column


@dataclass(frozen=True)
class StoredFile:
    """A data file found under a folder: its path relative to that folder and its size."""

    relative_path: str
    size: int


class HadoopFiles:
    """Listing and deleting through the Hadoop FileSystem of the running Spark session."""

    def __init__(self, spark: SparkSession):
        self._jvm = spark.sparkContext._jvm
        self._conf = spark.sparkContext._jsc.hadoopConfiguration()

    def _fs_and_path(self, path: str):
        hadoop_path = self._jvm.org.apache.hadoop.fs.Path(path)
        fs = hadoop_path.getFileSystem(self._conf)
        return fs, fs.makeQualified(hadoop_path)

    def list_data_files(self, root: str) -> list[StoredFile]:
        """Parquet files under ``root`` (recursively) that readers see: no ``_`` or ``.`` in any name."""
        fs, qualified = self._fs_and_path(root)
        if not fs.exists(qualified):
            return []
        prefix = qualified.toString().rstrip("/") + "/"
        found = []
        iterator = fs.listFiles(qualified, True)
        while iterator.hasNext():
            status = iterator.next()
            relative = status.getPath().toString()[len(prefix):]
            if relative.endswith(".parquet") and not is_hidden(relative):
                found.append(StoredFile(relative, status.getLen()))
        return sorted(found, key=lambda f: f.relative_path)

    def exists(self, path: str) -> bool:
        fs, qualified = self._fs_and_path(path)
        return fs.exists(qualified)

    def qualified(self, path: str) -> str:
        return self._fs_and_path(path)[1].toString()

    def delete_tree(self, path: str) -> None:
        fs, qualified = self._fs_and_path(path)
        if fs.exists(qualified):
            fs.delete(qualified, True)


def is_hidden(relative_path: str) -> bool:
    """A ``_`` or ``.`` name anywhere in the path: query engines skip such files, and so do we."""
    return any(part.startswith(("_", ".")) for part in relative_path.split("/"))


def relative_to(root_qualified: str, file_uri: str) -> str:
    """Path of ``file_uri`` (as Spark's ``_metadata.file_path`` gives it) relative to a root.

    ``_metadata.file_path`` is a URI: percent-encoded, and ``file:///x`` where Hadoop says
    ``file:/x``; both are brought to Hadoop's form before comparing.
    """
    decoded = unquote(file_uri)
    if decoded.startswith("file:///"):
        decoded = "file:/" + decoded[len("file:///"):]
    prefix = root_qualified.rstrip("/") + "/"
    if not decoded.startswith(prefix):
        raise ValueError(f"{file_uri} is not under {root_qualified}")
    return decoded[len(prefix):]


@dataclass(frozen=True)
class CsvFormat:
    """How DMS wrote its CSV files (the DMS endpoint's ``csvDelimiter`` and ``csvNullValue``)."""

    delimiter: str = ","
    null_value: str = "NULL"


# What Spark's CSV reader is told the null text is. Spark returns null for a field that equals
# it and for an unquoted empty field alike, so it is set to a text no DMS value holds: then a
# null from Spark can only be an unquoted empty field, and the null marker arrives as its text.
_UNQUOTED_EMPTY = "\u0000dmscdc:unquoted-empty\u0000"


def read_dms_csv(spark: SparkSession, path: str, csv_format: CsvFormat) -> DataFrame:
    """A DMS CSV file (``Rfc4180=true``, ``addColumnName=true``) as string columns, exactly.

    RFC 4180: a value holding the quote, the delimiter or a line break is enclosed in double
    quotes, an inner quote doubled (``"quote""d"`` is ``quote"d``). ``multiLine`` keeps quoted
    line breaks inside their value; it also reads each file whole in one task, which the row
    position relies on. Nulls: a field whose text is the null marker (``csvNullValue``; DMS
    does not quote it) is null; an empty field is the empty string, except an unquoted one
    when the marker is the empty string; a quoted ``""`` is always the empty string.
    """
    frame = (
        spark.read.option("header", True)
        .option("sep", csv_format.delimiter)
        .option("quote", '"')
        .option("escape", '"')
        .option("multiLine", True)
        .option("nullValue", _UNQUOTED_EMPTY)
        .option("emptyValue", "")
        .option("inferSchema", False)
        .option("mode", "FAILFAST")
        .csv(path)
    )
    marker = csv_format.null_value
    if marker == "":  # Spark's null is exactly the unquoted empty field: already right
        return frame
    return frame.select(*[
        F.when(column(name) == F.lit(marker), F.lit(None).cast("string"))
        .otherwise(F.coalesce(column(name), F.lit("")))
        .alias(name)
        for name in frame.columns
    ])


def read_change_file(
    spark: SparkSession, path: str, file_seq: int, csv_format: CsvFormat
) -> DataFrame:
    """One DMS file with ``Op`` (``I`` where the file has none) and its ordering columns.

    Row position: for Parquet, ``_metadata.row_index`` is the row's index in the file however
    Spark splits it. CSV has no such column; it is read whole in one task (``multiLine``, see
    ``read_dms_csv``), so ``monotonically_increasing_id`` grows with the row's position in it.
    """
    if is_csv(path):
        frame = read_dms_csv(spark, path, csv_format)
        position = F.monotonically_increasing_id()
    else:
        frame = spark.read.parquet(path)
        position = F.col("_metadata.row_index")
    if OP not in frame.columns:
        frame = frame.withColumn(OP, F.lit("I"))
    return frame.withColumn(FILE_SEQ, F.lit(file_seq)).withColumn(ROW_POS, position)


def read_parquet_changes(
    spark: SparkSession, files: list[tuple[str, int]], *, full_load: bool = False
) -> DataFrame:
    """Several DMS Parquet files in one scan, each row tagged with its file's plan position.

    One scan and one schema job (``mergeSchema``: columns added over time) instead of one
    per file. The file is told by ``_metadata.file_name``, which is unique among a table's DMS
    files (their names carry a counter or a timestamp); the caller checks that.

    :param full_load: the files are one full load: a snapshot, where a key is unique, so rows
        need neither file nor position and the reader is spared per-row metadata.
    """
    frame = spark.read.option("mergeSchema", True).parquet(*[path for path, _ in files])
    # A null Op stays null (the merge refuses it); a file without an Op column among files with
    # one also reads as null here, and the merge then reads the files one by one.
    op = F.col(OP) if OP in frame.columns else F.lit("I")
    if full_load:
        # No per-row metadata: the first file's position stands for all (their order is moot).
        return frame.withColumn(OP, op).withColumn(FILE_SEQ, F.lit(files[0][1])).withColumn(ROW_POS, F.lit(0).cast("long"))
    seq_by_name = F.create_map(*[item for path, seq in files for item in (F.lit(file_name(path)), F.lit(seq))])
    return (
        frame.withColumn(OP, op)
        .withColumn(FILE_SEQ, seq_by_name[F.col("_metadata.file_name")])
        .withColumn(ROW_POS, F.col("_metadata.row_index"))
    )


def file_name(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def is_csv(path: str) -> bool:
    return path.endswith((".csv", ".csv.gz"))


def partition_base(relative_path: str) -> str:
    """The folders of a lake file's path before its first ``column=value`` folder: an Iceberg
    table's files sit under ``data/<attempt>/``, a Parquet folder's directly under the table."""
    base = []
    for part in relative_path.split("/")[:-1]:
        if "=" in part:
            break
        base.append(part)
    return "/".join(base)


def read_lake_files(reader, table_root: str, relative_paths: list[str], each=None) -> DataFrame:
    """Lake files with their hive partition columns, in one scan per base folder (Spark's
    partition discovery takes one base per scan); the scans are unioned by column name.

    :param each: applied to each scan before the union (where ``_metadata`` can still be read).
    """
    root = table_root.rstrip("/")
    groups: dict[str, list[str]] = {}
    for path in relative_paths:
        groups.setdefault(partition_base(path), []).append(f"{root}/{path}")
    frames = [reader.option("basePath", f"{root}/{base}" if base else root).parquet(*paths)
              for base, paths in sorted(groups.items())]
    frames = [each(frame) for frame in frames] if each else frames
    frame = frames[0]
    for other in frames[1:]:
        frame = frame.unionByName(other, allowMissingColumns=True)
    return frame


def read_lake_file(spark: SparkSession, table_root: str, relative_path: str) -> DataFrame:
    """One lake file with its hive partition columns (as strings; the caller casts them)."""
    return (
        spark.read.option("basePath", table_root)
        .parquet(f"{table_root.rstrip('/')}/{relative_path}")
    )


def write_staged(
    frame: DataFrame, staging_path: str, partition_columns: list[str], file_count: int,
    max_records_per_file: int,
) -> None:
    """Write the merged rows as Parquet under the staging folder, hive-partitioned.

    Partitioned tables: repartitioning by the partition columns sends each partition value to
    one task, so a run writes one file per partition value (split past
    ``max_records_per_file``). Unpartitioned tables: at most ``file_count`` files, sized from
    the input; ``coalesce`` merges read splits without a shuffle, so a full load costs about
    what copying its files costs.
    """
    if partition_columns:
        frame = frame.repartition(file_count, *[column(c) for c in partition_columns])
        floating = [c for c in partition_columns
                    if isinstance(frame.schema[c].dataType, (T.FloatType, T.DoubleType))]
        if floating:
            # Spark hashes and sorts -0.0 as 0.0 but writes each to its own folder (``x=-0.0``,
            # ``x=0.0``): a task whose rows interleave them would open a folder's file twice.
            # Ordered by the sign as well, each folder's rows come together.
            frame = frame.sortWithinPartitions(*[
                order for c in partition_columns
                for order in ([column(c), F.when(column(c) == 0, column(c).cast("string"))] if c in floating
                              else [column(c)])])
    else:
        frame = frame.coalesce(file_count)
    (
        frame.write.mode("overwrite")
        .option("maxRecordsPerFile", max_records_per_file)
        .partitionBy(*partition_columns)
        .parquet(staging_path)
    )
