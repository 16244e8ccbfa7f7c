"""Reading police-system exports (JSON Lines or CSV) into events to publish.

JSON Lines are passed on as raw bytes, so a line that is not UTF-8 or not JSON reaches the DLQ
byte for byte. CSV cells are converted with the contract's field types; a cell that does not
convert is passed on unchanged, and validation then names the field and the problem.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

from producers.publisher import Outgoing
from visitshare.contracts import Contract, ContractRegistry, FieldType, Reason, Violation

_INT = re.compile(r"-?\d+")


def infer_dataset(path: Path, contracts: ContractRegistry) -> str:
    """The contract whose name starts the file name (visit_outcome_2026-11.jsonl)."""
    for name in sorted(contracts.names(), key=len, reverse=True):
        if path.name.startswith(name):
            return name
    raise ValueError(
        f"cannot tell the dataset of {path.name}: name the file after a contract "
        f"({', '.join(contracts.names())}) or pass --dataset"
    )


def infer_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if ".csv" in suffixes:
        return "csv"
    if ".jsonl" in suffixes or ".ndjson" in suffixes or ".json" in suffixes:
        return "jsonl"
    raise ValueError(f"cannot tell the format of {path.name}: use .jsonl or .csv, or pass --format")


def read_jsonl(path: Path, dataset: str) -> Iterator[Outgoing]:
    with path.open("rb") as f:
        for line in f:
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield Outgoing(dataset, line)


def _convert(kind: FieldType, cell: str):
    text = cell.strip()
    match kind:
        case FieldType.INTEGER:
            return int(text) if _INT.fullmatch(text) else cell
        case FieldType.NUMBER:
            try:
                return float(text)
            except ValueError:
                return cell
        case FieldType.BOOLEAN:
            return {"true": True, "false": False}.get(text.lower(), cell)
        case FieldType.ARRAY:
            if text.startswith("["):
                try:
                    return json.loads(text)
                except json.JSONDecodeError:
                    return cell
            return [item.strip() for item in text.split(";") if item.strip()]
        case _:
            return cell


def csv_row_to_event(row: dict[str, str], contract: Contract) -> dict:
    """Typed event from one CSV row: empty cells are absent, arrays are `a;b` or JSON lists."""
    types = {f.name: f.type for f in contract.fields}
    event = {}
    for name, cell in row.items():
        if name is None or cell is None or cell == "":
            continue  # empty cell, or a ragged row's overflow
        kind = types.get(name)
        event[name] = _convert(kind, cell) if kind else cell
    return event


def check_encoding(path: Path, encoding: str) -> None:
    """Fail before anything is sent if the file does not decode (a CSV row cannot be split then)."""
    decoder = codecs.getincrementaldecoder(encoding)()
    offset = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                raise ValueError(
                    f"{path.name} is not {encoding} (byte {offset + exc.start}); exports from older "
                    "police systems are often Shift_JIS: pass --encoding cp932"
                ) from None
            offset += len(chunk)


def read_csv(path: Path, contract: Contract, encoding: str = "utf-8-sig") -> Iterator[Outgoing]:
    check_encoding(path, encoding)
    return _csv_rows(path, contract, encoding)


def _csv_rows(path: Path, contract: Contract, encoding: str) -> Iterator[Outgoing]:
    """One event per row; a row with more or fewer cells than the header (a missing cell, an
    unquoted comma) goes to the DLQ whole, with its row number: never cut or padded."""
    with path.open(encoding=encoding, newline="") as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if header is None:
            return
        for cells in rows:
            if not cells:
                continue  # a blank line
            if len(cells) != len(header):
                problem = Violation(
                    Reason.CSV_ROW_SHAPE,
                    None,
                    f"CSV row {rows.line_num} of {path.name} has {len(cells)} cells; "
                    f"its header has {len(header)}",
                )
                yield Outgoing(contract.name, _csv_line(cells), (problem,))
                continue
            yield Outgoing(
                contract.name, csv_row_to_event(dict(zip(header, cells, strict=True)), contract)
            )


def _csv_line(cells: list[str]) -> bytes:
    """A row as CSV text again (UTF-8), for the DLQ."""
    out = io.StringIO()
    csv.writer(out).writerow(cells)
    return out.getvalue().rstrip("\r\n").encode()


def read_export(
    path: Path,
    contracts: ContractRegistry,
    dataset: str | None = None,
    fmt: str | None = None,
    encoding: str = "utf-8-sig",
) -> Iterator[Outgoing]:
    dataset = dataset or infer_dataset(path, contracts)
    contract = contracts.get(dataset)
    fmt = fmt or infer_format(path)
    if fmt == "csv":
        return read_csv(path, contract, encoding)
    return read_jsonl(path, contract.name)
