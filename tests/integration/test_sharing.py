"""The Delta Sharing server, read by the official client (delta-sharing on PyPI) over real HTTP.

Two real releases (Iceberg on SQLite, simulated validated zone) are served by the server in a
thread of the test process; wards and the police read them with `delta_sharing` as they would
from their own machines, and with plain HTTP for what the client hides (status codes, URLs).
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse, urlunparse

import delta_sharing
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
import sqlalchemy as sa
from typer.testing import CliRunner

from producers.simulator import DATASETS
from tests.helpers import free_port, validated_zone, wait_for
from visitshare.access import accesslog, tokens
from visitshare.access.errors import PartnerError
from visitshare.access.export import pull
from visitshare.access.server import background
from visitshare.cli import app
from visitshare.db import engine_for
from visitshare.db.tables import release_files, share_tokens
from visitshare.release import shared
from visitshare.release.publish import publish
from visitshare.settings import Settings

WARD, OTHER_WARD = "shinjuku", "chuo"


@dataclass
class World:
    settings: Settings
    endpoint: str
    profiles: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory, contracts) -> World:
    """Two releases (the second adds a second simulated slice) and a server on them."""
    home = tmp_path_factory.mktemp("sharing") / "var"
    port = free_port()
    settings = Settings(home=home, publish_workers=1, share_port=port)
    validated_zone(settings, contracts, days=3, seed=11, datasets=DATASETS)
    assert publish(settings).release_id == 1
    validated_zone(settings, contracts, days=3, seed=12, datasets=DATASETS)
    assert publish(settings).release_id == 2
    with background(settings, "127.0.0.1", port) as endpoint:
        yield World(settings, endpoint, home.parent / "profiles")


def profile(world: World, partner: str, expires: str = "1d") -> tuple[Path, tokens.Issued]:
    issued = tokens.create(world.settings, partner, expires)
    path = world.profiles / f"{partner}-{issued.id}.share"
    return tokens.write_profile(world.settings, issued, path), issued


def bearer(issued: tokens.Issued) -> dict[str, str]:
    return {"Authorization": f"Bearer {issued.token}"}


def canonical(df: pd.DataFrame) -> list[str]:
    """The rows as a sorted list of JSON texts: equal iff the same rows (any order, any dtype)."""

    def value(v):
        if isinstance(v, (list, tuple)) or hasattr(v, "tolist"):
            return [value(x) for x in list(v)]
        return None if v is None or (isinstance(v, float) and v != v) or v is pd.NA else str(v)

    cols = sorted(df.columns)
    return sorted(
        json.dumps([value(r[c]) for c in cols], ensure_ascii=False) for _, r in df.iterrows()
    )


def query(world: World, issued, table: str, share: str | None = None, **body) -> requests.Response:
    share = share or issued.partner.id
    schema = (
        shared.table(world.settings, table).iceberg.split(".")[0]
        if table in shared.by_name(world.settings)
        else "shared"
    )
    url = f"{world.endpoint}/shares/{share}/schemas/{schema}/tables/{table}/query"
    return requests.post(url, json=body, headers=bearer(issued), timeout=30)


def file_urls(response: requests.Response) -> list[str]:
    lines = [json.loads(line) for line in response.text.splitlines() if line.strip()]
    return [line["file"]["url"] for line in lines if "file" in line]


def test_a_ward_reads_its_tables_as_its_pull_exports_them(world: World):
    path, _ = profile(world, WARD)
    client = delta_sharing.SharingClient(str(path))
    tables = client.list_all_tables()
    expected = {s.name for s in shared.tables(world.settings) if s.level is not shared.Level.POLICE}
    assert {t.name for t in tables} == expected
    assert {t.share for t in tables} == {WARD}
    for release in (2, 1):
        _, written = pull(world.settings, WARD, release, "parquet", world.profiles / "pulled")
        for t in tables:
            url = f"{path}#{t.share}.{t.schema}.{t.name}"
            served = delta_sharing.load_as_pandas(url, version=release)
            exported = pq.read_table(written[t.name][0]).to_pandas(date_as_object=True)
            assert len(served) == written[t.name][1], (t.name, release)
            assert canonical(served) == canonical(exported), (t.name, release)
    latest = delta_sharing.load_as_pandas(f"{path}#{WARD}.shared.visits")
    assert (
        len(latest)
        == pull(world.settings, WARD, 2, "parquet", world.profiles / "p")[1]["visits"][1]
    )
    assert set(latest["municipality_code"]) == {"13104"}


def test_a_query_lists_exactly_the_files_of_the_callers_rows(world: World):
    _, ward = profile(world, WARD)
    _, police = profile(world, "police")
    with engine_for(world.settings).connect() as conn:
        current = conn.execute(
            sa.select(release_files).where(release_files.c.release_to.is_(None))
        ).all()
    by_table: dict[str, list] = {}
    served = 0  # tables of which the ward got files
    for r in current:
        by_table.setdefault(r.table_name, []).append(r)
    for spec in shared.tables(world.settings):
        files = by_table.get(spec.name, [])
        police_urls = file_urls(query(world, police, spec.name))
        assert len(police_urls) == len(files), spec.name
        for url in police_urls:  # every file holds one municipality's rows: lists can be exact
            data = pq.read_table(pa.BufferReader(requests.get(url, timeout=30).content))
            assert len(set(data.column("municipality_code").to_pylist())) == 1, spec.name
        if spec.level is shared.Level.POLICE:
            assert query(world, ward, spec.name).status_code == 404
            continue
        ward_urls = file_urls(query(world, ward, spec.name))
        mine = [
            f
            for f in files
            if spec.level is not shared.Level.TOWN or f.municipality_code == "13104"
        ]
        assert len(ward_urls) == len(mine), spec.name
        served += len(ward_urls) > 0
        for url in ward_urls:  # every row of every file the ward is given is its own
            data = pq.read_table(pa.BufferReader(requests.get(url, timeout=30).content))
            if spec.level is shared.Level.TOWN:
                assert set(data.column("municipality_code").to_pylist()) == {"13104"}
    readable = [t for t in shared.tables(world.settings) if t.level is not shared.Level.POLICE]
    assert served >= len(readable) - 1  # every dataset was simulated (a small one may miss)
    # A predicate hint naming another municipality changes nothing: hints are not access.
    hinted = query(world, ward, "visits", predicateHints=["municipality_code = '13102'"])
    assert sorted(map(_path_of, file_urls(hinted))) == sorted(
        map(_path_of, file_urls(query(world, ward, "visits")))
    )


def _path_of(url: str) -> str:
    return urlparse(url).path


def test_refusals_401_403_404(world: World):
    path, ward = profile(world, WARD)
    base = world.endpoint
    # No token, a malformed one, a well-formed unknown one: 401.
    for headers in (
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": f"Bearer {ward.token[:-2]}xx"},
    ):
        assert requests.get(f"{base}/shares", headers=headers, timeout=10).status_code == 401
    # Another ward's share, and a share that does not exist, look the same: 403.
    for share in (OTHER_WARD, "no-such-share"):
        r = requests.get(f"{base}/shares/{share}/all-tables", headers=bearer(ward), timeout=10)
        assert r.status_code == 403 and r.json()["errorCode"] == "PERMISSION_DENIED"
        assert query(world, ward, "visits", share=share).status_code == 403
    # The police-only table, in the ward's own share, does not exist for it.
    url = f"{base}/shares/{WARD}/schemas/police/tables/repeat_victimization/metadata"
    assert requests.get(url, headers=bearer(ward), timeout=10).status_code == 404
    with pytest.raises(requests.HTTPError) as refused:
        delta_sharing.load_as_pandas(f"{path}#{OTHER_WARD}.shared.visits")
    assert refused.value.response.status_code == 403
    # Unknown and malformed versions.
    assert query(world, ward, "visits", version=99).status_code == 404
    assert query(world, ward, "visits", version="2").status_code == 400
    assert query(world, ward, "visits", startingVersion=1).status_code == 400
    table = f"{base}/shares/{WARD}/schemas/shared/tables/visits/query"
    for body in (b"{not json", b"[1, 2]", b'{"version": -1}', b" " * (2 << 20)):
        r = requests.post(table, data=body, headers=bearer(ward), timeout=30)
        assert r.status_code in (400, 404, 413) and "errorCode" in r.json(), body[:20]


def _tampered(url: str) -> list[str]:
    parts = urlparse(url)
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    out = []
    for key, value in (
        ("partner", OTHER_WARD),
        ("expires", str(int(q["expires"]) + 3600)),
        ("token", "0" * 12),
    ):
        out.append(urlunparse(parts._replace(query=urlencode(q | {key: value}))))
    out.append(urlunparse(parts._replace(query=urlencode(q | {"sig": "0" * 64}))))
    other = parts.path.replace("municipality_code%3D13104", "municipality_code%3D13102")
    out.append(urlunparse(parts._replace(path=other)))
    return out


def test_file_urls_are_signed_short_lived_and_die_with_their_token(world: World):
    _, ward = profile(world, WARD)
    urls = file_urls(query(world, ward, "visits"))
    assert urls and requests.get(urls[0], timeout=10).status_code == 200
    for bad in _tampered(urls[0]):
        assert requests.get(bad, timeout=10).status_code == 403, bad
    # Range requests (how Parquet readers fetch a footer) are answered with just the range.
    r = requests.get(urls[0], headers={"Range": "bytes=-8"}, timeout=10)
    assert r.status_code == 206 and r.content.endswith(b"PAR1") and len(r.content) == 8
    # Past its expiry, the same URL is refused: a server whose clock is later by the TTL.
    later = world.settings.model_copy(
        update={
            "now": world.settings.clock.now()
            + timedelta(seconds=world.settings.share_url_ttl_seconds + 1)
        }
    )
    with background(later, "127.0.0.1", free_port()) as other:
        moved = urls[0].replace(world.endpoint, other)
        assert requests.get(moved, timeout=10).status_code == 403
    # Revoking the token kills its queries and the URLs already handed out.
    tokens.revoke(world.settings, ward.id, None)
    assert requests.get(urls[0], timeout=10).status_code == 403
    assert query(world, ward, "visits").status_code == 401


def test_expired_token_gets_401(world: World):
    _, ward = profile(world, WARD, expires="1h")
    assert query(world, ward, "visits").status_code == 200
    later = world.settings.model_copy(
        update={"now": world.settings.clock.now() + timedelta(hours=2)}
    )
    with background(later, "127.0.0.1", free_port()) as other:
        r = requests.get(f"{other}/shares", headers=bearer(ward), timeout=10)
        assert r.status_code == 401 and r.json()["errorCode"] == "UNAUTHENTICATED"
    assert [t["state"] for t in tokens.listing(later) if t["id"] == ward.id] == ["expired"]


def test_the_dashboard_is_served_to_the_partners_token(world: World):
    _, ward = profile(world, WARD)
    url = f"{world.endpoint}/dashboard"
    assert requests.get(url, timeout=10).status_code == 401
    served = requests.get(url, headers=bearer(ward), params={"version": 1}, timeout=60)
    assert served.status_code == 200 and served.headers["content-type"].startswith("text/html")
    pull(world.settings, WARD, 1, "parquet", world.profiles / "dash")
    pulled = world.profiles / "dash" / WARD / "release-1" / "dashboard.html"
    assert served.text == pulled.read_text(encoding="utf-8")
    # Nothing to fetch (the browser test blocks the network and watches the requests).
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", served.text)


def test_tokens_are_stored_hashed_and_profiles_are_private(world: World):
    path, issued = profile(world, WARD)
    body = json.loads(path.read_text())
    assert body["shareCredentialsVersion"] == 1 and body["bearerToken"] == issued.token
    assert body["endpoint"] == world.endpoint
    assert body["expirationTime"].startswith(f"{issued.expires_at:%Y-%m-%dT%H:%M:%S}")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    secret = issued.token.split(".")[-1]
    with engine_for(world.settings).connect() as conn:
        stored = [str(v) for row in conn.execute(sa.select(share_tokens)) for v in row]
    assert not any(secret in v for v in stored)


def test_versions_timestamps_and_pages(world: World):
    _, ward = profile(world, WARD)
    table = f"{world.endpoint}/shares/{WARD}/schemas/shared/tables/visits"
    r = requests.get(f"{table}/version", headers=bearer(ward), timeout=10)
    assert r.status_code == 200 and r.headers["Delta-Table-Version"] == "2"
    assert (
        requests.head(table, headers=bearer(ward), timeout=10).headers["Delta-Table-Version"] == "2"
    )
    meta = requests.get(f"{table}/metadata?version=1", headers=bearer(ward), timeout=10)
    assert meta.headers["Delta-Table-Version"] == "1"
    lines = [json.loads(x) for x in meta.text.splitlines()]
    fields = {f["name"] for f in json.loads(lines[1]["metaData"]["schemaString"])["fields"]}
    assert {"municipality_code", "town", "vulnerabilities"} <= fields
    r1 = query(world, ward, "visits", version=1)
    assert r1.headers["Delta-Table-Version"] == "1"
    assert all(json.loads(x)["file"]["version"] == 1 for x in r1.text.splitlines()[2:])
    items, token, pages = [], None, 0
    while True:
        params = {"maxResults": 2} | ({"pageToken": token} if token else {})
        page = requests.get(
            f"{world.endpoint}/shares/{WARD}/all-tables",
            params=params,
            headers=bearer(ward),
            timeout=10,
        ).json()
        items += page["items"]
        pages += 1
        token = page.get("nextPageToken")
        if not token:
            break
    ward_tables = [t for t in shared.tables(world.settings) if t.level is not shared.Level.POLICE]
    assert len(items) == len(ward_tables) and pages == -(-len(ward_tables) // 2)
    assert len({i["name"] for i in items}) == len(items)  # each table once across the pages
    bad = requests.get(
        f"{world.endpoint}/shares", params={"pageToken": "x"}, headers=bearer(ward), timeout=10
    )
    assert bad.status_code == 400


def test_every_request_lands_in_the_access_log(world: World, monkeypatch):
    _, ward = profile(world, WARD)
    before = len(accesslog.entries(world.settings))
    ok = query(world, ward, "visits")
    urls = file_urls(ok)
    got = requests.get(urls[0], timeout=10)
    requests.get(f"{world.endpoint}/shares", timeout=10)  # no token
    query(world, ward, "visits", share=OTHER_WARD)
    rows = accesslog.entries(world.settings)[before:]
    assert [(r.endpoint, r.status) for r in rows] == [
        ("query", 200),
        ("file", 200),
        ("list_shares", 401),
        ("query", 403),
    ]
    q, f, anon, other = rows
    files = [x for x in ok.text.splitlines()[2:]]
    assert (q.partner_id, q.token_id, q.release_id, q.files) == (WARD, ward.id, 2, len(files))
    assert q.rows == sum(json.loads(json.loads(x)["file"]["stats"])["numRecords"] for x in files)
    assert f.bytes == len(got.content) and f.token_id == ward.id
    assert anon.partner_id is None and other.share == OTHER_WARD
    logged = " ".join(str(v) for r in rows for v in r)
    assert ward.token.split(".")[-1] not in logged and "sig=" not in logged
    # `visitshare share log` shows them, and writes the auditors' page.
    monkeypatch.setenv("VISITSHARE_HOME", str(world.settings.home))
    page = world.profiles / "access.html"
    result = CliRunner().invoke(app, ["share", "log", "--partner", WARD, "--html", str(page)])
    assert result.exit_code == 0, result.output
    text = page.read_text()
    assert text.count("<tr") - 1 == len(accesslog.entries(world.settings, WARD))
    assert "<script" not in text and "://" not in text  # opens offline, as it is


def test_token_commands(world: World, monkeypatch):
    monkeypatch.setenv("VISITSHARE_HOME", str(world.settings.home))
    runner = CliRunner()
    out = world.profiles / "cli.share"
    r = runner.invoke(
        app,
        ["share", "token", "create", "--partner", "minato", "--expires", "2w", "--out", str(out)],
    )
    assert r.exit_code == 0, r.output
    token = json.loads(out.read_text())["bearerToken"]
    token_id = token.split(".")[1]
    listed = runner.invoke(app, ["share", "token", "list", "--partner", "minato"])
    assert token_id in listed.output and "active" in listed.output and token not in listed.output
    assert runner.invoke(app, ["share", "token", "revoke", token_id]).exit_code == 0
    assert "revoked" in runner.invoke(app, ["share", "token", "list", "--partner", "minato"]).output
    again = runner.invoke(app, ["share", "token", "revoke", token_id])
    assert isinstance(again.exception, tokens.TokenError)
    assert "already revoked" in str(again.exception)
    for partner, expires in (
        ("minato", "0d"),
        ("minato", "soon"),
        ("minato", "9999d"),
        ("nobody", "1d"),
    ):
        args = ["share", "token", "create", "--partner", partner, "--expires", expires]
        r = runner.invoke(app, [*args, "--out", str(world.profiles / "refused.share")])
        assert isinstance(r.exception, tokens.TokenError | PartnerError), (partner, expires)
        assert not (world.profiles / "refused.share").exists()


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (PEM files), valid around the clock's now."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = Settings().clock.now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_share_serve_command_serves_https(world: World, tmp_path):
    """`visitshare share serve --certfile --keyfile` in its own process, as an operator runs it;
    the official client reads over TLS, verifying the server's certificate."""
    port = free_port()
    cert, key = _self_signed(tmp_path)
    env = os.environ | {
        "VISITSHARE_HOME": str(world.settings.home),
        "VISITSHARE_SHARE_PORT": str(port),
        # The client's trust: our certificate (requests for the API, aiohttp for the files).
        "REQUESTS_CA_BUNDLE": str(cert),
        "SSL_CERT_FILE": str(cert),
    }
    argv = ["share", "serve", "--certfile", str(cert), "--keyfile", str(key)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "visitshare.cli", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        issued = tokens.create(world.settings, WARD, "1d")
        endpoint = f"https://127.0.0.1:{port}/delta-sharing"

        def answers() -> bool:
            try:
                r = requests.get(
                    f"{endpoint}/shares", headers=bearer(issued), verify=cert, timeout=2
                )
            except requests.ConnectionError:
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                return False
            return r.status_code == 200

        wait_for(answers, timeout_s=60)
        https = world.settings.model_copy(update={"share_public_url": endpoint})
        path = tokens.write_profile(https, issued, tmp_path / "tls.share")
        query = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys, delta_sharing as d; "
                "print(len(d.load_as_pandas(sys.argv[1] + '#shinjuku.shared.visits')))",
                str(path),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert query.returncode == 0, query.stderr[-2000:]
        _, written = pull(world.settings, WARD, "latest", "parquet", tmp_path / "pulled")
        assert int(query.stdout.strip()) == written["visits"][1]
        # Plain HTTP on the TLS port gets no answer.
        with pytest.raises(requests.ConnectionError):
            requests.get(endpoint.replace("https", "http") + "/shares", timeout=5)
    finally:
        proc.terminate()
        proc.wait(20)
