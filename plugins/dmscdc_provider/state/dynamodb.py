"""DynamoDB controller store: a drop-in for the blog's ``DMSCDC_Controller`` table.

An existing table is used as it is. Items keep the blog's layout (key ``path`` =
``bucket/prefix/schema/table/``, all-string ``ActiveFlag``, ``PrimaryKey``, ``PartitionKey``,
``LastFullLoadDate``, ``LastIncrementalFile``, and ``bucket`` / ``prefix`` / ``folder`` on new
items); dmscdc's extension attributes sit beside them. Writes are ``UpdateItem`` calls that
set only dmscdc's attributes, so attributes the blog wrote (``out_path``) survive, and every
one is conditional on ``StateVersion``: an item the blog wrote has none and counts as
version 0.

Two details of the blog's controller are read, and written, its way:

- a table that never had a CDC file applied has ``LastIncrementalFile`` =
  ``<path>0.parquet`` (not a DMS file name); dmscdc reads that as "none yet" and writes it
  back the same way;
- ``LastIncrementalFile`` is ``bucket/key`` of the last CDC file; the planner compares file
  names only, so ``bucket/key``, a bare key and a bare name all mean the same file.
"""

from __future__ import annotations

import gzip
import logging
from decimal import Decimal

from dmscdc_provider.aws.clients import aws_client, error_code
from dmscdc_provider.dms_files import classify, file_name
from dmscdc_provider.state.base import ConcurrentCommitError, ControllerStore, StateError, TableState

log = logging.getLogger(__name__)

BLOG_TABLE_NAME = "DMSCDC_Controller"
# The blog's placeholder file name for "no CDC file applied yet".
NO_INCREMENTAL_FILE = "0.parquet"
# Attributes dmscdc removes when its state has no value for them.
OPTIONAL_ATTRIBUTES = ("OrderColumn", "CommitTimeColumn", "KeepOnNull", "History", "TableFormat", "PendingCommit", "LastRun")
# DynamoDB items hold at most 400 KB; commit records of merges that add or remove thousands of
# files come close, so large ones are stored gzip-compressed as a binary attribute.
COMPRESS_ABOVE_BYTES = 64 * 1024


def blog_attributes(path: str) -> dict[str, str]:
    """The ``bucket`` / ``prefix`` / ``folder`` attributes the blog's controller writes for ``path``."""
    parts = [part for part in path.strip("/").split("/") if part]
    return {
        "bucket": parts[0],
        "prefix": "/".join(parts[1:-1]) + "/",
        "folder": parts[-1] + "/",
    }


def item_to_state(item: dict) -> TableState:
    """A controller item as DynamoDB returns it (plain values) -> TableState."""
    item = dict(item)
    last_file = item.get("LastIncrementalFile")
    if last_file is not None and classify(file_name(str(last_file))) is None:
        item["LastIncrementalFile"] = "null"  # the blog's <path>0.parquet placeholder
    pending = item.get("PendingCommit")
    if isinstance(pending, (bytes, bytearray)) or hasattr(pending, "value"):
        raw = getattr(pending, "value", pending)
        item["PendingCommit"] = gzip.decompress(bytes(raw)).decode()
    return TableState.from_item(item)


def state_to_item(state: TableState) -> dict:
    """TableState -> the attributes dmscdc writes, in the blog's layout."""
    item = state.to_item()
    if state.last_incremental_file is None:
        item["LastIncrementalFile"] = state.path + NO_INCREMENTAL_FILE
    pending = item.get("PendingCommit")
    if isinstance(pending, str) and len(pending) > COMPRESS_ABOVE_BYTES:
        item["PendingCommit"] = gzip.compress(pending.encode())
    return item


class DynamoDBControllerStore(ControllerStore):
    """Controller items in a DynamoDB table (``--state dynamodb://TABLE``).

    :param table_name: the table; the blog's is ``DMSCDC_Controller``.
    :param aws_conn_id: Airflow AWS connection; None uses boto3's default credential chain.
    :param region_name: AWS region; None takes the connection's or the environment's.
    :param create_table: create the table (on-demand capacity) when it does not exist.
    :param client: a ready boto3 DynamoDB client (overrides ``aws_conn_id``/``region_name``).
    """

    def __init__(
        self,
        table_name: str = BLOG_TABLE_NAME,
        aws_conn_id: str | None = None,
        region_name: str | None = None,
        create_table: bool = True,
        client=None,
    ):
        if not table_name:
            raise ValueError("dynamodb:// needs a table name, e.g. dynamodb://DMSCDC_Controller")
        self.table_name = table_name
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.create_table = create_table
        self._client = client
        self._table_ready = False

    # -- plumbing -----------------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            try:
                self._client = aws_client("dynamodb", self.aws_conn_id, self.region_name)
            except Exception as error:  # NoRegionError, missing credentials, bad connection
                raise self._unreachable(error) from error
        if not self._table_ready:
            self._ensure_table(self._client)
            self._table_ready = True
        return self._client

    def _unreachable(self, error: Exception) -> StateError:
        return StateError(
            f"cannot use the DynamoDB controller table {self.table_name!r}: {error}. Check the "
            "region (AWS_DEFAULT_REGION), the credentials and, for an emulator, AWS_ENDPOINT_URL; "
            "no table state was changed."
        )

    def _ensure_table(self, client) -> None:
        try:
            client.describe_table(TableName=self.table_name)
            return
        except Exception as error:
            if error_code(error) != "ResourceNotFoundException":
                raise self._unreachable(error) from error
            if not self.create_table:
                raise StateError(f"DynamoDB table {self.table_name!r} does not exist") from error
        log.info("creating DynamoDB table %s (on-demand capacity)", self.table_name)
        try:
            client.create_table(
                TableName=self.table_name,
                KeySchema=[{"AttributeName": "path", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "path", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
        except Exception as error:
            if error_code(error) != "ResourceInUseException":  # another process created it first
                raise self._unreachable(error) from error
        client.get_waiter("table_exists").wait(
            TableName=self.table_name, WaiterConfig={"Delay": 2, "MaxAttempts": 60}
        )

    def _call(self, operation: str, **kwargs) -> dict:
        try:
            return getattr(self.client, operation)(TableName=self.table_name, **kwargs)
        except StateError:
            raise
        except Exception as error:
            if error_code(error) == "ConditionalCheckFailedException":
                raise
            raise self._unreachable(error) from error

    # -- ControllerStore ----------------------------------------------------------------------
    def get(self, path: str) -> TableState | None:
        response = self._call("get_item", Key={"path": {"S": path}}, ConsistentRead=True)
        if "Item" not in response:
            return None
        return item_to_state(_deserialize(response["Item"]))

    def list(self) -> list[TableState]:
        states = []
        start_key = None
        while True:
            kwargs = {"ConsistentRead": True}
            if start_key:
                kwargs["ExclusiveStartKey"] = start_key
            page = self._call("scan", **kwargs)
            states.extend(item_to_state(_deserialize(item)) for item in page.get("Items", []))
            start_key = page.get("LastEvaluatedKey")
            if not start_key:
                return sorted(states, key=lambda state: state.path)

    def register(self, state: TableState) -> bool:
        item = {**blog_attributes(state.path), **state_to_item(state)}
        try:
            self._call(
                "put_item",
                Item=_serialize(item),
                ConditionExpression="attribute_not_exists(#path)",
                ExpressionAttributeNames={"#path": "path"},
            )
        except Exception as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def replace(self, state: TableState, expected_version: int) -> TableState:
        written = state.evolve(version=expected_version + 1)
        item = state_to_item(written)
        names, values, sets = {"#path": "path", "#version": "StateVersion"}, {}, []
        for index, (name, value) in enumerate(sorted(item.items())):
            if name == "path":
                continue
            names[f"#a{index}"] = name
            values[f":a{index}"] = value
            sets.append(f"#a{index} = :a{index}")
        removes = []
        for index, name in enumerate(OPTIONAL_ATTRIBUTES):
            if name not in item:
                names[f"#r{index}"] = name
                removes.append(f"#r{index}")
        values[":expected"] = expected_version
        condition = "attribute_exists(#path) AND #version = :expected"
        if expected_version == 0:  # items the blog wrote have no StateVersion
            condition = "attribute_exists(#path) AND (attribute_not_exists(#version) OR #version = :expected)"
        update = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        try:
            self._call(
                "update_item",
                Key={"path": {"S": state.path}},
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=_serialize(values),
            )
        except Exception as error:
            if error_code(error) == "ConditionalCheckFailedException":
                raise ConcurrentCommitError(
                    f"{state.name}: the controller item changed since version {expected_version} was read"
                ) from error
            raise
        return written

    def close(self) -> None:
        self._client = None
        self._table_ready = False


def _serialize(item: dict) -> dict:
    from boto3.dynamodb.types import TypeSerializer

    serializer = TypeSerializer()
    return {key: serializer.serialize(value) for key, value in item.items()}


def _deserialize(item: dict) -> dict:
    from boto3.dynamodb.types import TypeDeserializer

    deserializer = TypeDeserializer()
    plain = {key: deserializer.deserialize(value) for key, value in item.items()}
    return {key: int(value) if isinstance(value, Decimal) else value for key, value in plain.items()}
