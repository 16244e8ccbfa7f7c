"""The lake on S3-compatible object storage (SeaweedFS): the pipeline end to end, nothing on
local disk, Iceberg tables read back from object storage, files served from it, orphans
removed by listing, and no object from a write that failed."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from urllib.parse import unquote, urlparse

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs
import pytest
import requests
import sqlalchemy as sa

from consumers.landing import land
from producers.publisher import Outgoing, Publisher
from producers.simulator import CORE_DATASETS, SimConfig, Simulator
from tests.helpers import free_port
from visitshare.access import tokens
from visitshare.access.export import pull
from visitshare.access.server import background
from visitshare.db import engine_for
from visitshare.db.tables import release_files
from visitshare.lake import Lake, lake_for
from visitshare.landing import manifest, zones
from visitshare.quality.validate import validate
from visitshare.release import shared
from visitshare.release.maintain import maintain
from visitshare.release.publish import publish
from visitshare.release.records import closed_window
from visitshare.settings import Settings


def _land_and_validate(settings: Settings, contracts) -> None:
    """Simulated events through the broker, landed and validated (closed months: released)."""
    grace = contracts.get("visit_outcome").disclosure.close_after_days
    start = closed_window(2, settings.clock.now(), grace)
    config = SimConfig(days=2, seed=31, start=start, datasets=CORE_DATASETS)
    events = list(Simulator(config, contracts, clock=settings.clock).events())
    with Publisher(settings, contracts) as pub:
        assert pub.publish(Outgoing(e.dataset, e.payload) for e in events).delivered_total
    assert land(settings, workers=1).rows > 0
    for dataset in CORE_DATASETS:
        validate(settings, dataset)


def test_a_release_lives_on_object_storage(kafka_settings, s3_lake, contracts):
    settings = Settings(publish_workers=1, share_port=free_port())
    lake = lake_for(settings)
    assert lake.uri().startswith("s3://visitshare/t") and not lake.is_local
    _land_and_validate(settings, contracts)
    published = publish(settings)
    assert published is not None and published.release_id == 1

    # Every zone is on object storage; the local lake directory was never made.
    zones_there = {e.path.split("/")[0] for e in lake.list("")}
    assert {"raw", "validated", "state", "shared"} <= zones_there
    assert "staging" not in zones_there  # removed once the release committed
    assert not settings.lake.exists()

    # The release's Iceberg tables, read back from object storage by pyiceberg...
    cat = shared.catalog(settings)
    visits = cat.load_table("shared.visits")
    assert visits.location().startswith(lake.uri("shared/"))
    snapshot = published.tables["visits"]["snapshot_id"]
    from_iceberg = visits.scan(snapshot_id=snapshot).to_arrow()
    assert from_iceberg.num_rows > 0
    # ... and by DuckDB, over Arrow (no httpfs): the data files `release_files` maps.
    with engine_for(settings).connect() as conn:
        paths = conn.execute(
            sa.select(release_files.c.path).where(release_files.c.table_name == "visits")
        ).scalars()
        rels = [lake.relative(p) for p in paths]
    assert rels and all(r.startswith("shared/") for r in rels)
    con = duckdb.connect()
    con.register("visits", lake.dataset(rels, visits.schema().as_arrow()))
    counted = con.execute("SELECT count(*), count(DISTINCT municipality_code) FROM visits")
    assert counted.fetchone() == (
        from_iceberg.num_rows,
        len(set(from_iceberg.column("municipality_code").to_pylist())),
    )

    # `visitshare pull` exports from it (into a local folder of the partner's).
    _, pulled = pull(settings, "police", "latest", "parquet", settings.var / "exports")
    assert pulled["visits"][1] == from_iceberg.num_rows

    # The sharing server serves a data file from object storage, ranges included.
    issued = tokens.create(settings, "police", "1d")
    with background(settings, "127.0.0.1", settings.share_port) as endpoint:
        url = f"{endpoint}/shares/police/schemas/shared/tables/visits/query"
        answer = requests.post(
            url, json={}, headers={"Authorization": f"Bearer {issued.token}"}, timeout=30
        )
        lines = [json.loads(line) for line in answer.text.splitlines() if line.strip()]
        file_url = next(line["file"]["url"] for line in lines if "file" in line)
        whole = requests.get(file_url, timeout=10)
        assert whole.status_code == 200 and whole.content[:4] == whole.content[-4:] == b"PAR1"
        served = unquote(urlparse(file_url).path.split("/files/", 1)[1])
        assert whole.content == lake.read_bytes(f"shared/{served}")
        tail = requests.get(file_url, headers={"Range": "bytes=-8"}, timeout=10)
        assert tail.status_code == 206 and tail.content == whole.content[-8:]
        assert tail.headers["content-range"] == f"bytes {len(whole.content) - 8}-" + (
            f"{len(whole.content) - 1}/{len(whole.content)}"
        )
        middle = requests.get(file_url, headers={"Range": "bytes=4-9"}, timeout=10)
        assert middle.status_code == 206 and middle.content == whole.content[4:10]
        beyond = requests.get(
            file_url, headers={"Range": f"bytes={len(whole.content)}-"}, timeout=10
        )
        assert beyond.status_code == 416

    # Orphans (written, never committed) are found by listing and removed.
    stray = f"{lake.relative(visits.location())}/data/stray.parquet"
    lake.write_bytes(b"not referenced by any snapshot", stray)
    state = "state/records/visit_outcome/stray.parquet"
    lake.write_parquet(pa.table({"x": [1]}), state)
    report = maintain(settings)
    assert report.orphan_files_removed >= 1 and report.state_files_removed >= 1
    assert not lake.exists(stray) and not lake.exists(state)
    assert visits.scan(snapshot_id=snapshot).to_arrow().num_rows == from_iceberg.num_rows
    assert not settings.lake.exists()


def test_landing_removes_an_orphan_object(kafka_settings, s3_lake, contracts):
    settings = Settings()
    lake = lake_for(settings)
    topic = settings.topic(contracts.get("visit_outcome").topic)
    events = list(Simulator(SimConfig(days=1, seed=5), contracts).events())
    with Publisher(settings, contracts) as pub:
        pub.publish(Outgoing(e.dataset, e.payload) for e in events if e.dataset == "visit_outcome")
    assert land(settings, [topic], workers=1).rows > 0
    landed = manifest.files(engine_for(settings), topic)
    first = landed[0]
    # What a lander killed between its write and its manifest commit leaves: a file whose
    # range the manifest has since landed again.
    orphan = zones.raw_file(topic, first.partition, 0, 0, first.topic_id).as_posix()
    lake.write_bytes(lake.read_bytes(first.path), orphan)
    report = land(settings, [topic], workers=1)
    assert report.orphans_removed == 1 and not lake.exists(orphan)
    raw = {e.path for e in lake.list("raw")}
    assert raw == {f.path for f in manifest.files(engine_for(settings))}


def test_a_failed_write_leaves_no_object(s3_lake):
    lake = lake_for(s3_lake)
    with pytest.raises(pa.ArrowNotImplementedError):  # fails while encoding: nothing uploaded
        lake.write_parquet(pa.table({"u": pa.array([1], pa.dense_union([]))}), "raw/a.parquet")
    # Uploads whose connection is lost partway: a single PUT (3 MiB), and a multipart upload
    # (12 MiB: its first part is cut) that is never completed. No object appears.
    endpoint = urlparse(s3_lake.s3_endpoint or "")
    with _Cutting(endpoint.hostname or "", endpoint.port or 80, after=1 << 20) as port:
        cut = Lake(
            pafs.S3FileSystem(
                **_s3_options(s3_lake),
                endpoint_override=f"127.0.0.1:{port}",
                scheme="http",
                retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1),
            ),
            lake.root,
        )
        for size in (3 << 20, 12 << 20):
            with pytest.raises(OSError, match=r"(?i)connect|reset|closed|upload|curl|network"):
                cut.write_bytes(bytes(size), f"raw/{size}.parquet")
    assert lake.list("raw") == []
    lake.write_bytes(b"mine", "raw/c")
    with pytest.raises(FileExistsError):  # a name someone else holds is not overwritten
        lake.write_bytes(b"theirs", "raw/c", replace=lambda _: False)
    assert lake.read_bytes("raw/c") == b"mine"


def _s3_options(settings: Settings) -> dict:
    key, secret = settings.s3_credentials() or ("", "")
    return {"access_key": key, "secret_key": secret, "region": settings.s3_region}


class _Cutting:
    """A TCP proxy to the object store that drops a connection once it has forwarded `after`
    bytes of requests: an upload whose connection is lost."""

    def __init__(self, host: str, port: int, after: int):
        self.target, self.after = (host, port), after
        self.server = socket.create_server(("127.0.0.1", 0))
        self.closed = threading.Event()

    def __enter__(self) -> int:
        threading.Thread(target=self._accept, daemon=True).start()
        return self.server.getsockname()[1]

    def __exit__(self, *exc: object) -> None:
        self.closed.set()
        self.server.close()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, cut: bool) -> None:
        sent = 0
        try:
            while data := src.recv(65536):
                sent += len(data)
                if cut and sent > self.after:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
