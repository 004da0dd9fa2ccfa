"""spark-submit entry point of the dmscdc merge (EMR on EC2, EMR Serverless, any Spark).

    spark-submit --py-files dmscdc_spark.zip submit.py --plan s3://.../plan.json [--result URI]

(``submit.py`` is this module's file, uploaded beside the library zip; ``python -m
dmscdc_spark.submit`` runs the same where the package is installed.)

Reads the engine plan document, runs ``dmscdc_spark.run_merge`` and writes the result document
(default: ``result.json`` in the plan's folder). All I/O goes through Spark and the Hadoop
FileSystem API, so ``s3://`` (EMRFS, Glue), ``s3a://``, ``hdfs://`` and local paths all work;
nothing here knows about Airflow or boto3. Glue runs it through ``glue_entry.py``.

Bad input (a corrupt file, an unknown Op) is a normal outcome: the result says ``failed`` and
the job exits 0, so the service does not retry it. An infrastructure failure still writes a
``failed`` result when it can, then exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import sys

RESULT_FILE_NAME = "result.json"


def result_uri_for(plan_uri: str) -> str:
    """Where the result goes by default: ``result.json`` beside the plan."""
    return plan_uri.rsplit("/", 1)[0] + "/" + RESULT_FILE_NAME


def read_text(spark, uri: str) -> str:
    """A whole small file as text, through Spark's Hadoop file systems."""
    return spark.read.text(uri, wholetext=True).first()[0]


def write_text(spark, uri: str, text: str) -> None:
    """Write (or replace) a small file through the Hadoop FileSystem of ``uri``."""
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    file_system = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    stream = file_system.create(path, True)
    try:
        stream.write(bytearray(text.encode("utf-8")))
    finally:
        stream.close()


def run_job(spark, plan_uri: str, result_uri: str | None = None) -> dict:
    """Merge the plan at ``plan_uri`` and write its result document; returns the document.

    :raises Exception: the merge failed for a reason other than its input (after writing a
        ``failed`` result describing it).
    """
    from dmscdc_spark import run_merge
    from dmscdc_spark.errors import root_cause

    result_uri = result_uri or result_uri_for(plan_uri)
    plan = json.loads(read_text(spark, plan_uri))
    try:
        result = run_merge(spark, plan)
    except Exception as error:
        failed = {
            "status": "failed",
            "table": plan.get("table"),
            "plan_id": plan.get("plan_id"),
            "attempt_id": plan.get("attempt_id"),
            "mode": plan.get("mode"),
            "error": {
                "table": plan.get("table"),
                "file": None,
                "problem": f"the Spark job failed: {root_cause(error)}",
                "remedy": "see the job's driver log; the table's state is unchanged, run again",
                # Not the input's fault (that is a MergeInputError): a retry may succeed.
                "kind": "infrastructure",
            },
        }
        write_text(spark, result_uri, json.dumps(failed, sort_keys=True))
        raise
    write_text(spark, result_uri, json.dumps(result, sort_keys=True, default=str))
    return result


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dmscdc_spark.submit", description="Run one dmscdc table merge.")
    parser.add_argument("--plan", required=True, help="URI of the engine plan document (JSON)")
    parser.add_argument("--result", default=None, help=f"URI of the result document (default: {RESULT_FILE_NAME} beside the plan)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, spark=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if spark is None:
        from pyspark.sql import SparkSession

        spark = SparkSession.builder.appName("dmscdc-merge").getOrCreate()
    result = run_job(spark, args.plan, args.result)
    print(json.dumps({key: result.get(key) for key in ("table", "status", "rows_written")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
