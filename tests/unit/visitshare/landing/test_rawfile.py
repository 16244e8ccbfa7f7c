"""Raw files: byte-faithful Kafka columns, best-effort decoding, atomic writes."""

import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kafka.consumer.fetcher import ConsumerRecord

from producers.simulator import SimConfig, Simulator
from visitshare.landing import zones
from visitshare.landing.files import write_parquet
from visitshare.landing.rawfile import Decoder, complete_table, kafka_batch


def _record(offset, value, key=b"k", headers=None):
    return ConsumerRecord(
        "visits.outcomes.v1", 0, -1, offset, 1_700_000_000_000 + offset, 0, key, value,
        headers or [("event_id", b"x")], None, 1, len(value or b""), 10,
    )  # fmt: skip


@pytest.fixture(scope="module")
def visits(contracts):
    events = Simulator(SimConfig(days=1, seed=5), contracts).events()
    return [
        json.dumps(e.payload, ensure_ascii=False, separators=(",", ":")).encode()
        for e in events
        if e.dataset == "visit_outcome"
    ]


def test_fast_and_slow_paths_decode_alike(contracts, visits):
    contract = contracts.get("visit_outcome")
    fast, fast_status, _ = Decoder(contract).decode(visits)
    slow, slow_status, _ = Decoder(contract, fast=False).decode(visits)
    assert fast_status == slow_status == ["ok"] * len(visits)
    assert fast.to_pylist() == slow.to_pylist()
    assert fast.column("visited_at").null_count == 0


def test_each_kind_of_bad_value_gets_its_status_and_order_is_kept(contracts, visits):
    good = visits[0]
    event = json.loads(good)
    values = [
        good,
        b'{"event_id": ',  # broken JSON
        "東京都".encode("cp932"),  # not UTF-8
        b"[1, 2]",  # not an object
        json.dumps({**event, "residents_count": "3", "elderly_only": "yes"}).encode(),
        json.dumps(event, indent=2, ensure_ascii=False).encode(),  # pretty-printed: line breaks
        None,  # a tombstone
        visits[1],
    ]
    table, status, mismatched = Decoder(contracts.get("visit_outcome")).decode(values)
    assert status == [
        "ok",
        "invalid_json",
        "invalid_utf8",
        "not_an_object",
        "type_mismatch",
        "ok",
        "null_value",
        "ok",
    ]
    assert sorted(mismatched[4]) == ["elderly_only", "residents_count"]
    ids = table.column("event_id").to_pylist()
    assert ids == [
        event["event_id"],
        None,
        None,
        None,
        event["event_id"],
        event["event_id"],
        None,
        json.loads(visits[1])["event_id"],
    ]
    assert table.column("residents_count")[4].as_py() is None  # mismatched: left null
    assert table.column("town")[4].as_py() == event["town"]  # the rest still decoded


def test_complete_table_keeps_kafka_columns_byte_for_byte(contracts, visits):
    records = [
        _record(10 + i, v, headers=[("event_id", b"e%d" % i), ("contract", b"visit_outcome.v1")])
        for i, v in enumerate(visits[:5])
    ]
    records.append(_record(15, b"\xff\xfe not json"))
    kafka = pa.Table.from_batches([kafka_batch("visits.outcomes.v1", 3, records)])
    table = complete_table(kafka, Decoder(contracts.get("visit_outcome")))
    assert table.column("kafka_value").to_pylist() == [r.value for r in records]
    assert table.column("kafka_offset").to_pylist() == list(range(10, 16))
    assert table.column("kafka_partition").to_pylist() == [3] * 6
    assert table.column("kafka_headers")[1].as_py() == [
        {"key": "event_id", "value": b"e1"},
        {"key": "contract", "value": b"visit_outcome.v1"},
    ]
    assert table.column("parse_status").to_pylist()[-1] == "invalid_utf8"


def test_topics_without_contract_keep_only_kafka_columns():
    kafka = pa.Table.from_batches([kafka_batch("releases.v1", 0, [_record(0, b'{"release": 1}')])])
    table = complete_table(kafka, None)
    assert table.column("parse_status").to_pylist() == ["no_contract"]
    assert "event_id" not in table.column_names


def test_write_parquet_never_overwrites_unless_told(tmp_path):
    table = pa.table({"a": [1, 2, 3]})
    path = tmp_path / zones.raw_file("t", 0, 0, 2, "0f7c2a1e-1111-2222-3333-444455556666").name
    nbytes, digest = write_parquet(table, path, {"first_offset": "0"}, replace=lambda _: False)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest and path.stat().st_size == nbytes
    assert pq.read_table(path).schema.metadata[b"first_offset"] == b"0"
    with pytest.raises(FileExistsError):
        write_parquet(pa.table({"a": [9]}), path, {}, replace=lambda _: False)
    assert pq.read_table(path).column("a").to_pylist() == [1, 2, 3]  # untouched
    write_parquet(pa.table({"a": [9]}), path, {}, replace=lambda _: True)
    assert pq.read_table(path).column("a").to_pylist() == [9]
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left


def test_file_names_sort_by_offset():
    names = [
        zones.raw_file("t", 0, a, b, "0f7c2a1e-1111").name
        for a, b in [(100, 199), (0, 99), (1000, 1999)]
    ]
    assert sorted(names) == [
        zones.raw_file("t", 0, 0, 99, "0f7c2a1e-1111").name,
        zones.raw_file("t", 0, 100, 199, "0f7c2a1e-1111").name,
        zones.raw_file("t", 0, 1000, 1999, "0f7c2a1e-1111").name,
    ]
    assert names[0].startswith("00000000000000000100-00000000000000000199.")


# -- decoding is positional and strict (crash classes found from outside) ----------------------
def _alone(decoder: Decoder, value):
    table, status, mismatched = decoder.decode([value])
    return table.to_pylist()[0], status[0], mismatched[0]


@pytest.mark.parametrize(
    "intruder",
    [
        lambda a, b: a + b"\n" + b,  # two documents on two lines
        lambda a, b: a + b,  # two documents on one line
        lambda a, b: a + b" " + b,  # a space apart
        lambda a, b: a + b"\r\n" + b,
    ],
)
def test_decoding_is_positional_two_documents_cannot_shift_their_neighbours(
    contracts, visits, intruder
):
    """Regression (critical): a value holding two documents, followed later in the same file
    by an empty value, shifted every record between them by one offset."""
    decoder = Decoder(contracts.get("visit_outcome"))
    values = [visits[0], intruder(visits[1], visits[2]), *visits[3:20], b"", *visits[20:40]]
    table, status, mismatched = decoder.decode(values)
    rows = table.to_pylist()
    for i, value in enumerate(values):
        assert (rows[i], status[i], mismatched[i]) == _alone(decoder, value), i
    assert status[1] == "invalid_json" and status[19] == "invalid_json"


def test_fast_and_reference_decoders_agree_on_the_adversarial_corpus(contracts):
    from tests.corpus import corpus

    for dataset in sorted({c.dataset for c in corpus()}):
        values = [c.value for c in corpus() if c.dataset == dataset]
        contract = contracts.get(dataset)
        fast = Decoder(contract).decode(values)
        reference = Decoder(contract, fast=False).decode(values)
        assert fast[1] == reference[1]
        assert fast[2] == reference[2]
        assert fast[0].to_pylist() == reference[0].to_pylist()


def test_invalid_utf8_never_reaches_a_string_column(contracts, visits, tmp_path):
    """Regression: a cp932 / Latin-1 / CESU-8 value landed as `ok` and wrote invalid UTF-8 into
    the raw file, which then broke every validation run."""
    import duckdb

    event = json.loads(visits[0])
    bad = [
        json.dumps(event, ensure_ascii=False).encode("cp932", errors="replace"),
        visits[0].replace("西".encode(), b"\xe9", 1) if "西".encode() in visits[0] else b"\xe9",
        visits[0][:-1] + b',"notes":"\xed\xa0\x80"}',
        visits[0][:-1] + b',"unknown":"\xff"}',
    ]
    decoder = Decoder(contracts.get("visit_outcome"))
    records = [_record(i, v) for i, v in enumerate([*bad, visits[1]])]
    table = complete_table(pa.Table.from_batches([kafka_batch("t", 0, records)]), decoder)
    assert table.column("parse_status").to_pylist()[:4] == ["invalid_utf8"] * 4
    path = tmp_path / "raw.parquet"
    write_parquet(table, path)
    for column in table.schema:
        if pa.types.is_string(column.type):
            pq.read_table(path, columns=[column.name]).column(0).cast(pa.string()).validate(
                full=True
            )
    assert duckdb.sql(f"select count(*) from '{path}'").fetchall() == [(5,)]
