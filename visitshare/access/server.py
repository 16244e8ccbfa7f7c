"""`visitshare share serve`: a Delta Sharing server (open protocol, delta-io/delta-sharing
PROTOCOL.md), so that a partner reads its share with its own tools (pandas, Spark, Power BI).

Implemented under `/delta-sharing`: list shares, get share, list schemas, list tables, list all
tables, query table version (GET `/version` and the deprecated HEAD), query table metadata, read
data (`/query`, `responseformat=parquet`, snapshot at a version or timestamp), pre-signed file
downloads (`/files/...`, Range requests), and the partner's dashboard (`/dashboard`, not part
of the protocol). Not implemented: change data feed (`/changes`, `startingVersion`), the delta
response format, asynchronous queries and temporary table credentials; they answer 400.

Every request is authenticated by a bearer token (`visitshare.access.tokens`), except file
downloads, which carry a signature instead (`visitshare.access.signing`); every request,
refused ones included, lands in the access log (`visitshare.access.accesslog`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    Response,
    StreamingResponse,
)
from starlette.concurrency import run_in_threadpool

from visitshare.access import accesslog, sharing, tokens
from visitshare.access.sharing import SharingError, bad_request
from visitshare.access.signing import Grant, url_key
from visitshare.lake import Lake, lake_for
from visitshare.landing import zones
from visitshare.release import shared
from visitshare.settings import Settings

log = logging.getLogger(__name__)

PREFIX = "/delta-sharing"
NDJSON = "application/x-ndjson; charset=utf-8"
VERSION_HEADER = "Delta-Table-Version"
CAPABILITIES_HEADER = "delta-sharing-capabilities"
TABLE = PREFIX + "/shares/{share}/schemas/{schema}/tables/{table}"
MAX_BODY_BYTES = 1 << 20


def _timestamp(text: str | None, name: str) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise bad_request(f"{name} must be an ISO 8601 timestamp, not {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _page(items: list[dict], max_results: int | None, page_token: str | None) -> dict:
    """One page of a listing; the page token is the offset, opaque to the client."""
    start = 0
    if page_token:
        try:
            start = int(json.loads(base64.urlsafe_b64decode(page_token.encode()))["offset"])
        except (ValueError, KeyError, TypeError):
            start = -1
        if start < 0:
            raise bad_request("pageToken is not one this server issued")
    if max_results is not None and max_results < 0:
        raise bad_request("maxResults must be non-negative")
    end = len(items) if max_results is None else start + max_results
    page: dict[str, Any] = {"items": items[start:end]}
    if end < len(items):
        token = json.dumps({"offset": end}).encode()
        page["nextPageToken"] = base64.urlsafe_b64encode(token).decode()
    return page


def _ndjson(lines: list[dict], version: int) -> Response:
    body = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    return Response(
        body,
        media_type=NDJSON,
        headers={VERSION_HEADER: str(version), CAPABILITIES_HEADER: "responseformat=parquet"},
    )


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(title="visit-share Delta Sharing server", docs_url=None, redoc_url=None)
    key = url_key(settings)

    @app.middleware("http")
    async def access_log(request: Request, call_next):
        request.state.log = {}
        response = await call_next(request)
        entry = request.state.log
        if entry.get("endpoint") == "file" and response.status_code < 300:
            entry["bytes"] = int(response.headers.get("content-length") or 0)
        entry.setdefault("endpoint", "unknown")
        client = request.client.host if request.client else None
        await run_in_threadpool(
            accesslog.record,
            settings,
            method=request.method,
            status=response.status_code,
            client=client,
            **entry,
        )
        return response

    @app.exception_handler(SharingError)
    async def sharing_error(request: Request, exc: SharingError):
        return JSONResponse({"errorCode": exc.code, "message": exc.message}, exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"errorCode": "INVALID_PARAMETER_VALUE", "message": message}, 400)

    def caller(request: Request, endpoint: str, **names) -> tokens.Caller:
        """The token's owner; 401 for a missing, unknown, expired or revoked token."""
        request.state.log.update(endpoint=endpoint, **{k: v for k, v in names.items() if v})
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        who = tokens.authenticate(settings, token.strip()) if scheme.lower() == "bearer" else None
        if who is None:
            raise SharingError(401, "UNAUTHENTICATED", "missing, unknown, expired or revoked token")
        request.state.log.update(partner_id=who.partner.id, token_id=who.token_id)
        return who

    def share_item(partner) -> dict:
        return {"name": partner.id, "id": sharing.share_id(partner)}

    def table_item(partner, schema: str, spec: shared.SharedTable) -> dict:
        return {
            "name": spec.name,
            "schema": schema,
            "share": partner.id,
            "shareId": sharing.share_id(partner),
            "id": sharing.table_id(spec),
        }

    # -- listings ---------------------------------------------------------------------------
    @app.get(PREFIX + "/shares")
    def list_shares(request: Request, maxResults: int | None = None, pageToken: str | None = None):
        who = caller(request, "list_shares")
        return _page([share_item(who.partner)], maxResults, pageToken)

    @app.get(PREFIX + "/shares/{share}")
    def get_share(request: Request, share: str):
        who = caller(request, "get_share", share=share)
        sharing.check_share(who.partner, share)
        return {"share": share_item(who.partner)}

    @app.get(PREFIX + "/shares/{share}/schemas")
    def list_schemas(
        request: Request, share: str, maxResults: int | None = None, pageToken: str | None = None
    ):
        who = caller(request, "list_schemas", share=share)
        sharing.check_share(who.partner, share)
        items = [
            {"name": s, "share": who.partner.id} for s in sharing.schemas_of(settings, who.partner)
        ]
        return _page(items, maxResults, pageToken)

    @app.get(PREFIX + "/shares/{share}/schemas/{schema}/tables")
    def list_tables(
        request: Request,
        share: str,
        schema: str,
        maxResults: int | None = None,
        pageToken: str | None = None,
    ):
        who = caller(request, "list_tables", share=share, schema_name=schema)
        sharing.check_share(who.partner, share)
        if schema.lower() not in sharing.schemas_of(settings, who.partner):
            raise sharing.not_found(f"schema {share}.{schema}")
        items = [
            table_item(who.partner, s, spec)
            for s, spec in sharing.tables_of(settings, who.partner)
            if s == schema.lower()
        ]
        return _page(items, maxResults, pageToken)

    @app.get(PREFIX + "/shares/{share}/all-tables")
    def list_all_tables(
        request: Request, share: str, maxResults: int | None = None, pageToken: str | None = None
    ):
        who = caller(request, "list_all_tables", share=share)
        sharing.check_share(who.partner, share)
        items = [
            table_item(who.partner, s, spec) for s, spec in sharing.tables_of(settings, who.partner)
        ]
        return _page(items, maxResults, pageToken)

    # -- one table ----------------------------------------------------------------------------
    def open_table(request: Request, endpoint: str, share: str, schema: str, name: str):
        """The caller and the table the path names in its share (401/403/404 otherwise)."""
        who = caller(request, endpoint, share=share, schema_name=schema, table_name=name)
        return who, sharing.resolve(settings, who.partner, share, schema, name)

    def version_response(request: Request, share: str, schema: str, name: str, starting):
        open_table(request, "version", share, schema, name)
        release = sharing.release_at(settings, starting=_timestamp(starting, "startingTimestamp"))
        request.state.log["release_id"] = release.id
        return Response(status_code=200, headers={VERSION_HEADER: str(release.id)})

    @app.get(TABLE + "/version")
    def get_version(
        request: Request, share: str, schema: str, table: str, startingTimestamp: str | None = None
    ):
        return version_response(request, share, schema, table, startingTimestamp)

    @app.head(TABLE)
    def head_version(request: Request, share: str, schema: str, table: str):
        return version_response(request, share, schema, table, None)

    @app.get(TABLE + "/metadata")
    def get_metadata(
        request: Request, share: str, schema: str, table: str, version: int | None = None
    ):
        _, spec = open_table(request, "metadata", share, schema, table)
        release = sharing.release_at(settings, version=version)
        request.state.log["release_id"] = release.id
        meta = sharing.metadata(settings, spec, release)
        return _ndjson([{"protocol": {"minReaderVersion": 1}}, {"metaData": meta}], release.id)

    @app.post(TABLE + "/query")
    async def query(request: Request, share: str, schema: str, table: str):
        raw = b""
        async for chunk in request.stream():  # a query body is small: refuse a flood early
            raw += chunk
            if len(raw) > MAX_BODY_BYTES:
                raise SharingError(413, "INVALID_PARAMETER_VALUE", "the request body is too large")
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            raise bad_request("the request body is not JSON") from None
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        return await run_in_threadpool(answer_query, request, share, schema, table, body)

    def answer_query(request: Request, share: str, schema: str, name: str, body: dict):
        who, spec = open_table(request, "query", share, schema, name)
        if body.get("startingVersion") is not None or body.get("endingVersion") is not None:
            raise bad_request("change data feed (startingVersion) is not shared by this server")
        version, at = body.get("version"), body.get("timestamp")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            raise bad_request("version must be an integer")
        if at is not None and not isinstance(at, str):
            raise bad_request("timestamp must be a string")
        release = sharing.release_at(
            settings, version=version, timestamp=_timestamp(at, "timestamp")
        )
        meta = sharing.metadata(settings, spec, release)
        files = sharing.files_for(settings, who.partner, spec, release)
        now = settings.clock.now()
        expires = int((now + timedelta(seconds=settings.share_url_ttl_seconds)).timestamp())
        base = settings.share_public_url or (str(request.base_url).rstrip("/") + PREFIX)
        lines: list[dict] = [{"protocol": {"minReaderVersion": 1}}, {"metaData": meta}]
        for f in files:
            grant = Grant(f.path, who.partner.id, who.token_id, expires)
            action: dict[str, Any] = {
                "url": grant.url(base.rstrip("/"), key),
                "id": f.id,
                "partitionValues": {},
                "size": f.bytes,
                "stats": json.dumps({"numRecords": f.rows}),
                "expirationTimestamp": expires * 1000,
            }
            if version is not None or at is not None:
                action["version"] = release.id
                action["timestamp"] = int(release.published_at.timestamp() * 1000)
            lines.append({"file": action})
        request.state.log.update(
            release_id=release.id,
            files=len(files),
            rows=sum(f.rows for f in files),
            bytes=sum(f.bytes for f in files),
        )
        return _ndjson(lines, release.id)

    @app.get(TABLE + "/changes")
    def changes(request: Request, share: str, schema: str, table: str):
        open_table(request, "changes", share, schema, table)
        raise bad_request("change data feed is not shared by this server")

    # -- files and the dashboard -------------------------------------------------------------
    @app.api_route(PREFIX + "/files/{path:path}", methods=["GET", "HEAD"])
    def get_file(request: Request, path: str, partner: str, token: str, expires: int, sig: str):
        request.state.log.update(endpoint="file", partner_id=partner, token_id=token)
        denied = SharingError(403, "PERMISSION_DENIED", "the file URL is invalid or has expired")
        grant = Grant(path, partner, token, expires)
        if not grant.valid(sig, key, settings.clock.now()):
            raise denied
        who = tokens.holder(settings, token)
        if who is None or who.partner.id != partner:
            raise denied
        if not sharing.file_grantable(settings, who.partner, path):
            raise denied
        lake = lake_for(settings)
        rel = zones.WAREHOUSE / path
        if not lake.exists(rel):
            raise sharing.not_found("the file")
        request.state.log.update(files=1)
        if lake.is_local:  # sent by the kernel (sendfile), ranges answered by Starlette
            return FileResponse(lake.local_path(rel), media_type="application/octet-stream")
        return _object_response(lake, rel, request)

    @app.get(PREFIX + "/dashboard", response_class=HTMLResponse)
    def dashboard(request: Request, version: int | None = None):
        from visitshare.access.dashboard import render_dashboard

        who = caller(request, "dashboard")
        release = sharing.release_at(settings, version=version)
        request.state.log["release_id"] = release.id
        return HTMLResponse(render_dashboard(settings, who.partner, release))

    return app


def _object_response(lake: Lake, rel: PurePosixPath, request: Request) -> Response:
    """A file from object storage, streamed through the lake: all of it, or the one byte
    range asked for (how Parquet readers fetch a footer; several ranges get the whole file)."""
    source = lake.open_input(rel)
    size = source.size()
    start, end = 0, size - 1
    headers = {"accept-ranges": "bytes"}
    wanted = _byte_range(request.headers.get("range", ""), size)
    if isinstance(wanted, str):  # "unsatisfiable"
        source.close()
        return Response(status_code=416, headers={"content-range": f"bytes */{size}"})
    if wanted is not None:
        start, end = wanted
        headers["content-range"] = f"bytes {start}-{end}/{size}"
    headers["content-length"] = str(end - start + 1)
    status = 200 if wanted is None else 206
    if request.method == "HEAD":
        source.close()
        return Response(status_code=status, headers=headers)

    def chunks() -> Iterator[bytes]:
        try:
            for offset in range(start, end + 1, CHUNK):
                yield source.read_at(min(CHUNK, end + 1 - offset), offset)
        finally:
            source.close()

    return StreamingResponse(
        chunks(), status_code=status, headers=headers, media_type="application/octet-stream"
    )


CHUNK = 1 << 20  # bytes read from object storage at a time


def _byte_range(header: str, size: int) -> tuple[int, int] | str | None:
    """The (first, last) byte of a single `Range: bytes=...` header; None: the whole file
    (no header, several ranges, or one that does not parse); "unsatisfiable"."""
    unit, _, spec = header.partition("=")
    first, dash, last = spec.strip().partition("-")
    digits = all(part.isdigit() for part in (first, last) if part)
    if unit.strip().lower() != "bytes" or not dash or not digits or not (first or last):
        return None
    if not first:  # the last N bytes
        n = int(last)
        return (max(0, size - n), size - 1) if n and size else "unsatisfiable"
    lo, hi = int(first), int(last) if last else size - 1
    if lo >= size or hi < lo:
        return "unsatisfiable"
    return lo, min(hi, size - 1)


def serve(
    settings: Settings,
    host: str,
    port: int,
    certfile: str | None = None,
    keyfile: str | None = None,
) -> None:
    """Run the server in the foreground until interrupted."""
    import uvicorn

    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
        log_level="warning",
        access_log=False,  # ours has the facts; uvicorn's would print signed URLs
    )


@contextlib.contextmanager
def background(settings: Settings, host: str, port: int) -> Iterator[str]:
    """The server in a thread of this process (tests, benchmarks); yields its endpoint."""
    import uvicorn

    config = uvicorn.Config(
        create_app(settings), host=host, port=port, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="share-server", daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError(f"the sharing server did not start on {host}:{port}")
            thread.join(0.05)
        yield f"http://{host}:{port}{PREFIX}"
    finally:
        server.should_exit = True
        thread.join(10)
