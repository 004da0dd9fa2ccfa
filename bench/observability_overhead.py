"""What the merge task's observability costs per table once Airflow is loaded: the Airflow metrics
(11 gauges, metrics off: Airflow's no-op client) and the OpenLineage facets (a data file's footer
for the schema, the datasets and column lineage), for every table of a finished run.

    python bench/observability_overhead.py --state sqlite:///RUN/state.sqlite --lake RUN/lake --raw RAW

Needs apache-airflow-providers-openlineage. The first call's imports (Airflow, the OpenLineage
client) are timed apart: a task process has imported Airflow before it runs the operator, and the
OpenLineage listener imports its client whatever the operator reports. The history record, written
by every merge also outside Airflow, is in the whole-process comparison (docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import time

from dmscdc_provider.observability.lineage import lake_columns, merge_lineage
from dmscdc_provider.observability.metrics import emit_merge_metrics
from dmscdc_provider.plan import TablePlan
from dmscdc_provider.planner import list_table_files
from dmscdc_provider.state.base import open_store
from dmscdc_provider.storage import join, open_storage
from dmscdc_provider.table_formats import table_format_for_plan


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--state", required=True)
    parser.add_argument("--lake", required=True)
    parser.add_argument("--raw", required=True)
    args = parser.parse_args()
    store = open_store(args.state)
    states = [s for s in store.list() if s.last_run and s.last_run.get("figures")]
    storage = open_storage(args.lake)
    plans = [TablePlan(table=s.name, state_path=s.path, base_version=s.version, mode="incremental",
                       files=[{"path": f.path, "kind": f.kind, "size": f.size}
                              for f in list_table_files(open_storage(args.raw), join(args.raw, s.schema, s.table))],
                       lake_root=args.lake, primary_key=list(s.primary_key), partition_key=list(s.partition_key),
                       new_last_full_load_date=s.last_full_load_date, new_last_incremental_file=None)
             for s in states]

    started = time.perf_counter()
    emit_merge_metrics("warm-up", "warm.up", states[0].last_run["figures"])
    import airflow.providers.common.compat.openlineage.facet  # noqa: F401
    import airflow.providers.openlineage.extractors  # noqa: F401
    imports = time.perf_counter() - started

    started = time.perf_counter()
    for state in states:
        emit_merge_metrics("bench", state.name, state.last_run["figures"])
    metrics = time.perf_counter() - started
    started = time.perf_counter()
    for plan in plans:
        merge_lineage(plan, lake_columns(plan, table_format_for_plan(plan, storage)), None)
    lineage = time.perf_counter() - started
    print(json.dumps({"tables": len(states), "metrics_seconds": round(metrics, 4),
                      "lineage_seconds": round(lineage, 4), "first_call_imports_seconds": round(imports, 3)}))


if __name__ == "__main__":
    main()
