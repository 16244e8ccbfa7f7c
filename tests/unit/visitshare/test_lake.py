"""The lake's filesystem layer on local disk: names, reads, whole writes, listings."""

from __future__ import annotations

import hashlib
import os
import time

import pyarrow as pa
import pytest

from visitshare.lake import lake_for
from visitshare.settings import Settings


@pytest.fixture
def lake(tmp_path):
    return lake_for(Settings(home=tmp_path, lake_dir=tmp_path / "lake"))


def test_a_written_file_reads_back_with_its_size_and_digest(lake):
    table = pa.table({"a": [1, 2, 3]})
    nbytes, digest = lake.write_parquet(table, "validated/d/x.parquet", {"zone": "validated"})
    data = lake.read_bytes("validated/d/x.parquet")
    assert (len(data), hashlib.sha256(data).hexdigest()) == (nbytes, digest)
    back = lake.read_table("validated/d/x.parquet", columns=["a"])
    assert back.column("a").to_pylist() == [1, 2, 3]
    assert lake.read_schema("validated/d/x.parquet").metadata[b"zone"] == b"validated"
    with lake.open_input("validated/d/x.parquet") as f:
        assert f.size() == nbytes and f.read_at(4, nbytes - 4) == b"PAR1"
    stat = lake.stat("validated/d/x.parquet")
    assert stat is not None and stat.size == nbytes and abs(stat.mtime - time.time()) < 60
    assert lake.stat("validated/d/none.parquet") is None


def test_a_failing_write_leaves_nothing_at_the_final_path(lake, monkeypatch):
    def broken(*_):
        raise OSError("disk full")

    with pytest.raises(pa.ArrowNotImplementedError):  # encoding fails: nothing written at all
        lake.write_parquet(pa.table({"u": pa.array([1], pa.dense_union([]))}), "raw/a.parquet")
    monkeypatch.setattr(os, "link", broken)  # the write fails after the temporary file
    with pytest.raises(OSError, match="disk full"):
        lake.write_bytes(b"x" * 1000, "raw/b.parquet")
    assert not lake.exists("raw/a.parquet") and not lake.exists("raw/b.parquet")
    assert lake.list("raw") == []  # no temporary file left either


def test_a_file_is_replaced_only_when_allowed(lake):
    lake.write_bytes(b"old", "state/f")
    with pytest.raises(FileExistsError):
        lake.write_bytes(b"new", "state/f", replace=lambda rel: rel != "state/f")
    assert lake.read_bytes("state/f") == b"old"
    lake.write_bytes(b"new", "state/f")
    assert lake.read_bytes("state/f") == b"new"


def test_listing_removal_and_touch(lake):
    for rel in ("staging/t1/a/shard-000.parquet", "staging/t1/owner.json", "staging/t2/x"):
        lake.write_bytes(b"12345", rel)
    assert [e.path for e in lake.list("staging")] == [
        "staging/t1/a/shard-000.parquet",
        "staging/t1/owner.json",
        "staging/t2/x",
    ]
    assert [e.path for e in lake.list("staging/t1", recursive=False)] == ["staging/t1/owner.json"]
    assert {e.size for e in lake.list("staging")} == {5}
    assert lake.list("nowhere") == []
    # An hour older, then touched: compared as the lake reads times (under libfaketime,
    # Python's os.stat and the lake's reads disagree by the shift).
    written = lake.stat("staging/t2/x")
    assert written is not None
    os.utime(lake.local_path("staging/t2/x"), (written.mtime - 3600, written.mtime - 3600))
    aged = lake.stat("staging/t2/x")
    assert aged is not None
    lake.touch("staging/t2/x")
    stat = lake.stat("staging/t2/x")
    assert stat is not None and stat.mtime > aged.mtime + 3000
    lake.remove_tree("staging/t1")
    lake.remove("staging/t2/x")
    lake.remove("staging/t2/x")  # already gone: fine
    assert lake.list("staging") == []


def test_names_stay_inside_the_lake(lake):
    rel = "shared/shared.db/visits/data/f 1.parquet"
    assert lake.relative(lake.uri(rel)) == rel
    assert lake.relative(str(lake.local_path(rel))) == rel
    assert lake.uri().startswith("file:///")
    for outside in ("../x", "/etc/passwd", "a/../../x"):
        with pytest.raises(ValueError, match="not a path inside the lake"):
            lake.read_bytes(outside)
    with pytest.raises(ValueError, match="not under the lake"):
        lake.relative("file:///etc/passwd")
    with pytest.raises(ValueError, match="not a location of this lake"):
        lake.relative("s3://bucket/elsewhere")
    with pytest.raises(ValueError, match="whole lake"):
        lake.remove_tree("")
