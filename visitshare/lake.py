"""The lake's filesystem: local disk (embedded) or S3-compatible object storage (cluster).

Every zone (raw, validated, quarantine, state, staging, shared) is read and written through
this module, chosen by the settings (`VISITSHARE_LAKE_URL=s3://bucket/prefix`, else the local
directory `settings.lake`).
"""

from __future__ import annotations

import pyarrow.fs as pafs

from visitshare.settings import Settings


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
