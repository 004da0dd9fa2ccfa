"""Controller state stores (SQLite locally, DynamoDB on AWS)."""

from dmscdc_provider.state.base import (
    ConcurrentCommitError,
    ControllerStore,
    StateError,
    StoreUnavailableError,
    TableState,
    UnknownTableError,
    open_store,
)

__all__ = [
    "ConcurrentCommitError",
    "ControllerStore",
    "StateError",
    "StoreUnavailableError",
    "TableState",
    "UnknownTableError",
    "open_store",
]
