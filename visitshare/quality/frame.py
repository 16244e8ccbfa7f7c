"""The frame a suite runs on, built from raw rows: the contract's decoded fields plus a few
derived columns that let plain GX expectations express the contract:

- lists become `a;b;c` strings (GX checks their items with a regex, and can hash the frame);
- `municipality_town` ("13104:西新宿") checks town membership as one value set;
- `<timestamp>_hour`: the Tokyo-time hour of each timestamp field;
- `row_id`: the row's position, which GX reports back for failing rows.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from visitshare.contracts import Contract, FieldType
from visitshare.contracts.model import Domain
from visitshare.quality.suites import HOUR_SUFFIX, LIST_SEPARATOR, PARSE_STATUS, TOWN_KEY


def build_frame(raw: pa.Table, contract: Contract) -> pd.DataFrame:
    columns: dict[str, pa.Array] = {"row_id": pa.array(range(raw.num_rows), pa.int64())}
    columns[PARSE_STATUS] = raw.column(PARSE_STATUS)
    for f in contract.fields:
        col = raw.column(f.name)
        if f.type is FieldType.ARRAY:
            col = pc.binary_join(col, LIST_SEPARATOR)
        columns[f.name] = col
        if f.type is FieldType.TIMESTAMP:
            columns[f.name + HOUR_SUFFIX] = pc.hour(col)  # local hour: the column's zone is Tokyo
    if any(f.domain is Domain.TOKYO_TOWN for f in contract.fields):
        columns[TOWN_KEY] = pc.binary_join_element_wise(
            raw.column("municipality_code"), raw.column("town"), ":"
        )
    return pa.table(columns).to_pandas()
