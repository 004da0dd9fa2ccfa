"""OpenLineage for a merge: the table's DMS raw folder in, the lake table out, with the lake table's
schema, identity column lineage (each lake column comes from the DMS column of the same name) and,
when the table is in the Glue Data Catalog, a symlink to it.

Used by ``DmsCdcMergeOperator.get_openlineage_facets_on_complete``; only the OpenLineage provider
(``apache-airflow-providers-openlineage``, an optional extra) calls it, so its imports are inside.
Dataset names follow the OpenLineage naming spec: ``s3://bucket`` + key, ``file`` + absolute path,
Glue ``arn:aws:glue:<region>:<account>`` + ``table/<database>/<table>``.
"""

from __future__ import annotations

from dmscdc_provider.planner import without_scheme
from dmscdc_provider.storage import join, local_path


def parent_job_spark_properties(context) -> dict[str, str]:
    """The running task as the OpenLineage parent (and root parent) job of a remote Spark job:
    ``spark.openlineage.parentJobNamespace``, ``parentJobName``, ``parentRunId``, ... as the
    OpenLineage provider builds them for the Amazon provider's Glue and EMR operators, so the
    job's own OpenLineage events name the task's run. Empty, with a warning in the task log,
    without the OpenLineage provider."""
    from airflow.providers.common.compat.openlineage.utils.spark import (
        inject_parent_job_information_into_spark_properties,
    )

    return inject_parent_job_information_into_spark_properties({}, context)


def dataset_address(location: str) -> tuple[str, str]:
    """``(namespace, name)`` of a folder: ``s3://bucket`` and its key, or ``file`` and its path."""
    if location.startswith(("s3://", "s3a://")):
        bucket, _, key = without_scheme(location).partition("/")
        return f"s3://{bucket}", key.strip("/")
    return "file", local_path(location).rstrip("/")


def raw_table_location(plan) -> str:
    """The table's folder in raw (its controller key with the raw files' scheme)."""
    first = plan.files[0]["path"] if plan.files else ""
    scheme = first.split("://", 1)[0] + "://" if "://" in first and not first.startswith("file:") else ""
    return scheme + plan.state_path.rstrip("/")


def glue_table(plan, glue_catalog: dict | None) -> tuple[str, str] | None:
    """``(database, table)`` of the table in the Glue Data Catalog, or None: an Iceberg table in a
    ``glue://DATABASE`` catalog, or a Parquet table the ``glue_tables`` catalog refresh registers."""
    if plan.table_format == "iceberg":
        if (plan.iceberg_catalog or "").startswith("glue://"):
            return plan.iceberg_catalog[len("glue://"):].strip("/"), plan.table_name
        return None
    if glue_catalog and glue_catalog.get("database"):
        name_format = glue_catalog.get("table_name_format") or "{table}"
        return glue_catalog["database"], name_format.format(schema=plan.schema_name, table=plan.table_name).lower()
    return None


def lake_columns(plan, table_format, aws_conn_id=None, region_name=None) -> list[tuple[str, str]]:
    """``(column, type)`` of the lake table: the Iceberg schema, else a data file's Parquet footer
    plus the partition columns (held in folder names)."""
    types = table_format.column_types(plan)
    if not types:
        files = table_format.data_files(plan)
        if not files:
            return []
        import pyarrow.parquet as pq

        from dmscdc_provider.arrow_fs import arrow_filesystem

        filesystem, path = arrow_filesystem(join(plan.lake_table_path, files[0].relative_path), aws_conn_id,
                                            region_name)
        types = {field.name: field.type for field in pq.read_schema(path, filesystem=filesystem)}
        types.update({column: "string" for column in plan.partition_key if column not in types})
    return [(name, str(column_type)) for name, column_type in types.items()]


def merge_lineage(plan, columns: list[tuple[str, str]], glue_symlink: tuple[str, str] | None = None):
    """The ``OperatorLineage`` of a merge.

    :param columns: the lake table's ``(column, type)``.
    :param glue_symlink: ``(namespace, name)`` of the table in the Glue Data Catalog.
    """
    from airflow.providers.common.compat.openlineage.facet import (
        ColumnLineageDatasetFacet,
        Dataset,
        Fields,
        Identifier,
        InputField,
        SchemaDatasetFacet,
        SchemaDatasetFacetFields,
        SymlinksDatasetFacet,
    )
    from airflow.providers.openlineage.extractors import OperatorLineage

    raw_namespace, raw_name = dataset_address(raw_table_location(plan))
    lake_namespace, lake_name = dataset_address(plan.lake_table_path)
    output_facets = {}
    if columns:
        output_facets["schema"] = SchemaDatasetFacet(
            fields=[SchemaDatasetFacetFields(name=name, type=column_type) for name, column_type in columns])
        output_facets["columnLineage"] = ColumnLineageDatasetFacet(fields={
            name: Fields(inputFields=[InputField(namespace=raw_namespace, name=raw_name, field=name)],
                         transformationType="IDENTITY",
                         transformationDescription="the newest change of each key, applied in DMS order")
            for name, _ in columns})
    if glue_symlink:
        output_facets["symlinks"] = SymlinksDatasetFacet(
            identifiers=[Identifier(namespace=glue_symlink[0], name=glue_symlink[1], type="TABLE")])
    return OperatorLineage(
        inputs=[Dataset(namespace=raw_namespace, name=raw_name)],
        outputs=[Dataset(namespace=lake_namespace, name=lake_name, facets=output_facets)],
    )
