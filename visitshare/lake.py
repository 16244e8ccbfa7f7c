"""The lake's filesystem: local disk (embedded) or S3-compatible object storage (cluster).

Every zone (raw, validated, quarantine, state, staging, shared) is read and written through
this module, chosen by the settings (`VISITSHARE_LAKE_URL=s3://bucket/prefix`, else the local
directory `settings.lake`). Callers name files by their path relative to the lake root (what
manifests record, `visitshare.landing.zones`); `Lake` maps them onto pyarrow's filesystem, so
one code path serves both.

A file is never half-visible:
- on local disk it is written under a temporary name, fsynced and linked into place
  (`visitshare.landing.files.write_file`);
- on object storage there is no rename: the object is written to its final key, whole. The
  bytes are encoded in memory first and handed to the upload in one call, so an upload either
  completes with all of them (one PUT, or a multipart upload that becomes visible only when
  completed) or fails and completes nothing; a failure before the upload (encoding) uploads
  nothing at all. A file counts once its manifest or database row commits: a crash before
  that leaves an orphan object, which the orphan cleanups find by listing (`list`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from visitshare.landing import files
from visitshare.settings import Settings

if TYPE_CHECKING:
    import pyarrow.dataset

Rel = str | PurePosixPath  # a path relative to the lake root, '/'-separated


def s3_filesystem(settings: Settings) -> pafs.S3FileSystem:
    """pyarrow's S3 filesystem for the settings' endpoint, region and credentials."""
    creds = settings.s3_credentials()
    kwargs: dict = {"region": settings.s3_region}
    if creds is not None:
        kwargs["access_key"], kwargs["secret_key"] = creds
    endpoint = settings.s3_endpoint
    if endpoint:
        kwargs["endpoint_override"] = endpoint
        kwargs["scheme"] = "https" if endpoint.startswith("https://") else "http"
    return pafs.S3FileSystem(**kwargs)


def iceberg_properties(settings: Settings) -> dict[str, str]:
    """pyiceberg's FileIO properties for the lake's object storage (none for local disk)."""
    if settings.lake_uri is None:
        return {}
    props = {"s3.region": settings.s3_region}
    if settings.s3_endpoint:
        props["s3.endpoint"] = settings.s3_endpoint
    creds = settings.s3_credentials()
    if creds is not None:
        props["s3.access-key-id"], props["s3.secret-access-key"] = creds
    return props


@dataclass(frozen=True)
class Entry:
    """A file in the lake: its relative path, size and modification time (Unix seconds, the
    storage's clock)."""

    path: str
    size: int
    mtime: float


class Lake:
    """The lake's files by relative path, on a pyarrow filesystem under a root."""

    def __init__(self, fs: pafs.FileSystem, root: str):
        self.fs = fs
        # the lake root as the filesystem names it: /abs/dir (local), bucket/prefix (S3)
        self.root = root.rstrip("/")
        self.is_local = isinstance(fs, pafs.LocalFileSystem)

    # -- names --------------------------------------------------------------------------------
    def _path(self, rel: Rel) -> str:
        """The filesystem path of `rel`; a path leaving the lake is refused."""
        rel = posixpath.normpath(str(rel)) if str(rel) else "."
        if rel.startswith(("/", "../")) or rel == "..":
            raise ValueError(f"{rel!r} is not a path inside the lake")
        return self.root if rel == "." else f"{self.root}/{rel}"

    def uri(self, rel: Rel = "") -> str:
        """`rel` as a URI (file:// or s3://): for logs, and where pyiceberg wants a location."""
        if self.is_local:
            return Path(self._path(rel)).as_uri()
        return f"s3://{self._path(rel)}"

    def relative(self, location: str) -> str:
        """A location (s3:// or file:// URI, or a plain path, as Iceberg metadata holds them)
        as a path relative to the lake root; ValueError if it is outside the lake."""
        if "://" in location:
            url = urlparse(location)
            if url.scheme != ("file" if self.is_local else "s3"):
                raise ValueError(f"{location}: not a location of this lake")
            # file:// URIs are percent-encoded (Path.as_uri); an s3:// one holds the key as is
            path = unquote(url.path) if self.is_local else f"{url.netloc}{url.path}"
        else:
            path = location
        if self.is_local and not path.startswith(self.root + "/"):
            path = os.path.realpath(path)  # through a symbolic link, say
        if not path.startswith(self.root + "/"):
            raise ValueError(f"{location} is not under the lake at {self.uri()}")
        return path[len(self.root) + 1 :]

    def local_path(self, rel: Rel) -> Path:
        """The file on local disk (only a local lake has one)."""
        if not self.is_local:
            raise ValueError(f"the lake at {self.uri()} is not on local disk")
        return Path(self._path(rel))

    # -- reading ------------------------------------------------------------------------------
    def read_table(self, rel: Rel, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self._path(rel), columns=columns, filesystem=self.fs)

    def read_schema(self, rel: Rel) -> pa.Schema:
        with self.fs.open_input_file(self._path(rel)) as f:
            return pq.read_schema(f)

    def read_bytes(self, rel: Rel) -> bytes:
        with self.fs.open_input_stream(self._path(rel)) as f:
            return f.read()

    def open_input(self, rel: Rel) -> pa.NativeFile:
        """The file for random access (`read_at`, `size`): ranges without reading it all."""
        return self.fs.open_input_file(self._path(rel))

    def dataset(self, rels: list[str], schema: pa.Schema) -> pyarrow.dataset.Dataset:
        """Parquet files as one dataset with `schema` (a column a file lacks reads as null);
        read lazily, in parallel, in this order."""
        import pyarrow.dataset as ds  # imports pandas: not where landing can see it

        paths = [self._path(r) for r in rels]
        return ds.dataset(paths, schema=schema, format="parquet", filesystem=self.fs)

    def stat(self, rel: Rel) -> Entry | None:
        """The file's size and modification time; None if there is no such file."""
        info = self.fs.get_file_info(self._path(rel))
        if info.type != pafs.FileType.File:
            return None
        return Entry(PurePosixPath(rel).as_posix(), info.size, _seconds(info))

    def exists(self, rel: Rel) -> bool:
        return self.stat(rel) is not None

    def list(self, prefix: Rel, recursive: bool = True) -> list[Entry]:
        """The files under `prefix` (none if there is no such folder), sorted by path."""
        selector = pafs.FileSelector(self._path(prefix), allow_not_found=True, recursive=recursive)
        start = len(self.root) + 1
        return sorted(
            (
                Entry(info.path[start:], info.size, _seconds(info))
                for info in self.fs.get_file_info(selector)
                if info.type == pafs.FileType.File
            ),
            key=lambda e: e.path,
        )

    # -- writing ------------------------------------------------------------------------------
    def write_parquet(
        self,
        table: pa.Table,
        rel: Rel,
        metadata: dict[str, str] | None = None,
        replace: Callable[[str], bool] | None = None,
    ) -> tuple[int, str]:
        """Encode the table (`files.encode_parquet`) and write it (`write_bytes`)."""
        return self.write_bytes(files.encode_parquet(table, metadata), rel, replace)

    def write_bytes(
        self, data: bytes | pa.Buffer, rel: Rel, replace: Callable[[str], bool] | None = None
    ) -> tuple[int, str]:
        """Write a whole file, never half-visible (see the module's docstring).

        A file already there is replaced, unless `replace(rel)` says it is someone else's
        (False: FileExistsError). On object storage that check and the write are two requests
        (S3 has no create-if-absent here): callers that race for a name (landing) are kept
        apart by their manifest. Returns (bytes, sha256).
        """
        rel = PurePosixPath(rel).as_posix()
        if self.is_local:
            mine = (lambda _: replace(rel)) if replace is not None else (lambda _: True)
            return files.write_file(data, self.local_path(rel), mine)
        if replace is not None and self.exists(rel) and not replace(rel):
            raise FileExistsError(f"{self.uri(rel)} exists")
        digest = hashlib.sha256(data).hexdigest()
        with self.fs.open_output_stream(self._path(rel)) as out:
            out.write(data)  # all of it in one call: the object completes whole, or not at all
        return len(data), digest

    def touch(self, rel: Rel) -> None:
        """Make the file's modification time now. Object storage cannot change an object's
        time: the object is written again with its own bytes (small files only)."""
        if self.is_local:
            os.utime(self.local_path(rel))
        else:
            self.write_bytes(self.read_bytes(rel), rel)

    def remove(self, rel: Rel) -> None:
        """Delete a file, if it is there (on local disk, its folder is fsynced: the removal
        survives a crash)."""
        if self.is_local:
            files.remove(self.local_path(rel))
            return
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_file(self._path(rel))

    def remove_tree(self, prefix: Rel) -> None:
        """Delete a folder and everything under it (nothing if there is none)."""
        path = self._path(prefix)
        if path == self.root:
            raise ValueError("refusing to delete the whole lake")
        if self.fs.get_file_info(path).type == pafs.FileType.NotFound:
            return
        self.fs.delete_dir(path)


def _seconds(info: pafs.FileInfo) -> float:
    mtime = info.mtime
    return mtime.timestamp() if mtime is not None else time.time()


def lake_for(settings: Settings) -> Lake:
    """The settings' lake (one per process and location: an S3 client is costly to create)."""
    uri = settings.lake_uri
    if uri is None:
        key: tuple = (str(settings.lake),)
    else:
        key = (uri, settings.s3_endpoint, settings.s3_region, settings.s3_credentials())
    lake = _LAKES.get(key)
    if lake is None:
        if uri is None:
            lake = Lake(pafs.LocalFileSystem(), str(settings.lake))
        else:
            lake = Lake(s3_filesystem(settings), uri.removeprefix("s3://"))
        _LAKES[key] = lake
    return lake


_LAKES: dict[tuple, Lake] = {}
