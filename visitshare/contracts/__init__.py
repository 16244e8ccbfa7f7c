"""Data contracts (`schemas/*.vN.yaml`) and everything derived from them."""

from visitshare.contracts.derive import arrow_schema, json_schema, sql_columns
from visitshare.contracts.formats import parse_timestamp
from visitshare.contracts.loader import ContractRegistry, load_contract
from visitshare.contracts.model import (
    Contract,
    ContractError,
    Domain,
    FieldSpec,
    FieldType,
    PiiClass,
    dataset_names,
)
from visitshare.contracts.validator import EventValidator, Reason, Violation

__all__ = [
    "Contract",
    "ContractError",
    "ContractRegistry",
    "Domain",
    "EventValidator",
    "FieldSpec",
    "FieldType",
    "PiiClass",
    "Reason",
    "Violation",
    "arrow_schema",
    "dataset_names",
    "json_schema",
    "load_contract",
    "parse_timestamp",
    "sql_columns",
]
