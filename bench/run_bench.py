"""Benchmark: dmscdc against the blog's incremental algorithm and a plain Spark copy.

    make bench                                    # whole processes, N=2M and 8M, 100 tables, the demo
    .venv/bin/python bench/run_bench.py --quick   # a smoke run of the same (N=200k, one repeat)
    .venv/bin/python bench/run_bench.py --modes cold,warm   # the Spark merge alone, in and out of one JVM

Mode ``whole`` (the default; bench/whole_process.py) starts from DMS LOAD files and times whole
processes as a user runs them: dmscdc's own full load lays out the lake, then one CDC file of K
changes (80% updates and 10% deletes on the newest 5% of ids, 10% inserts) is merged by
``dmscdc run`` (engine auto), by ``dmscdc run --engine local`` and by the blog's algorithm in a
new JVM; plus a plain Spark copy of the LOAD files, 100 small tables, and ``dmscdc demo``.

Modes ``cold`` and ``warm`` measure the Spark merge alone against the blog's algorithm on a lake
of N rows in F files (ids clustered, as an auto-increment table loads): every measured run
starts from a fresh copy of the table, in a fresh Spark JVM (cold, clock started after the JVM
is up) or in one JVM after a warm-up run (warm). The rewrite floor is a plain Spark read and
write of only the lake files that hold an updated or deleted id: the work any copy-on-write
merge must do.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from decimal import Decimal

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

CDC_NAME = "20240301-100000000.parquet"
STATUSES = ["placed", "paid", "shipped", "delivered"]
CHANNELS = ["web", "store", "phone"]
SPARK_CONF = {"spark.driver.memory": "6g", "spark.sql.shuffle.partitions": "8"}


# -- data ------------------------------------------------------------------------------------
def _session():
    from dmscdc_spark.session import local_session

    return local_session("local[2]", SPARK_CONF)


def write_orders_load(spark, load_dir: str, rows: int, files: int) -> None:
    """The source's full load as DMS writes it: ``files`` LOAD files of an orders table of ``rows``
    rows (an auto-increment key and a dozen columns, ids clustered by file)."""
    from pyspark.sql import functions as F

    table = (
        spark.range(0, rows, 1, files)  # contiguous id ranges per partition: clustered ids
        .select(
            F.lit("I").alias("Op"),
            F.col("id"),
            (F.col("id") % 250000).alias("customer_id"),
            (F.col("id") * 7 % 5000).cast("int").alias("product_id"),
            (F.col("id") % 40).cast("int").alias("store_id"),
            (F.col("id") % 9 + 1).cast("int").alias("quantity"),
            (F.col("id") % 997 / 10 + 1).cast("decimal(10,2)").alias("unit_price"),
            (F.col("id") % 5 * 2.5).cast("decimal(5,2)").alias("discount_pct"),
            F.element_at(F.array(*[F.lit(s) for s in STATUSES]), (F.col("id") % 4 + 1).cast("int")).alias("status"),
            F.element_at(F.array(*[F.lit(c) for c in CHANNELS]), (F.col("id") % 3 + 1).cast("int")).alias("channel"),
            F.concat(F.lit("order note "), F.sha1(F.col("id").cast("string")).substr(1, 16)).alias("note"),
            F.expr("timestamp_millis(1700000000000 + id * 1000)").alias("created_at"),
            F.expr("timestamp_millis(1700000000000 + id * 1000 + 3600000)").alias("updated_at"),
        )
    )
    table.write.mode("overwrite").parquet(load_dir + "_spark")
    os.makedirs(load_dir, exist_ok=True)
    parts = sorted(p for p in os.listdir(load_dir + "_spark") if p.endswith(".parquet"))
    for counter, part in enumerate(parts, start=1):
        os.replace(os.path.join(load_dir + "_spark", part), os.path.join(load_dir, f"LOAD{counter:08X}.parquet"))
    shutil.rmtree(load_dir + "_spark")


def write_orders_changes(path: str, rows: int, changes: int) -> list[int]:
    """One DMS CDC file of ``changes`` changes to the orders table: 80% updates and 10% deletes
    on the newest 5% of ids, 10% inserts of new ids. Returns the updated and deleted ids."""
    import random

    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(rows)
    newest = range(rows - max(1, rows // 20), rows)
    touched = rng.sample(newest, int(changes * 0.9))
    updates, deletes = touched[: int(changes * 0.8)], touched[int(changes * 0.8):]
    inserts = range(rows, rows + changes - len(touched))
    stamp = datetime(2024, 3, 1, 10, tzinfo=timezone.utc).replace(tzinfo=None)

    def order(op: str, key: int, status: str) -> dict:
        return {"Op": op, "id": key, "customer_id": key % 250000, "product_id": key * 7 % 5000,
                "store_id": key % 40, "quantity": key % 9 + 1, "unit_price": Decimal("9.99"),
                "discount_pct": Decimal("0.00"), "status": status, "channel": CHANNELS[key % 3],
                "note": f"order note {key:016x}", "created_at": stamp, "updated_at": stamp}

    records = ([order("U", i, "returned") for i in updates] + [order("D", i, "cancelled") for i in deletes]
               + [order("I", i, "new") for i in inserts])
    schema = pa.schema([
        ("Op", pa.string()), ("id", pa.int64()), ("customer_id", pa.int64()), ("product_id", pa.int32()),
        ("store_id", pa.int32()), ("quantity", pa.int32()), ("unit_price", pa.decimal128(10, 2)),
        ("discount_pct", pa.decimal128(5, 2)), ("status", pa.string()), ("channel", pa.string()),
        ("note", pa.string()), ("created_at", pa.timestamp("ms")), ("updated_at", pa.timestamp("ms")),
    ])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.Table.from_pylist(records, schema), path)
    return touched


def build_dataset(workdir: str, rows: int, files: int, changes: int) -> dict:
    """LOAD files (the source's full load) and a lake table made from them, plus one CDC file."""
    spark = _session()
    load_dir = os.path.join(workdir, "raw", "bench", "orders")
    lake_root = os.path.join(workdir, "lake")
    write_orders_load(spark, load_dir, rows, files)
    lake_table = os.path.join(lake_root, "bench", "orders")
    os.makedirs(lake_table)
    for name in sorted(os.listdir(load_dir)):
        shutil.copy(os.path.join(load_dir, name), os.path.join(lake_table, f"part-{name}"))
    touched = write_orders_changes(os.path.join(workdir, "raw", "bench", "orders_cdc", CDC_NAME), rows, changes)
    spark.stop()
    # The lake files that hold an updated or deleted id: what any copy-on-write merge must rewrite.
    with open(os.path.join(workdir, "affected_files.json"), "w") as handle:
        json.dump(_files_holding(lake_table, set(touched)), handle)
    return {"rows": rows, "files": files, "changes": changes, "workdir": workdir}


def _files_holding(table_dir: str, ids: set[int]) -> list[str]:
    import pyarrow.parquet as pq

    names = sorted(n for n in os.listdir(table_dir) if n.endswith(".parquet"))
    return [n for n in names if not ids.isdisjoint(pq.read_table(os.path.join(table_dir, n), columns=["id"])["id"].to_pylist())]


def fresh_copy(workdir: str, run: str) -> str:
    """A copy of the lake table for one run (hard links: the merges only add and delete files)."""
    target = os.path.join(workdir, "runs", run)
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(os.path.join(workdir, "lake"), target, copy_function=os.link)
    return target


def _table_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(path) for n in names
               if n.endswith(".parquet"))


# -- one measured run (in its own process and JVM) -----------------------------------------------
def worker(kind: str, workdir: str, run: str) -> dict:
    spark = _session()
    spark.range(1).count()  # the JVM is up and warm enough; the clock starts now
    lake_root = fresh_copy(workdir, run)
    started = time.perf_counter()
    detail = _run_kind(spark, kind, workdir, lake_root)
    seconds = time.perf_counter() - started
    shutil.rmtree(lake_root, ignore_errors=True)
    spark.stop()
    return {"seconds": seconds, **detail}


KINDS = ("dmscdc", "blog", "rewrite_floor", "dmscdc_full_load", "plain_copy")


def _run_kind(spark, kind: str, workdir: str, lake_root: str) -> dict:
    raw = os.path.join(workdir, "raw", "bench")
    cdc_path = os.path.join(raw, "orders_cdc", CDC_NAME)
    lake_table = os.path.join(lake_root, "bench", "orders")
    if kind == "blog":
        from blog_algorithm import blog_incremental_load

        return blog_incremental_load(spark, [cdc_path], lake_table, ["id"])
    if kind == "rewrite_floor":
        # Only the work every copy-on-write merge has to do: read the affected files, write them.
        with open(os.path.join(workdir, "affected_files.json")) as handle:
            affected = [os.path.join(lake_table, name) for name in json.load(handle)]
        spark.read.parquet(*affected).write.parquet(os.path.join(lake_root, "floor"))
        return {"files_rewritten": len(affected)}
    if kind == "plain_copy":
        loads = sorted(os.path.join(raw, "orders", n) for n in os.listdir(os.path.join(raw, "orders")))
        spark.read.parquet(*loads).write.parquet(os.path.join(lake_root, "copy"))
        return {}
    return _dmscdc_run(spark, kind, raw, lake_root, cdc_path)


def warm_worker(workdir: str, repeats: int) -> dict:
    """Every kind in one long-lived JVM: one untimed warm-up run each, then ``repeats`` timed
    rounds, kinds alternating, each on a fresh copy of the table."""
    spark = _session()
    timings = {kind: [] for kind in KINDS}
    for round_index in range(repeats + 1):
        for kind in KINDS:
            lake_root = fresh_copy(workdir, f"warm-{kind}")
            started = time.perf_counter()
            _run_kind(spark, kind, workdir, lake_root)
            if round_index:  # round 0 warms the JVM up
                timings[kind].append(time.perf_counter() - started)
            shutil.rmtree(lake_root, ignore_errors=True)
    spark.stop()
    return timings


def _dmscdc_run(spark, kind: str, raw: str, lake_root: str, cdc_path: str) -> dict:
    from dmscdc_provider.engines.local import LocalSparkEngine
    from dmscdc_provider.planner import list_table_files, plan_table
    from dmscdc_provider.runner import run_table
    from dmscdc_provider.state.base import TableState
    from dmscdc_provider.state.sqlite import SqliteControllerStore
    from dmscdc_provider.storage import LocalStorage

    store = SqliteControllerStore(os.path.join(lake_root, "_state.sqlite"))
    state = TableState(path=f"{raw}/orders/", schema="bench", table="orders", active=True, primary_key=("id",))
    storage = LocalStorage()
    if kind == "dmscdc_full_load":
        shutil.rmtree(os.path.join(lake_root, "bench"))
        files = list_table_files(storage, os.path.join(raw, "orders"))
    else:
        state = state.evolve(last_full_load_date="2100-01-01 00:00:00")
        files = list_table_files(storage, os.path.dirname(cdc_path))
    store.register(state)
    plan = plan_table(store.get(state.path), files, lake_root)
    outcome = run_table(plan, LocalSparkEngine(session=spark), store, storage)
    assert outcome.succeeded, outcome.to_dict()
    removed = outcome.summary["files_removed"]
    return {"files_rewritten": removed, "rows_written": outcome.summary["rows_written"]}


def measure(kind: str, workdir: str, repeats: int) -> dict:
    runs = []
    for index in range(repeats):
        process = subprocess.Popen(
            [sys.executable, __file__, "--worker", kind, "--workdir", workdir, "--run", f"{kind}-{index}"],
            stdout=subprocess.PIPE, text=True,
        )
        peak = _watch_peak_rss(process)
        output, _ = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"{kind} run failed")
        result = json.loads(output.strip().splitlines()[-1])
        result["peak_rss_mb"] = peak
        runs.append(result)
    return {
        "seconds": statistics.median(r["seconds"] for r in runs),
        "all_seconds": [round(r["seconds"], 2) for r in runs],
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        **{k: v for k, v in runs[0].items() if k not in ("seconds", "peak_rss_mb")},
    }


def _watch_peak_rss(process: subprocess.Popen) -> int:
    """Peak resident memory (MB) of the process and its children (the Spark JVM)."""
    import psutil

    peak = 0
    parent = psutil.Process(process.pid)
    while process.poll() is None:
        try:
            total = parent.memory_info().rss + sum(c.memory_info().rss for c in parent.children(recursive=True))
            peak = max(peak, total)
        except psutil.Error:
            pass
        time.sleep(0.2)
    return peak // (1024 * 1024)


# -- the report ----------------------------------------------------------------------------------
def measure_warm(workdir: str, repeats: int) -> dict:
    process = subprocess.run(
        [sys.executable, __file__, "--warm-worker", "--workdir", workdir, "--repeats", str(repeats)],
        stdout=subprocess.PIPE, text=True, check=True,
    )
    timings = json.loads(process.stdout.strip().splitlines()[-1])
    return {kind: {"seconds": statistics.median(runs), "all_seconds": [round(r, 2) for r in runs]}
            for kind, runs in timings.items()}


def ratios(size: dict, rows: int) -> dict:
    return {
        "speedup_vs_blog": size["blog"]["seconds"] / size["dmscdc"]["seconds"],
        "dmscdc_vs_rewrite_floor": size["dmscdc"]["seconds"] / size["rewrite_floor"]["seconds"],
        "blog_vs_rewrite_floor": size["blog"]["seconds"] / size["rewrite_floor"]["seconds"],
        "full_load_rows_per_s": rows / size["dmscdc_full_load"]["seconds"],
        "plain_copy_rows_per_s": rows / size["plain_copy"]["seconds"],
        "full_load_vs_copy": size["dmscdc_full_load"]["seconds"] / size["plain_copy"]["seconds"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2000000,8000000", help="comma-separated table sizes N")
    parser.add_argument("--files", type=int, default=40, help="LOAD files (and, in cold/warm, lake files) per table (F)")
    parser.add_argument("--changes", type=int, default=20000, help="changes in the CDC file (K)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--spark-repeats", type=int, default=None,
                        help="whole mode: runs of each Spark baseline (default: --repeats); each takes a new JVM")
    parser.add_argument("--tables", type=int, default=100, help="tables of the many-tables scenario")
    parser.add_argument("--modes", default="whole",
                        help="whole: whole processes from DMS LOAD files (dmscdc run with engine auto and local "
                        "Spark, the blog in a new JVM, a plain Spark copy, many tables, the demo); cold: the Spark "
                        "merge alone, every run in a new JVM, clock started once it is up; warm: all Spark runs in "
                        "one JVM after a warm-up run of each")
    parser.add_argument("--scenarios", default="orders,many,demo", help="whole mode: orders, many, demo, history (the incremental merge with a history "
                        "table against the same merge without one)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: N=200k in 8 files, 2,000 changes, 10 tables, one repeat")
    parser.add_argument("--workdir", default=os.path.join("work", "bench"))
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--warm-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--write-load", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.workdir, args.run)))
        return 0
    if args.warm_worker:
        print(json.dumps(warm_worker(args.workdir, args.repeats)))
        return 0
    if args.write_load:
        write_orders_load(_session(), args.write_load, args.rows, args.files)
        return 0
    if args.quick:
        args.sizes, args.files, args.changes, args.repeats, args.tables = "200000", 8, 2000, 1, 10

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    sizes = [int(s) for s in args.sizes.split(",")]
    results = {}

    def save(partial: dict | None = None) -> None:
        if args.out:
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            with open(args.out, "w") as handle:
                json.dump({**results, **({"whole": partial} if partial else {})}, handle, indent=2, default=str)

    if "whole" in modes:
        import whole_process

        spark_repeats = args.spark_repeats or args.repeats
        results["whole"] = whole_process.run(args.workdir, sizes, args.files, args.changes, args.repeats,
                                             spark_repeats, args.tables, [s.strip() for s in args.scenarios.split(",")], save)
        print("\nwhole processes (medians):")
        for line in whole_process.report(results["whole"]):
            print(f"  {line}")
    spark_modes = [m for m in modes if m in ("cold", "warm")]
    if spark_modes:
        results["spark_merge"] = spark_merge_modes(args, sizes, spark_modes)
    save()
    return 0


def spark_merge_modes(args, sizes: list[int], modes: list[str]) -> dict:
    """The Spark merge alone against the blog's algorithm, clock started once the JVM is up."""
    results = {"machine": f"{os.cpu_count()} cores, Spark local[2]", "rows": {}}
    for rows in sizes:
        workdir = os.path.abspath(os.path.join(args.workdir, f"n{rows}"))
        shutil.rmtree(workdir, ignore_errors=True)
        print(f"building N={rows:,} rows in {args.files} files, K={args.changes:,} changes ...", flush=True)
        build_dataset(workdir, rows, args.files, args.changes)
        entry = {"table_mb": round(_table_bytes(os.path.join(workdir, "lake")) / 2**20, 1)}
        if "cold" in modes:
            cold = {}
            for kind in KINDS:
                cold[kind] = measure(kind, workdir, args.repeats)
                print(f"  cold {kind:<17} median {cold[kind]['seconds']:7.2f}s  runs {cold[kind]['all_seconds']}  "
                      f"peak {cold[kind]['peak_rss_mb']} MB"
                      + (f"  files rewritten {cold[kind]['files_rewritten']}" if "files_rewritten" in cold[kind] else ""),
                      flush=True)
            entry["cold"] = {**cold, **ratios(cold, rows)}
        if "warm" in modes:
            warm = measure_warm(workdir, args.repeats)
            for kind in KINDS:
                print(f"  warm {kind:<17} median {warm[kind]['seconds']:7.2f}s  runs {warm[kind]['all_seconds']}", flush=True)
            entry["warm"] = {**warm, **ratios(warm, rows)}
        results["rows"][rows] = entry
        shutil.rmtree(workdir, ignore_errors=True)

    print("\nSpark merge alone (medians):")
    for mode in modes:
        for rows in sorted(results["rows"]):
            entry, size = results["rows"][rows], results["rows"][rows][mode]
            print(f"  {mode} N={rows:>10,} ({entry['table_mb']} MB): dmscdc {size['dmscdc']['seconds']:.2f}s, "
                  f"blog {size['blog']['seconds']:.2f}s -> {size['speedup_vs_blog']:.1f}x faster; "
                  f"rewrite floor {size['rewrite_floor']['seconds']:.2f}s (blog {size['blog_vs_rewrite_floor']:.1f}x it, "
                  f"dmscdc {size['dmscdc_vs_rewrite_floor']:.2f}x it); "
                  f"full load {size['full_load_rows_per_s']:,.0f} rows/s vs plain copy "
                  f"{size['plain_copy_rows_per_s']:,.0f} rows/s ({size['full_load_vs_copy']:.2f}x the copy's time)")
    return results


if __name__ == "__main__":
    sys.exit(main())
