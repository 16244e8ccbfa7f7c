"""The one settings object. Every resource choice (embedded or production) is made here.

Values come from `VISITSHARE_*` environment variables. Nothing else in the project reads the
environment: code receives a `Settings` instance and asks it.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

from pydantic import AwareDatetime, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from visitshare.clock import SYSTEM_CLOCK, Clock, FixedClock

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VISITSHARE_", extra="ignore", frozen=True)

    # Where local state lives: broker PID/log, databases, lake, reports, benchmark results.
    home: Path = Path("var")

    # Kafka. Unset: the embedded Tansu broker on broker_host:broker_port, started by us.
    # Set (e.g. "kafka-1:9092,kafka-2:9092"): that cluster, and no embedded broker is started.
    kafka_bootstrap: str | None = None
    broker_host: str = "127.0.0.1"
    broker_port: int = Field(19092, ge=1, le=65535)
    # How clients talk to an external cluster (the embedded broker speaks PLAINTEXT only).
    # SASL_*: a mechanism, a username and a password (or a file holding it) are required.
    # SSL / SASL_SSL: the cluster's CA (unset: the system's trust store), and for mutual TLS
    # a client certificate (the key in `kafka_ssl_keyfile`, or in the certificate file).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_sasl_password_file: Path | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    kafka_ssl_key_password: SecretStr | None = None
    kafka_ssl_check_hostname: bool = True
    kafka_client_id: str = "visit-share"
    # How long a client tries to reach the cluster before we call it unreachable.
    kafka_connect_timeout_ms: int = Field(5000, ge=100)
    # Prepended to every topic name (isolates environments or test runs on one cluster).
    topic_prefix: str = ""
    # Layout of topics created by `topics apply` (infra/topics.yaml may override both per
    # topic). min.insync.replicas unset: the cluster's default (on a cluster: 2 with RF 3).
    topic_replication_factor: int = Field(1, ge=1)
    topic_min_insync_replicas: int | None = Field(None, ge=1)

    # Producer path.
    source_system: str = "mpd-home-visit"
    compression: Literal["zstd", "gzip", "none"] = "zstd"
    producer_linger_ms: int = Field(10, ge=0)
    producer_batch_bytes: int = Field(262_144, ge=1024)
    # How long a send may stay unconfirmed before the event goes to the outbox.
    delivery_timeout_ms: int = Field(30_000, ge=1000)
    request_timeout_ms: int = Field(10_000, ge=500)
    max_event_bytes: int = Field(65_536, ge=1024)
    # Timestamps later than now + this are rejected as "in the future".
    future_tolerance_seconds: int = Field(300, ge=0)

    # Landing (Kafka → raw Parquet). A file closes at whichever limit comes first.
    land_roll_rows: int = Field(100_000, ge=1)
    land_roll_bytes: int = Field(8 * 2**20, ge=1024)
    land_roll_seconds: float = Field(30.0, gt=0)
    # All open files together may hold this much before the largest is closed early.
    land_max_buffer_bytes: int = Field(48 * 2**20, ge=1024)
    # A drain that receives nothing for this long while behind the high watermark gives up.
    land_idle_timeout_seconds: float = Field(30.0, gt=0)
    # How often a following lander looks for new topics, partitions and topic incarnations.
    land_metadata_refresh_seconds: float = Field(10.0, gt=0)
    # Landing processes, each with its own share of the partitions.
    land_workers: int = Field(2, ge=1, le=64)
    # Consumer group that mirrors landed offsets for monitoring tools ("" = no mirroring).
    land_group_id: str = "visit-share-landing"

    # Which stack: "embedded" (SQLite, the lake on local disk, LocalExecutor; `make run`) or
    # "cluster" (`make run-cluster`): PostgreSQL for every database, the lake and the Iceberg
    # warehouse on S3-compatible object storage, Airflow's CeleryExecutor with Redis.
    # Explicit settings below (database_url, lake_url, ...) win over the profile's defaults.
    profile: Literal["embedded", "cluster"] = "embedded"

    # Stores. Unset: SQLite files under `home` (embedded) or PostgreSQL databases (cluster).
    database_url: str | None = None
    lake_dir: Path | None = None
    # The lake on object storage ("s3://bucket/prefix"); unset: `lake_dir` on local disk
    # (embedded) or s3://visitshare/lake on the local SeaweedFS (cluster).
    lake_url: str | None = None
    # S3-compatible object storage: endpoint (unset: AWS), region, credentials (or a file
    # holding "access key id" and "secret access key" on two lines).
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_credentials_file: Path | None = None

    # The cluster profile on one machine: the PostgreSQL server (each database of ours is
    # created in it: `<pg_database_prefix>` for the project, `_airflow` for Airflow's metadata),
    # Redis (the Celery broker, a database number of our own) and SeaweedFS (`weed mini`,
    # started by `make up-cluster`, bound to 127.0.0.1 with its telemetry off).
    pg_server_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432"
    pg_database_prefix: str = "visitshare"
    redis_url: str = "redis://127.0.0.1:6379/7"
    celery_workers: int = Field(2, ge=1, le=16)
    # This process's Celery worker name (the stack sets it for each worker it starts): task
    # instances report it as their hostname, so two workers on one machine tell apart.
    worker_name: str | None = None
    seaweed_s3_port: int = Field(18333, ge=1, le=65535)
    seaweed_iceberg_port: int = Field(18181, ge=1, le=65535)
    seaweed_master_port: int = Field(19333, ge=1, le=65535)
    seaweed_filer_port: int = Field(18888, ge=1, le=65535)
    seaweed_volume_port: int = Field(19340, ge=1, le=65535)

    # Lineage (OpenLineage events from every Airflow task): "file" writes them under
    # `<home>/lineage/` (where auditors find them), "http" posts them to `lineage_url`
    # (Marquez or any OpenLineage backend), "none" turns them off.
    lineage_transport: Literal["file", "http", "none"] = "file"
    lineage_url: str | None = None
    contracts_dir: Path = REPO_ROOT / "schemas"
    expectations_dir: Path = REPO_ROOT / "expectations"
    # Validation reads the raw zone in batches of about this many rows (bounded memory).
    quality_batch_rows: int = Field(100_000, ge=1000)
    # Processes validating batches side by side (GX itself runs on one core).
    quality_workers: int = Field(2, ge=1, le=32)
    infra_dir: Path = REPO_ROOT / "infra"

    # Releases (anonymize, join, publish). "production" refuses to run without a pseudonym key;
    # "embedded" generates one under var/secrets once, with a warning.
    environment: Literal["embedded", "production"] = "embedded"
    # The pseudonym key (HMAC-SHA-256), from the environment or a secrets file (raw bytes or
    # text, at least 32 bytes). Changing it changes every pseudonym: `publish --new-key` only.
    pseudonym_key: SecretStr | None = None
    pseudonym_key_file: Path | None = None
    # Iceberg SQL catalog (SQLAlchemy URL). Unset: SQLite file var/catalog.db.
    catalog_url: str | None = None
    # Old releases stay readable (time travel) this long; the latest is always kept.
    release_retention_days: int = Field(90, ge=1)
    # Processes building a release's shards side by side.
    publish_workers: int = Field(2, ge=1, le=32)
    # Below this many rows to recompute, shards are built in the publishing process itself:
    # starting workers (each importing pyarrow, DuckDB, OpenDP) costs more than it saves.
    publish_in_process_rows: int = Field(200_000, ge=0)
    partners_file: Path = REPO_ROOT / "infra" / "partners.yaml"
    # Maintenance (`visitshare maintain`, the maintain_tables DAG): a partition with at least
    # this many files smaller than the size below is compacted (validated zone) or rewritten
    # (shared Iceberg tables) into one file; larger files are left as they are.
    maintain_min_files: int = Field(2, ge=2)
    maintain_small_file_bytes: int = Field(64 * 2**20, ge=1024)

    # The Delta Sharing server (`visitshare share serve`): where it listens, and the address
    # partners reach it at (written into their profile files; file URLs are built on it).
    # Unset: http://share_host:share_port/delta-sharing (https with a certificate).
    share_host: str = "127.0.0.1"
    share_port: int = Field(8765, ge=1, le=65535)
    share_public_url: str | None = None
    # How long a pre-signed file URL stays valid, and the longest a bearer token may live.
    share_url_ttl_seconds: int = Field(900, ge=10, le=86_400)
    share_token_max_days: int = Field(365, ge=1, le=3650)
    # The key that signs file URLs (HMAC-SHA-256, at least 32 bytes), from the environment or
    # a secrets file; production refuses to serve without one, the embedded default makes one
    # under var/secrets. Changing it invalidates every outstanding file URL (tokens stay).
    share_url_key: SecretStr | None = None
    share_url_key_file: Path | None = None

    # Airflow's API server on loopback (`visitshare up`, `make run`).
    airflow_api_port: int = Field(8080, ge=1, le=65535)

    # "Now" frozen at this instant (ISO 8601 with offset) instead of the system clock: tests,
    # and replays of a past day. Every component asks `settings.clock`, never the wall clock.
    now: AwareDatetime | None = None

    @model_validator(mode="before")
    @classmethod
    def _cluster_ports(cls, data: object) -> object:
        """The cluster profile listens on ports of its own by default, so that it and the
        embedded stack can run side by side without one's client reaching the other's server."""
        if isinstance(data, dict) and data.get("profile") == "cluster":
            for field, port in CLUSTER_PORTS.items():
                data.setdefault(field, port)
        return data

    @model_validator(mode="after")
    def _settings_fit_together(self) -> Settings:
        problems = kafka_problems(self) + storage_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def clock(self) -> Clock:
        return SYSTEM_CLOCK if self.now is None else FixedClock(self.now)

    @property
    def embedded_broker(self) -> bool:
        """True when we run the broker ourselves (no external bootstrap configured)."""
        return not self.kafka_bootstrap

    @property
    def bootstrap(self) -> str:
        return self.kafka_bootstrap or f"{self.broker_host}:{self.broker_port}"

    @property
    def var(self) -> Path:
        """Local state; the cluster profile keeps its own (PID files, logs, Airflow's home,
        SeaweedFS's data) under `<home>/cluster`, apart from the embedded stack's."""
        root = self.home.resolve()
        return root / "cluster" if self.profile == "cluster" else root

    @property
    def broker_dir(self) -> Path:
        return self.var / "broker"

    @property
    def outbox_path(self) -> Path:
        return self.var / "outbox.db"

    @property
    def bench_dir(self) -> Path:
        return self.var / "bench"

    @property
    def lake(self) -> Path:
        return _resolved(self.lake_dir or self.var / "lake")

    @property
    def lake_uri(self) -> str | None:
        """The lake on object storage ("s3://bucket/prefix", no trailing slash), or None when
        it is the local directory `lake`."""
        if self.lake_url:
            return self.lake_url.rstrip("/")
        if self.profile == "cluster" and self.lake_dir is None:
            return "s3://visitshare/lake"
        return None

    @property
    def s3_endpoint(self) -> str | None:
        """The S3 endpoint: the setting, else the local SeaweedFS in the cluster profile."""
        if self.s3_endpoint_url:
            return self.s3_endpoint_url
        if self.profile == "cluster":
            return f"http://127.0.0.1:{self.seaweed_s3_port}"
        return None

    @property
    def s3_credentials_path(self) -> Path | None:
        """Where the S3 credentials are read from: the setting, else (cluster profile) the
        file `make up-cluster` writes for the local SeaweedFS."""
        if self.s3_credentials_file is not None:
            return self.s3_credentials_file
        if self.profile == "cluster":
            return self.secrets_dir / "s3-credentials"
        return None

    def s3_credentials(self) -> tuple[str, str] | None:
        """(access key id, secret access key), or None (the SDK's own chain: IAM role, env)."""
        if self.s3_access_key_id and self.s3_secret_access_key is not None:
            return self.s3_access_key_id, self.s3_secret_access_key.get_secret_value()
        path = self.s3_credentials_path
        if path is not None and path.is_file():
            lines = path.read_text().split()
            if len(lines) >= 2:
                return lines[0], lines[1]
        return None

    def pg_database_url(self, suffix: str = "") -> str:
        """The URL of one of our databases on the cluster profile's PostgreSQL server."""
        return f"{self.pg_server_url.rstrip('/')}/{self.pg_database_prefix}{suffix}"

    @property
    def reports_dir(self) -> Path:
        return self.var / "reports"

    @property
    def gx_dir(self) -> Path:
        return self.var / "gx"

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        if self.profile == "cluster":
            return self.pg_database_url()
        return f"sqlite:///{self.var / 'visitshare.db'}"

    @property
    def catalog_uri(self) -> str:
        if self.catalog_url:
            return self.catalog_url
        if self.profile == "cluster":
            return self.pg_database_url()
        return f"sqlite:///{self.var / 'catalog.db'}"

    @property
    def secrets_dir(self) -> Path:
        return self.var / "secrets"

    def topic(self, name: str) -> str:
        """The physical topic name for a declared topic."""
        return f"{self.topic_prefix}{name}"


# The cluster profile's default ports (the embedded stack's defaults are the fields').
CLUSTER_PORTS = {"broker_port": 19093, "airflow_api_port": 8090, "share_port": 8766}


def _var(field: str) -> str:
    return f"VISITSHARE_{field.upper()}"


def kafka_problems(s: Settings) -> list[str]:
    """What is wrong with the Kafka client settings together, each naming its variables."""
    problems = []
    protocol = s.kafka_security_protocol
    sasl = protocol.startswith("SASL_")
    tls = protocol.endswith("SSL")
    if protocol != "PLAINTEXT" and s.embedded_broker:
        problems.append(
            f"{_var('kafka_security_protocol')}={protocol} needs an external cluster "
            f"({_var('kafka_bootstrap')}): the embedded broker speaks PLAINTEXT only"
        )
    sasl_fields = ("kafka_sasl_mechanism", "kafka_sasl_username")
    if sasl:
        for field in sasl_fields:
            if not getattr(s, field):
                problems.append(f"{_var(field)} is required with {protocol}")
        if s.kafka_sasl_password is None and s.kafka_sasl_password_file is None:
            problems.append(
                f"{_var('kafka_sasl_password')} or {_var('kafka_sasl_password_file')} "
                f"is required with {protocol}"
            )
    else:
        for field in (*sasl_fields, "kafka_sasl_password", "kafka_sasl_password_file"):
            if getattr(s, field) is not None:
                problems.append(f"{_var(field)} is set but {protocol} does not use SASL")
    if s.kafka_sasl_password is not None and s.kafka_sasl_password_file is not None:
        problems.append(
            f"set {_var('kafka_sasl_password')} or {_var('kafka_sasl_password_file')}, not both"
        )
    tls_files = ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile")
    for field in (*tls_files, "kafka_ssl_key_password"):
        if not tls and getattr(s, field) is not None:
            problems.append(f"{_var(field)} is set but {protocol} does not use TLS")
    if not tls and not s.kafka_ssl_check_hostname:
        problems.append(
            f"{_var('kafka_ssl_check_hostname')} is set but {protocol} does not use TLS"
        )
    for field in (*tls_files, "kafka_sasl_password_file"):
        path = getattr(s, field)
        if path is not None and not path.is_file():
            problems.append(f"{_var(field)}: no such file {path}")
    if s.kafka_ssl_keyfile is not None and s.kafka_ssl_certfile is None:
        problems.append(
            f"{_var('kafka_ssl_keyfile')} needs {_var('kafka_ssl_certfile')} (the certificate)"
        )
    if s.kafka_ssl_key_password is not None and s.kafka_ssl_certfile is None:
        problems.append(
            f"{_var('kafka_ssl_key_password')} needs {_var('kafka_ssl_certfile')} (the certificate)"
        )
    min_isr = s.topic_min_insync_replicas
    if min_isr is not None and min_isr > s.topic_replication_factor:
        problems.append(
            f"{_var('topic_min_insync_replicas')}={min_isr} exceeds "
            f"{_var('topic_replication_factor')}={s.topic_replication_factor}: "
            "no write with acks=all could ever succeed"
        )
    return problems


def storage_problems(s: Settings) -> list[str]:
    """What is wrong with the object-storage settings together, each naming its variables."""
    problems = []
    if s.s3_credentials_file is not None and not s.s3_credentials_file.is_file():
        problems.append(f"{_var('s3_credentials_file')}: no such file {s.s3_credentials_file}")
    if (s.s3_access_key_id is None) != (s.s3_secret_access_key is None):
        problems.append(
            f"set both {_var('s3_access_key_id')} and {_var('s3_secret_access_key')}, or neither"
        )
    if s.lineage_transport == "http" and not s.lineage_url:
        problems.append(f"{_var('lineage_transport')}=http needs {_var('lineage_url')}")
    if s.lake_url is not None and not s.lake_url.startswith("s3://"):
        problems.append(f"{_var('lake_url')}={s.lake_url}: only s3://bucket/prefix is supported")
    return problems


@functools.lru_cache(maxsize=256)
def _resolved(path: Path) -> Path:
    """`path.resolve()`, once per path (the lake's path is asked for per file)."""
    return path.resolve()
