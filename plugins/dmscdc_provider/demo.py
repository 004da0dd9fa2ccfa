"""``dmscdc demo``: the blog's sample database, end to end on this machine.

Writes the three sample tables as DMS would (Parquet, ``includeOpForFullLoad``), registers
and configures them the way the blog configures its DynamoDB controller, loads them, applies
the blog's change script as a CDC batch, loads again and shows the lake before and after.
"""

from __future__ import annotations

import os
import tempfile
from datetime import date, datetime, timezone
from decimal import Decimal

import pyarrow as pa

from dmscdc_provider.dms_writer import cdc_file_name, date_folder, load_file_name, write_dms_file

PRODUCT = pa.schema([
    ("id", pa.int32()), ("name", pa.string()), ("dept", pa.string()),
    ("category", pa.string()), ("price", pa.decimal128(10, 2)), ("updated_at", pa.timestamp("ms")),
])
STORE = pa.schema([
    ("id", pa.int32()), ("address", pa.string()), ("city", pa.string()), ("state", pa.string()),
    ("country", pa.string()), ("zip", pa.string()), ("updated_at", pa.timestamp("ms")),
])
PRODUCTORDER = pa.schema([
    ("id", pa.int32()), ("productid", pa.int32()), ("storeid", pa.int32()), ("qty", pa.int32()),
    ("soldprice", pa.decimal128(10, 2)), ("orderdate", pa.date32()),
])

LOADED_AT = datetime(2024, 3, 1, 9, 0, 0, tzinfo=timezone.utc)
CHANGED_AT = datetime(2024, 3, 2, 10, 1, 1, 856000, tzinfo=timezone.utc)

_DEPARTMENTS = [("Electronics", "Audio"), ("Electronics", "Computers"), ("Home", "Kitchen"),
                ("Home", "Garden"), ("Sports", "Outdoor")]
_STORES = [
    ("1 Main St.", "Seattle", "WA", "US", "98101"), ("200 Pine Ave.", "Portland", "OR", "US", "97201"),
    ("35 Market St.", "San Francisco", "CA", "US", "94105"), ("4 Congress Ave.", "Austin", "TX", "US", "78701"),
    ("500 Boylston St.", "Boston", "MA", "US", "02116"), ("66 Peachtree St.", "Atlanta", "GA", "US", "30303"),
    ("7 Michigan Ave.", "Chicago", "IL", "US", "60601"), ("80 Broadway", "New York", "NY", "US", "10004"),
]


def sample_products() -> list[dict]:
    stamp = LOADED_AT.replace(tzinfo=None)
    return [
        {"Op": "I", "id": 1000 + i, "name": f"Product {1000 + i}", "dept": _DEPARTMENTS[i % 5][0],
         "category": _DEPARTMENTS[i % 5][1], "price": Decimal(f"{10 + 3 * i}.99"), "updated_at": stamp}
        for i in range(1, 11)
    ]


def sample_stores() -> list[dict]:
    stamp = LOADED_AT.replace(tzinfo=None)
    return [
        {"Op": "I", "id": 1000 + i, "address": a, "city": c, "state": s, "country": n, "zip": z, "updated_at": stamp}
        for i, (a, c, s, n, z) in enumerate(_STORES, start=1)
    ]


def sample_orders(first_id: int, days: list[date], per_day: int) -> list[dict]:
    orders, order_id = [], first_id
    for day in days:
        for n in range(per_day):
            product = 1001 + (order_id * 7) % 10
            orders.append({"Op": "I", "id": order_id, "productid": product, "storeid": 1001 + order_id % 8,
                           "qty": 1 + order_id % 4, "soldprice": Decimal(f"{10 + 3 * (product - 1000)}.99"),
                           "orderdate": day})
            order_id += 1
    return orders


def write_initial_load(raw: str) -> None:
    """Full load: one LOAD file per table, as DMS writes it."""
    write_dms_file(f"{raw}/sales/product/{load_file_name(1)}", sample_products(), PRODUCT, modified=LOADED_AT)
    write_dms_file(f"{raw}/sales/store/{load_file_name(1)}", sample_stores(), STORE, modified=LOADED_AT)
    days = [date(2024, 2, 27), date(2024, 2, 28), date(2024, 2, 29)]
    write_dms_file(f"{raw}/sales/productorder/{load_file_name(1)}", sample_orders(1, days, 4), PRODUCTORDER,
                   modified=LOADED_AT)


def write_change_batch(raw: str) -> None:
    """The blog's change script as one CDC batch per table (date-partitioned folders)."""
    stamp = CHANGED_AT.replace(tzinfo=None)
    folder, name = date_folder(CHANGED_AT), cdc_file_name(CHANGED_AT)
    product_1001 = next(p for p in sample_products() if p["id"] == 1001)
    product_1002 = next(p for p in sample_products() if p["id"] == 1002)
    write_dms_file(f"{raw}/sales/product/{folder}/{name}", [
        {**product_1001, "Op": "U", "name": "Smart Speaker Pro", "dept": "Home", "category": "Smart Home",
         "updated_at": stamp},
        {**product_1002, "Op": "D"},
    ], PRODUCT)
    write_dms_file(f"{raw}/sales/store/{folder}/{name}", [
        {"Op": "I", "id": 1009, "address": "125 Technology Dr.", "city": "Irvine", "state": "CA",
         "country": "US", "zip": "92618", "updated_at": stamp},
    ], STORE)
    write_dms_file(f"{raw}/sales/productorder/{folder}/{name}",
                   sample_orders(101, [date(2024, 3, 1), date(2024, 3, 2)], 3), PRODUCTORDER)


DEMO_QUERIES = [
    ("product 1001 and 1002", "SELECT id, name, dept, category, Op FROM sales.product WHERE id IN (1001, 1002) ORDER BY id"),
    ("stores in California", "SELECT id, address, city, state, zip, Op FROM sales.store WHERE state = 'CA' ORDER BY id"),
    ("orders per date partition", "SELECT orderdate, count(*) AS orders, sum(qty) AS items FROM sales.productorder "
                                  "GROUP BY orderdate ORDER BY orderdate"),
]


def run_demo(workdir: str | None = None) -> int:
    from dmscdc_provider.catalog import query
    from dmscdc_provider.cli import main, print_rows

    workdir = os.path.abspath(workdir or tempfile.mkdtemp(prefix="dmscdc-demo-"))
    raw, lake = f"{workdir}/raw", f"{workdir}/lake"
    state, catalog = f"sqlite://{workdir}/state.sqlite", f"{workdir}/catalog.duckdb"
    common = ["--raw", raw, "--state", state]

    def step(title: str, argv: list[str]) -> None:
        print(f"\n== {title}\n$ dmscdc {' '.join(argv)}", flush=True)
        code = main(argv)
        if code != 0:
            raise SystemExit(f"demo step failed with exit code {code}: dmscdc {' '.join(argv)}")

    def show(title: str) -> None:
        print(f"\n== {title}")
        for label, sql in DEMO_QUERIES:
            print(f"-- {label}\n{sql}")
            print_rows(*query(catalog, sql))

    print(f"dmscdc demo in {workdir}")
    write_initial_load(raw)
    print(f"wrote the full load of sales.product, sales.store and sales.productorder under {raw}")
    step("new tables are registered inactive, as the blog's controller does", ["tables", *common])
    step("configure them as the blog does", ["configure", "sales.product", *common, "--active", "--primary-key", "id"])
    main(["configure", "sales.store", *common, "--active", "--primary-key", "id"])
    main(["configure", "sales.productorder", *common, "--active", "--no-primary-key",
          "--partition-key", "orderdate"])
    step("initial load", ["run", *common, "--lake", lake, "--catalog", catalog])
    show("lake after the initial load")

    write_change_batch(raw)
    print("\nthe source ran the blog's change script: product 1001 renamed and moved, product 1002 "
          "deleted, store 1009 opened in Irvine, new orders for 2024-03-01 and 2024-03-02")
    step("apply the changes", ["run", *common, "--lake", lake, "--catalog", catalog])
    show("lake after the changes")
    print(f"\nquery it yourself: dmscdc query --catalog {catalog} \"select * from sales.product\"")
    return 0


# How the blog configures its controller: (primary key, partition key).
DEMO_TABLE_SETTINGS = {
    "sales.product": (("id",), ()),
    "sales.store": (("id",), ()),
    "sales.productorder": ((), ("orderdate",)),
}


def _has_files(raw: str, folder: str) -> bool:
    from dmscdc_provider.storage import open_storage

    try:
        return bool(open_storage(raw).list_files(f"{raw.rstrip('/')}/{folder}"))
    except FileNotFoundError:
        return False


def _write_raw(raw: str, write) -> None:
    """``write(folder)`` the demo's DMS files into ``raw``: a local folder, ``file://`` or ``s3://``
    (written to a temporary folder, then uploaded file by file with boto3's credentials)."""
    from dmscdc_provider.arrow_fs import local_path

    if raw.startswith("s3://"):
        from dmscdc_provider.aws.s3_storage import S3Storage

        storage = S3Storage()
        with tempfile.TemporaryDirectory(prefix="dmscdc-demo-raw-") as staging:
            write(staging)
            for folder, _subfolders, names in os.walk(staging):
                for name in names:
                    path = os.path.join(folder, name)
                    with open(path, "rb") as handle:
                        storage.write_bytes(f"{raw.rstrip('/')}/{os.path.relpath(path, staging)}", handle.read())
        return
    if "://" in raw and not raw.startswith("file:"):
        raise ValueError(f"demo-source writes to a local folder, file:// or s3://, not {raw}")
    write(local_path(raw))


def prepare_demo_source(raw: str, state: str, changes: bool = False) -> list[str]:
    """The demo source for a scheduler (the Airflow DAG) to load: the initial load as DMS writes
    it, tables configured as the blog configures them; with ``changes``, also the change batch.

    Idempotent: files and tables that exist are left as they are. Returns what it did.
    """
    from dmscdc_provider.planner import controller_path
    from dmscdc_provider.state.base import TableState, open_store

    done = []
    if not _has_files(raw, "sales"):
        _write_raw(raw, write_initial_load)
        done.append(f"wrote the initial load under {raw}")
    store = open_store(state)
    try:
        for name, (primary_key, partition_key) in DEMO_TABLE_SETTINGS.items():
            schema, table = name.split(".")
            path = controller_path(raw, schema, table)
            if store.get(path) is None:
                store.register(TableState(path=path, schema=schema, table=table))
                store.update(path, active=True, primary_key=primary_key, partition_key=partition_key)
                done.append(f"configured {name} (active, primary key {','.join(primary_key) or 'null'})")
    finally:
        store.close()
    if changes:
        _write_raw(raw, write_change_batch)
        done.append(f"wrote the change batch under {raw}")
    return done
