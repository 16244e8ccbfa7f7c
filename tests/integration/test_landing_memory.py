"""Landing's memory: open files held encoded, row group by row group; no pandas in landing."""

import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq

import consumers.landing as landing_module
from consumers.landing import Lander, land
from producers.publisher import Outgoing, Publisher
from producers.simulator import SimConfig, Simulator
from tests.helpers import read_topic
from visitshare.db import engine_for
from visitshare.landing import manifest
from visitshare.landing.rawfile import complete_table

VISITS = "visits.outcomes.v1"


def publish(settings, contracts, bad_rate=0.05):
    events = Simulator(SimConfig(days=1, seed=5, bad_rate=bad_rate), contracts).events()
    with Publisher(settings, contracts) as pub:
        pub.publish(Outgoing(e.dataset, e.payload) for e in events)


def test_an_open_file_is_encoded_as_it_fills(kafka_settings, contracts, monkeypatch):
    """Rows become row groups of the open file as they arrive; the file reads back as if it
    had been decoded and written whole, with its offsets in the file metadata."""
    monkeypatch.setattr(landing_module, "CONVERT_EVERY", 40)
    monkeypatch.setattr(landing_module, "ENCODE_ROWS", 100)
    publish(kafka_settings, contracts)
    topic = kafka_settings.topic(VISITS)
    land(kafka_settings, [topic], workers=1)
    files = manifest.files(engine_for(kafka_settings), topic)
    decoder = Lander(kafka_settings).decoder(topic)
    source = {(r.partition, r.offset): r.value for r in read_topic(kafka_settings, topic)}
    landed = 0
    for f in files:
        path = kafka_settings.lake / f.path
        meta = pq.read_metadata(path)
        kv = {k.decode(): v.decode() for k, v in meta.metadata.items()}
        assert kv["first_offset"] == str(f.first_offset)
        assert kv["last_offset"] == str(f.last_offset)
        assert kv["kafka_topic"] == topic and kv["kafka_partition"] == str(f.partition)
        table = pq.read_table(path)
        kafka_columns = table.select([n for n in table.column_names if n.startswith("kafka_")])
        whole = complete_table(kafka_columns, decoder)
        assert table.equals(whole.cast(table.schema))
        for p, o, v in zip(
            table.column("kafka_partition").to_pylist(),
            table.column("kafka_offset").to_pylist(),
            table.column("kafka_value").to_pylist(),
            strict=True,
        ):
            assert source[(p, o)] == v
        landed += f.row_count
    assert landed == len(source)
    assert any(pq.read_metadata(kafka_settings.lake / f.path).num_row_groups > 1 for f in files)
    statuses = pa.concat_tables(
        [pq.read_table(kafka_settings.lake / f.path, columns=["parse_status"]) for f in files]
    )
    assert set(statuses.column(0).to_pylist()) == {"ok"}  # the DLQ got the bad ones


def test_landing_does_not_load_pandas(kafka_settings, contracts):
    """pyarrow would import pandas (~50 MB per process) on first use; a landing process never
    needs it, yet pandas still works there when asked for."""
    publish(kafka_settings, contracts)
    code = (
        "import sys\n"
        "from consumers.landing import land\n"
        "from visitshare.settings import Settings\n"
        "report = land(Settings(), workers=2)\n"
        "print(report.rows, 'pandas' in sys.modules)\n"
        "import pyarrow as pa\n"
        "print(type(pa.table({'a': [1]}).to_pandas()).__name__)\n"
    )
    env = {**os.environ, "VISITSHARE_LAND_WORKERS": "2"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    rows, pandas_loaded, frame = out.stdout.split()
    assert int(rows) > 0 and pandas_loaded == "False" and frame == "DataFrame"


def test_the_command_line_does_not_load_pandas_up_front():
    """`visitshare land --follow` is the landing service: the command line's own imports are
    part of its memory. Commands that need pandas (or Iceberg) import it when they run."""
    code = "import sys, visitshare.cli; print('pandas' in sys.modules, 'pyiceberg' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
