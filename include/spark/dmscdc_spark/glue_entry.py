"""AWS Glue script of the dmscdc merge: the only module that imports ``awsglue``.

Glue calls it with ``--dmscdc_plan s3://.../plan.json`` (the job's ``--extra-py-files`` zip
holds the ``dmscdc_spark`` package); the merge itself is ``dmscdc_spark.submit.run_job``, the
same code EMR and local Spark run. Optional ``--dmscdc_result URI`` overrides where the
result document goes.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from awsglue.context import GlueContext
    from awsglue.utils import getResolvedOptions
    from pyspark.context import SparkContext

    from dmscdc_spark.submit import run_job

    argv = sys.argv if argv is None else argv
    options = ["dmscdc_plan"] + (["dmscdc_result"] if "--dmscdc_result" in argv else [])
    args = getResolvedOptions(argv, options)
    glue_context = GlueContext(SparkContext.getOrCreate())
    run_job(glue_context.spark_session, args["dmscdc_plan"], args.get("dmscdc_result"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
