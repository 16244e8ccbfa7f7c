"""Topic declarations (`infra/topics.yaml`) and their idempotent application."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import yaml
from kafka.admin import NewPartitions, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from visitshare.producing import kafka
from visitshare.settings import Settings

DLQ_SUFFIX = ".dlq"

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    retention_ms: int
    description: str = ""
    # Per-topic overrides of the settings' topic_replication_factor / topic_min_insync_replicas;
    # None: the setting. (No cleanup.policy: landing expects contiguous offsets, and a
    # compacted topic has holes it would record as gaps.)
    replication_factor: int | None = None
    min_insync_replicas: int | None = None


class TopicAction(StrEnum):
    CREATED = "created"
    EXISTS = "exists"
    GREW = "partitions added"
    DRIFT = "drift"  # exists with a layout we cannot fix (fewer partitions declared than present)
    FAILED = "failed"


@dataclass(frozen=True)
class TopicResult:
    spec: TopicSpec
    topic: str  # physical name (with the settings' prefix)
    action: TopicAction
    partitions: int
    detail: str = ""


def parse_retention(value: str | int) -> int:
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*(\d+)\s*(ms|s|m|h|d)\s*", str(value))
    if not m:
        raise ValueError(f"retention {value!r}: use a number with a unit (ms, s, m, h, d)")
    return int(m.group(1)) * _UNITS_MS[m.group(2)]


def _optional_int(t: dict, key: str) -> int | None:
    value = t.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"topic {t.get('name')!r}: {key} must be a whole number >= 1")
    return value


def load_topics(path: Path) -> list[TopicSpec]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        specs = [
            TopicSpec(
                name=t["name"],
                partitions=int(t["partitions"]),
                retention_ms=parse_retention(t["retention"]),
                description=t.get("description", ""),
                replication_factor=_optional_int(t, "replication_factor"),
                min_insync_replicas=_optional_int(t, "min_insync_replicas"),
            )
            for t in raw["topics"]
        ]
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: invalid topic declarations: {exc}") from None
    if any(s.partitions < 1 for s in specs):
        raise ValueError(f"{path}: every topic needs at least one partition")
    for spec in specs:
        rf, isr = spec.replication_factor, spec.min_insync_replicas
        if rf is not None and isr is not None and isr > rf:
            raise ValueError(
                f"{path}: topic {spec.name!r}: min_insync_replicas {isr} exceeds "
                f"replication_factor {rf}"
            )
    return specs


def topic_layout(settings: Settings, spec: TopicSpec) -> tuple[int, dict[str, str]]:
    """Replication factor and topic configs to create `spec` with (overrides, else settings).

    Only what is declared or set is sent: the embedded broker gets retention.ms alone.
    """
    rf = spec.replication_factor or settings.topic_replication_factor
    isr = spec.min_insync_replicas or settings.topic_min_insync_replicas
    if isr is not None and isr > rf:
        raise ValueError(
            f"topic {spec.name!r}: min.insync.replicas {isr} exceeds its replication factor "
            f"{rf} (infra/topics.yaml, VISITSHARE_TOPIC_MIN_INSYNC_REPLICAS, "
            "VISITSHARE_TOPIC_REPLICATION_FACTOR)"
        )
    configs = {"retention.ms": str(spec.retention_ms)}
    if isr is not None:
        configs["min.insync.replicas"] = str(isr)
    return rf, configs


def new_topic(settings: Settings, spec: TopicSpec) -> NewTopic:
    """The NewTopic that creates `spec` under its physical name."""
    rf, configs = topic_layout(settings, spec)
    return NewTopic(settings.topic(spec.name), spec.partitions, rf, topic_configs=configs)


def declared_topics(settings: Settings) -> list[TopicSpec]:
    """The declared topics, checked against the settings' replication (clear error if not)."""
    path = settings.infra_dir / "topics.yaml"
    specs = load_topics(path)
    for spec in specs:
        try:
            topic_layout(settings, spec)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    return specs


def partition_counts(admin, topics: list[str]) -> dict[str, int]:
    """Partition count per existing topic (topics that do not exist are absent)."""
    existing = set(admin.list_topics())
    wanted = [t for t in topics if t in existing]
    if not wanted:
        return {}
    return {d["name"]: len(d["partitions"]) for d in admin.describe_topics(wanted)}


def apply_topics(settings: Settings, specs: list[TopicSpec] | None = None) -> list[TopicResult]:
    """Create missing topics and grow partition counts; never delete or shrink."""
    specs = specs if specs is not None else declared_topics(settings)
    admin = kafka.admin(settings)
    try:
        current = partition_counts(admin, [settings.topic(s.name) for s in specs])
        results = []
        for spec in specs:
            results.append(
                _apply_one(admin, settings, spec, current.get(settings.topic(spec.name)))
            )
        return results
    finally:
        admin.close()


def _apply_one(admin, settings: Settings, spec: TopicSpec, present: int | None) -> TopicResult:
    name = settings.topic(spec.name)
    if present is None:
        try:
            topic = new_topic(settings, spec)
        except ValueError as exc:
            return TopicResult(spec, name, TopicAction.FAILED, 0, str(exc))
        try:
            admin.create_topics([topic])
        except TopicAlreadyExistsError:  # created concurrently: fine, that is the goal
            return TopicResult(spec, name, TopicAction.EXISTS, spec.partitions)
        except KafkaError as exc:
            return TopicResult(spec, name, TopicAction.FAILED, 0, f"create failed: {exc}")
        return TopicResult(spec, name, TopicAction.CREATED, spec.partitions)
    if present == spec.partitions:
        return TopicResult(spec, name, TopicAction.EXISTS, present)
    if present > spec.partitions:
        return TopicResult(
            spec,
            name,
            TopicAction.DRIFT,
            present,
            f"has {present} partitions, {spec.partitions} declared (Kafka cannot shrink a topic)",
        )
    try:
        admin.create_partitions({name: NewPartitions(spec.partitions)})
    except KafkaError as exc:
        return TopicResult(
            spec,
            name,
            TopicAction.FAILED,
            present,
            f"has {present} partitions, {spec.partitions} declared; adding failed: {exc}",
        )
    return TopicResult(spec, name, TopicAction.GREW, spec.partitions)


def dlq_topic(topic: str) -> str:
    """The dead-letter topic of a topic: where its invalid events go, with the reason."""
    return topic + DLQ_SUFFIX


def is_dlq(topic: str) -> bool:
    return topic.endswith(DLQ_SUFFIX)


def dataset_topics(settings: Settings, contract) -> list[str]:
    """A contract's topic and its DLQ (physical names): what landing and validation take."""
    topic = settings.topic(contract.topic)
    return [topic, dlq_topic(topic)]


def event_topics(settings: Settings) -> list[str]:
    """Every contract's topic and DLQ: the raw files validation takes."""
    from visitshare.contracts import ContractRegistry

    return [
        t
        for c in ContractRegistry.load(settings.contracts_dir)
        for t in dataset_topics(settings, c)
    ]
