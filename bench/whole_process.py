"""Whole-process benchmark: dmscdc as a user runs it, from DMS LOAD files, against baselines.

Every figure is the wall time of a whole process (interpreter, imports, JVM if any, planning,
merge, commit, catalog), started fresh, median of the repeats, all in the same run on the same
machine:

- orders at N rows: DMS LOAD files; ``dmscdc run`` lays out the lake with its own full load
  (timed, against a plain Spark Parquet copy of the LOAD files in a new JVM); then one CDC file
  of 20,000 changes (80% updates and 10% deletes on the newest 5% of ids, 10% inserts) and the
  incremental ``dmscdc run`` with the default engine (``auto``), with ``--engine local``
  (dmscdc's Spark merge), and the blog's algorithm in a new JVM (bench/blog_algorithm.py, as a
  Glue job runs it). Each incremental run starts from a copy of the same full-loaded lake and
  controller state. Peak RSS of the process tree is sampled every 50 ms.
- many tables: 100 keyed tables of 2,000 rows, full-loaded, then one CDC file of 20 changes
  each, ``dmscdc status`` of them, and the incremental ``dmscdc run`` (auto; one run with
  ``--engine local`` for context).
- demo: ``dmscdc demo`` in a new folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

HERE = os.path.dirname(os.path.abspath(__file__))
DMSCDC = os.path.join(os.path.dirname(sys.executable), "dmscdc")
CDC_NAME = "20240301-100000000.parquet"
# The Spark baselines and dmscdc's Spark engine get the same generous settings.
SPARK_CONF = {"spark.driver.memory": "6g", "spark.sql.shuffle.partitions": "8"}


# -- running and timing whole processes --------------------------------------------------------
def timed(argv: list[str], watch_rss: bool = False) -> dict:
    """Run ``argv`` to the end; its wall time and (with ``watch_rss``) the peak RSS of its process tree."""
    import psutil

    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    if watch_rss:
        parent = psutil.Process(process.pid)
        while process.poll() is None:
            try:
                peak = max(peak, parent.memory_info().rss
                           + sum(c.memory_info().rss for c in parent.children(recursive=True)))
            except psutil.Error:
                pass
            time.sleep(0.05)
    output, errors = process.communicate()
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"failed ({process.returncode}): {' '.join(argv)}\n{output[-3000:]}\n{errors[-3000:]}")
    # The 1-minute load average as the run ends: other work on the machine shows here.
    result = {"seconds": seconds, "output": output, "load_average": round(os.getloadavg()[0], 1)}
    if watch_rss:
        result["peak_rss_mb"] = peak // 2**20
    return result


def summarize(runs: list[dict]) -> dict:
    summary = {"seconds": statistics.median(r["seconds"] for r in runs),
               "all_seconds": [round(r["seconds"], 2) for r in runs],
               "load_averages": [r["load_average"] for r in runs]}
    if "peak_rss_mb" in runs[0]:
        summary["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    return summary


def dmscdc_run(raw: str, lake: str, state: str, *flags: str, watch_rss: bool = False) -> dict:
    return timed([DMSCDC, "run", "--raw", raw, "--lake", lake, "--state", f"sqlite://{state}",
                  "--catalog", os.path.join(os.path.dirname(state), "catalog.duckdb"), *flags], watch_rss)


def iceberg_flags(state: str) -> list[str]:
    """The Iceberg format with a SQLite catalog beside the run's state (a lake with Iceberg tables
    is not copied: its metadata names absolute paths, so each run builds its own base)."""
    return ["--table-format", "iceberg", "--iceberg-catalog", f"sqlite:///{os.path.dirname(state)}/iceberg.sqlite"]


def iceberg_bases(root: str, raw: str, tables: list[str], count: int) -> tuple[list[tuple[str, str]], list[dict]]:
    """``count`` full loads in the Iceberg format, each in its own folder: ``(lake, state)`` and the timings."""
    bases, runs = [], []
    for index in range(count):
        run = os.path.join(root, f"iceberg-{index}")
        os.makedirs(run)
        state = os.path.join(run, "state.sqlite")
        configure(state, raw, tables)
        runs.append(dmscdc_run(raw, os.path.join(run, "lake"), state, *iceberg_flags(state)))
        bases.append((os.path.join(run, "lake"), state))
    return bases, runs


def spark_flags() -> list[str]:
    return [flag for key, value in SPARK_CONF.items() for flag in ("--spark-conf", f"{key}={value}")]


def engines_used(output: str) -> dict[str, int]:
    """How many tables each engine merged, from ``dmscdc run``'s progress lines."""
    counts: dict[str, int] = {}
    for line in output.splitlines():
        if line.startswith("[") and " merge of " in line and " on " in line:
            engine = line.split(" on ", 1)[1].split(" ", 1)[0]
            counts[engine] = counts.get(engine, 0) + 1
    return counts


def files_rewritten(output: str) -> int:
    """Lake files a ``dmscdc run`` replaced, from its progress lines (``+2/-1 files``)."""
    found = re.findall(r", \+\d+/-(\d+) files", output)
    return sum(int(count) for count in found)


def configure(state: str, raw: str, tables: list[str]) -> None:
    """Activate ``tables`` keyed by ``id`` (set-up, not timed)."""
    from dmscdc_provider.planner import controller_path
    from dmscdc_provider.state.base import TableState, open_store

    store = open_store(f"sqlite://{state}")
    for name in tables:
        schema, table = name.split(".")
        path = controller_path(raw, schema, table)
        store.register(TableState(path=path, schema=schema, table=table))
        store.update(path, active=True, primary_key=("id",))
    store.close()


def copy_run(base: str, target: str) -> tuple[str, str]:
    """A copy of a full-loaded lake and its state for one run (lake files hard-linked: a merge
    only adds and deletes files)."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(os.path.join(base, "lake"), os.path.join(target, "lake"), copy_function=os.link)
    shutil.copy(os.path.join(base, "state.sqlite"), os.path.join(target, "state.sqlite"))
    return os.path.join(target, "lake"), os.path.join(target, "state.sqlite")


def lake_rows(table_dir: str) -> int:
    import duckdb

    return duckdb.connect().execute(
        f"select count(*) from read_parquet('{table_dir}/**/*.parquet', union_by_name = true)").fetchone()[0]


# -- Spark baselines (each in its own process: python bench/whole_process.py --spark-job ...) --------
def spark_job(job: str, source: str, target: str) -> None:
    sys.path.insert(0, HERE)
    from dmscdc_spark.session import local_session

    spark = local_session("local[2]", SPARK_CONF)
    if job == "copy":
        loads = sorted(os.path.join(source, n) for n in os.listdir(source) if n.startswith("LOAD"))
        spark.read.parquet(*loads).write.parquet(target)
    elif job == "blog":
        from blog_algorithm import blog_incremental_load

        blog_incremental_load(spark, [source], target, ["id"])
    spark.stop()


def spark_job_argv(job: str, source: str, target: str) -> list[str]:
    return [sys.executable, os.path.abspath(__file__), "--spark-job", job, source, target]


# -- scenarios --------------------------------------------------------------------------------------
def orders_source(workdir: str, scenario: str, rows: int, files: int) -> tuple[str, str, str]:
    """A fresh folder for a scenario with the orders table's LOAD files: ``(root, raw, load_dir)``."""
    root = os.path.join(workdir, f"{scenario}-n{rows}")
    shutil.rmtree(root, ignore_errors=True)
    raw = os.path.join(root, "raw")
    load_dir = os.path.join(raw, "bench", "orders")
    print(f"{scenario} N={rows:,}: writing {files} LOAD files ...", flush=True)
    timed([sys.executable, os.path.join(HERE, "run_bench.py"), "--write-load", load_dir,
           "--rows", str(rows), "--files", str(files)])
    return root, raw, load_dir


def orders(workdir: str, rows: int, files: int, changes: int, repeats: int, spark_repeats: int) -> dict:
    """Full load and incremental of the orders table at ``rows`` rows; the Spark baselines run
    ``spark_repeats`` times."""
    root, raw, load_dir = orders_source(workdir, "orders", rows, files)
    load_mb = sum(os.path.getsize(os.path.join(load_dir, n)) for n in os.listdir(load_dir)) / 2**20
    result: dict = {"rows": rows, "load_files": files, "load_mb": round(load_mb, 1), "changes": changes}

    full = []
    for index in range(repeats):
        run = os.path.join(root, f"full-{index}")
        os.makedirs(run)
        state = os.path.join(run, "state.sqlite")
        configure(state, raw, ["bench.orders"])
        full.append(dmscdc_run(raw, os.path.join(run, "lake"), state))
    result["full_load"] = {**summarize(full), "engines": engines_used(full[0]["output"])}
    result["full_load"]["lake_files"] = len([n for n in os.listdir(os.path.join(root, "full-0", "lake", "bench", "orders"))
                                             if n.endswith(".parquet")])
    for index in range(1, repeats):
        shutil.rmtree(os.path.join(root, f"full-{index}"))
    copies = []
    for index in range(spark_repeats):
        target = os.path.join(root, f"copy-{index}")
        copies.append(timed(spark_job_argv("copy", load_dir, target)))
        shutil.rmtree(target)
    result["plain_spark_copy"] = summarize(copies)
    iceberg, iceberg_full = iceberg_bases(root, raw, ["bench.orders"], repeats)
    result["full_load_iceberg"] = summarize(iceberg_full)
    print(f"  full load {result['full_load']['all_seconds']} ({result['full_load']['engines']}), "
          f"plain Spark copy {result['plain_spark_copy']['all_seconds']}", flush=True)

    from run_bench import write_orders_changes

    write_orders_changes(os.path.join(load_dir, CDC_NAME), rows, changes)
    base = os.path.join(root, "full-0")
    kinds = {
        "auto": lambda lake, state: dmscdc_run(raw, lake, state, watch_rss=True),
        "spark_local": lambda lake, state: dmscdc_run(raw, lake, state, "--engine", "local", *spark_flags(),
                                                      watch_rss=True),
        "blog_new_jvm": lambda lake, state: timed(spark_job_argv(
            "blog", os.path.join(load_dir, CDC_NAME), os.path.join(lake, "bench", "orders")), watch_rss=True),
    }
    for kind, run_kind in kinds.items():
        runs = []
        for index in range(repeats if kind == "auto" else spark_repeats):
            lake, state = copy_run(base, os.path.join(root, f"{kind}-{index}"))
            runs.append(run_kind(lake, state))
            rows_after = lake_rows(os.path.join(lake, "bench", "orders"))
            shutil.rmtree(os.path.join(root, f"{kind}-{index}"))
        result[kind] = {**summarize(runs), "rows_after": rows_after}
        if kind != "blog_new_jvm":
            result[kind]["engines"] = engines_used(runs[0]["output"])
            result[kind]["files_rewritten"] = files_rewritten(runs[0]["output"])
        print(f"  incremental {kind:<13} {result[kind]['all_seconds']}  peak {result[kind]['peak_rss_mb']} MB  "
              f"rows after {rows_after:,}", flush=True)
    iceberg_runs = [dmscdc_run(raw, lake, state, *iceberg_flags(state), watch_rss=True) for lake, state in iceberg]
    result["auto_iceberg"] = {**summarize(iceberg_runs), "engines": engines_used(iceberg_runs[0]["output"]),
                              "files_rewritten": files_rewritten(iceberg_runs[0]["output"])}
    result["iceberg_vs_parquet"] = result["auto_iceberg"]["seconds"] / result["auto"]["seconds"]
    print(f"  full load iceberg {result['full_load_iceberg']['all_seconds']}; incremental auto, iceberg "
          f"{result['auto_iceberg']['all_seconds']} ({result['iceberg_vs_parquet']:.2f}x parquet)", flush=True)
    shutil.rmtree(root, ignore_errors=True)
    result["auto_faster_than_blog"] = result["blog_new_jvm"]["seconds"] / result["auto"]["seconds"]
    result["auto_faster_than_spark_local"] = result["spark_local"]["seconds"] / result["auto"]["seconds"]
    result["full_load_vs_plain_copy"] = result["full_load"]["seconds"] / result["plain_spark_copy"]["seconds"]
    return result


def history(workdir: str, rows: int, files: int, changes: int, repeats: int) -> dict:
    """The incremental merge of the orders table (one CDC file of ``changes`` changes) with a
    history table against the same merge without one, same LOAD files, same run, alternating."""
    root, raw, load_dir = orders_source(workdir, "history", rows, files)
    bases, full = {}, {}
    for kind in ("plain", "history"):
        base = os.path.join(root, f"base-{kind}")
        os.makedirs(base)
        state = os.path.join(base, "state.sqlite")
        configure(state, raw, ["bench.orders"])
        if kind == "history":
            from dmscdc_provider.planner import controller_path
            from dmscdc_provider.state.base import open_store

            store = open_store(f"sqlite://{state}")
            store.update(controller_path(raw, "bench", "orders"), history={})
            store.close()
        full[kind] = dmscdc_run(raw, os.path.join(base, "lake"), state, watch_rss=True)
        bases[kind] = base
    from run_bench import write_orders_changes

    write_orders_changes(os.path.join(load_dir, CDC_NAME), rows, changes)
    runs: dict[str, list] = {"plain": [], "history": []}
    for index in range(repeats):
        for kind in ("plain", "history"):
            lake, state = copy_run(bases[kind], os.path.join(root, f"{kind}-{index}"))  # the history table too
            runs[kind].append(dmscdc_run(raw, lake, state, watch_rss=True))
            shutil.rmtree(os.path.join(root, f"{kind}-{index}"))
    result = {"rows": rows, "load_files": files, "changes": changes,
              "full_load_plain": summarize([full["plain"]]), "full_load_history": summarize([full["history"]]),
              "incremental_plain": {**summarize(runs["plain"]), "files_rewritten": files_rewritten(runs["plain"][0]["output"])},
              "incremental_history": {**summarize(runs["history"]),
                                      "files_rewritten": files_rewritten(runs["history"][0]["output"])}}
    result["history_vs_plain"] = result["incremental_history"]["seconds"] / result["incremental_plain"]["seconds"]
    print(f"  incremental without history {result['incremental_plain']['all_seconds']}, with history "
          f"{result['incremental_history']['all_seconds']} -> {result['history_vs_plain']:.2f}x; full load "
          f"{full['plain']['seconds']:.1f}s without, {full['history']['seconds']:.1f}s with", flush=True)
    shutil.rmtree(root, ignore_errors=True)
    return result


def many_tables(workdir: str, tables: int, rows: int, changes: int, repeats: int) -> dict:
    """``tables`` keyed tables of ``rows`` rows, one CDC file of ``changes`` changes each."""
    import pyarrow as pa

    from dmscdc_provider.dms_writer import cdc_file_name, load_file_name, write_dms_file

    root = os.path.join(workdir, "many-tables")
    shutil.rmtree(root, ignore_errors=True)
    raw = os.path.join(root, "raw")
    schema = pa.schema([("id", pa.int64()), ("name", pa.string()), ("amount", pa.decimal128(10, 2)),
                        ("updated_at", pa.timestamp("ms"))])
    loaded = datetime(2024, 3, 1, 9, tzinfo=timezone.utc)
    names = [f"many.t{index:03d}" for index in range(tables)]

    def row(op: str, key: int, name: str) -> dict:
        return {"Op": op, "id": key, "name": name, "amount": Decimal(key % 1000) / 10,
                "updated_at": loaded.replace(tzinfo=None)}

    for name in names:
        write_dms_file(os.path.join(raw, *name.split("."), load_file_name(1)),
                       [row("I", i, f"row {i}") for i in range(rows)], schema, modified=loaded)
    base = os.path.join(root, "base")
    os.makedirs(base)
    configure(os.path.join(base, "state.sqlite"), raw, names)
    print(f"many tables: full load of {tables} tables of {rows:,} rows ...", flush=True)
    full = dmscdc_run(raw, os.path.join(base, "lake"), os.path.join(base, "state.sqlite"))
    iceberg, _ = iceberg_bases(root, raw, names, repeats)
    changed = loaded + timedelta(days=1)
    updates, deletes = int(changes * 0.8), int(changes * 0.1)
    for name in names:
        batch = ([row("U", i, "updated") for i in range(rows - updates - deletes, rows - deletes)]
                 + [row("D", i, "deleted") for i in range(rows - deletes, rows)]
                 + [row("I", i, "new") for i in range(rows, rows + changes - updates - deletes)])
        write_dms_file(os.path.join(raw, *name.split("."), cdc_file_name(changed)), batch, schema, modified=changed)

    # `dmscdc status` of the full-loaded tables, each with its CDC file in raw beyond the watermark.
    status = [timed([DMSCDC, "status", "--raw", raw, "--state", f"sqlite://{os.path.join(base, 'state.sqlite')}"])
              for _ in range(repeats)]

    def incremental(*flags: str) -> dict:
        lake, state = copy_run(base, os.path.join(root, "run"))
        outcome = dmscdc_run(raw, lake, state, *flags, watch_rss=True)
        shutil.rmtree(os.path.join(root, "run"))
        return outcome

    auto = [incremental() for _ in range(repeats)]
    result = {"tables": tables, "rows_per_table": rows, "changes_per_table": changes,
              "full_load": {"seconds": round(full["seconds"], 2), "engines": engines_used(full["output"])},
              "incremental_auto": {**summarize(auto), "engines": engines_used(auto[0]["output"])},
              "status": summarize(status)}
    iceberg_runs = [dmscdc_run(raw, lake, state, *iceberg_flags(state), watch_rss=True) for lake, state in iceberg]
    result["incremental_auto_iceberg"] = summarize(iceberg_runs)
    print(f"  incremental auto {result['incremental_auto']['all_seconds']}, iceberg "
          f"{result['incremental_auto_iceberg']['all_seconds']}", flush=True)
    spark = incremental("--engine", "local", *spark_flags())
    result["incremental_spark_local_one_run"] = {"seconds": round(spark["seconds"], 2),
                                                 "peak_rss_mb": spark["peak_rss_mb"]}
    print(f"  incremental --engine local (one run) {spark['seconds']:.1f}s", flush=True)
    shutil.rmtree(root, ignore_errors=True)
    return result


def demo(workdir: str, repeats: int) -> dict:
    runs = []
    for index in range(repeats):
        target = os.path.join(workdir, f"demo-{index}")
        shutil.rmtree(target, ignore_errors=True)
        runs.append(timed([DMSCDC, "demo", "--workdir", target]))
        shutil.rmtree(target)
    result = {**summarize(runs), "engines": engines_used(runs[0]["output"])}
    print(f"demo {result['all_seconds']} ({result['engines']})", flush=True)
    return result


def run(workdir: str, sizes: list[int], files: int, changes: int, repeats: int, spark_repeats: int,
        tables: int, scenarios: list[str], save=lambda results: None) -> dict:
    """Every scenario in turn; ``save`` gets the results so far after each one (a long run
    that is stopped keeps what it measured)."""
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    results: dict = {"machine": machine(), "repeats": repeats, "spark_repeats": spark_repeats}
    if "orders" in scenarios:
        results["orders"] = {}
        for rows in sizes:
            results["orders"][str(rows)] = orders(workdir, rows, files, changes, repeats, spark_repeats)
            save(results)
        if len(sizes) > 1:
            results["auto_largest_vs_smallest"] = (results["orders"][str(sizes[-1])]["auto"]["seconds"]
                                                   / results["orders"][str(sizes[0])]["auto"]["seconds"])
    if "history" in scenarios:
        results["history"] = {str(rows): history(workdir, rows, files, changes, repeats) for rows in sizes}
        save(results)
    if "many" in scenarios:
        results["many_tables"] = many_tables(workdir, tables, 2000, 20, repeats)
        save(results)
    if "demo" in scenarios:
        results["demo"] = demo(workdir, repeats)
    return results


def machine() -> dict:
    import platform

    import psutil

    return {"cores": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30),
            "python": platform.python_version(), "platform": platform.platform(),
            "load_average_at_start": [round(x, 1) for x in os.getloadavg()],
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def report(results: dict) -> list[str]:
    """The figures the targets refer to, one line each."""
    lines = []
    for rows, entry in results.get("orders", {}).items():
        lines.append(
            f"N={int(rows):,} ({entry['load_mb']} MB of LOAD files): incremental auto {entry['auto']['seconds']:.2f}s, "
            f"spark local {entry['spark_local']['seconds']:.2f}s, blog new JVM {entry['blog_new_jvm']['seconds']:.2f}s "
            f"-> auto {entry['auto_faster_than_blog']:.1f}x faster than the blog, "
            f"{entry['auto_faster_than_spark_local']:.1f}x than Spark local; peak RSS auto {entry['auto']['peak_rss_mb']} MB; "
            f"full load {entry['full_load']['seconds']:.2f}s vs plain Spark copy {entry['plain_spark_copy']['seconds']:.2f}s "
            f"({entry['full_load_vs_plain_copy']:.2f}x its time)")
        lines.append(f"N={int(rows):,}: incremental auto in the Iceberg format {entry['auto_iceberg']['seconds']:.2f}s "
                     f"({entry['iceberg_vs_parquet']:.2f}x the Parquet format's); full load in Iceberg "
                     f"{entry['full_load_iceberg']['seconds']:.2f}s")
    if "auto_largest_vs_smallest" in results:
        lines.append(f"auto incremental at the largest N takes {results['auto_largest_vs_smallest']:.2f}x its time at the smallest")
    for rows, entry in results.get("history", {}).items():
        lines.append(f"N={int(rows):,}, {entry['changes']:,} changes: incremental with a history table "
                     f"{entry['incremental_history']['seconds']:.2f}s, without {entry['incremental_plain']['seconds']:.2f}s "
                     f"-> {entry['history_vs_plain']:.2f}x")
    if "many_tables" in results:
        many = results["many_tables"]
        lines.append(f"{many['tables']} tables: status {many['status']['seconds']:.2f}s, "
                     f"incremental auto {many['incremental_auto']['seconds']:.2f}s, in the "
                     f"Iceberg format {many['incremental_auto_iceberg']['seconds']:.2f}s "
                     f"(--engine local, one run: {many['incremental_spark_local_one_run']['seconds']:.2f}s)")
    if "demo" in results:
        lines.append(f"dmscdc demo: {results['demo']['seconds']:.2f}s")
    return lines


def markdown(results: dict) -> str:
    """The results as the README's table (``python bench/whole_process.py --markdown RESULTS.json``)."""
    sizes = list(results.get("orders", {}))
    head = ["| whole process, median (runs) | " + " | ".join(f"N={int(n) / 1e6:g}M" for n in sizes) + " |",
            "|---|" + "---|" * len(sizes)]

    def cell(entry: dict) -> str:
        return f"{entry['seconds']:.2f} s ({', '.join(f'{x:g}' for x in entry['all_seconds'])})"

    orders = [results["orders"][n] for n in sizes]
    rows = [
        ("LOAD files", [f"{o['load_mb']} MB in {o['load_files']} files" for o in orders]),
        ("full load, `dmscdc run` (engine chosen)",
         [f"{cell(o['full_load'])}, {'/'.join(o['full_load']['engines'])}, {o['full_load']['lake_files']} lake files"
          for o in orders]),
        ("plain Spark Parquet copy of the LOAD files, new JVM", [cell(o["plain_spark_copy"]) for o in orders]),
        ("full load / plain copy", [f"**{o['full_load_vs_plain_copy']:.2f}x**" for o in orders]),
        ("incremental, `dmscdc run` (auto)",
         [f"{cell(o['auto'])}, {'/'.join(o['auto']['engines'])}" for o in orders]),
        ("incremental, `dmscdc run --engine local`", [cell(o["spark_local"]) for o in orders]),
        ("incremental, the blog's algorithm, new JVM", [cell(o["blog_new_jvm"]) for o in orders]),
        ("auto faster than the blog / than local Spark",
         [f"**{o['auto_faster_than_blog']:.1f}x** / **{o['auto_faster_than_spark_local']:.1f}x**" for o in orders]),
        ("incremental, `dmscdc run --table-format iceberg` (auto)", [cell(o["auto_iceberg"]) for o in orders]),
        ("Iceberg / Parquet format, incremental", [f"**{o['iceberg_vs_parquet']:.2f}x**" for o in orders]),
        ("full load in the Iceberg format", [cell(o["full_load_iceberg"]) for o in orders]),
        ("peak RSS of the incremental: auto / local Spark / blog",
         [f"{o['auto']['peak_rss_mb']} / {o['spark_local']['peak_rss_mb']} / {o['blog_new_jvm']['peak_rss_mb']} MB"
          for o in orders]),
    ]
    lines = head + [f"| {label} | " + " | ".join(values) + " |" for label, values in rows]
    if "auto_largest_vs_smallest" in results:
        lines.append(f"\nauto incremental at N={int(sizes[-1]) / 1e6:g}M: "
                     f"{results['auto_largest_vs_smallest']:.2f}x its time at N={int(sizes[0]) / 1e6:g}M.")
    if "many_tables" in results:
        many = results["many_tables"]
        lines.append(f"\n{many['tables']} tables of {many['rows_per_table']:,} rows, {many['changes_per_table']} changes "
                     f"each: incremental `dmscdc run` (auto) {cell(many['incremental_auto'])}, peak RSS "
                     f"{many['incremental_auto']['peak_rss_mb']} MB; in the Iceberg format "
                     f"{cell(many['incremental_auto_iceberg'])}; with `--engine local` (one run) "
                     f"{many['incremental_spark_local_one_run']['seconds']:.2f} s.")
        if "status" in many:
            lines.append(f"`dmscdc status` of the {many['tables']} tables: {cell(many['status'])}.")
    if "demo" in results:
        lines.append(f"\n`dmscdc demo` (whole process: writes the sample, two runs, queries): {cell(results['demo'])}.")
    return "\n".join(lines)


if __name__ == "__main__" and sys.argv[1:2] == ["--spark-job"]:
    spark_job(*sys.argv[2:5])
elif __name__ == "__main__" and sys.argv[1:2] == ["--markdown"]:
    with open(sys.argv[2]) as handle:
        print(markdown(json.load(handle).get("whole", {})))
