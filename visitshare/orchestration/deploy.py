"""Strimzi manifests rendered from the topic declarations (`visitshare deploy render`).

`infra/topics.yaml` is the one list of topics. On a Kubernetes cluster with the Strimzi operator
the topics are `KafkaTopic` resources, so they are rendered from that list, never written by
hand: `infra/deploy/strimzi/topics.yaml` (one `KafkaTopic` per declared topic) and
`infra/deploy/strimzi/kafka.yaml` (the cluster: a KRaft node pool, a `Kafka` with a TLS
listener that authenticates with SCRAM-SHA-512, and the `KafkaUser` visit-share connects as).
The rendered files are committed; a unit test renders them again and compares, so they cannot
drift from the declarations.

Rendering is pure: the same declarations and settings give the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from visitshare.producing.topics import TopicSpec, declared_topics
from visitshare.settings import Settings

STRIMZI_API = "kafka.strimzi.io/v1beta2"
CLUSTER = "visit-share"
KAFKA_USER = "visit-share"
# Where the cluster's clients connect: the internal TLS listener with SCRAM-SHA-512.
LISTENER_PORT = 9093
# A cluster deployment keeps three copies of every record and acknowledges a write (acks=all)
# once two of them have it: one broker can be down without refusing writes or losing data.
CLUSTER_REPLICAS = 3
MIN_INSYNC_REPLICAS = 2
BROKER_NODES = 3

HEADER = (
    "# Rendered by `visitshare deploy render` from infra/topics.yaml: do not edit by hand.\n"
    "# Change the declarations, render again and commit both (a unit test compares them).\n"
)


def topic_resource_name(physical: str) -> str:
    """A Kubernetes resource name for a topic: dots are allowed, upper case and `_` are not."""
    return physical.lower().replace("_", "-")


def kafka_topic(spec: TopicSpec, settings: Settings, replicas: int) -> dict[str, Any]:
    physical = settings.topic(spec.name)
    return {
        "apiVersion": STRIMZI_API,
        "kind": "KafkaTopic",
        "metadata": {
            "name": topic_resource_name(physical),
            "labels": {"strimzi.io/cluster": CLUSTER},
            "annotations": {"visit-share/description": spec.description},
        },
        "spec": {
            # Set explicitly: the resource name is not always the topic name.
            "topicName": physical,
            "partitions": spec.partitions,
            "replicas": replicas,
            "config": {
                "retention.ms": spec.retention_ms,
                "cleanup.policy": "delete",
                "min.insync.replicas": min(MIN_INSYNC_REPLICAS, replicas),
            },
        },
    }


def topic_manifests(settings: Settings, replicas: int | None = None) -> list[dict[str, Any]]:
    """One `KafkaTopic` per declared topic, in declaration order."""
    n = replicas if replicas is not None else _replicas(settings)
    return [kafka_topic(spec, settings, n) for spec in declared_topics(settings)]


def _replicas(settings: Settings) -> int:
    # The embedded default (1) suits one Tansu broker, not a cluster: a cluster gets 3 unless
    # VISITSHARE_TOPIC_REPLICATION_FACTOR asks for more.
    return max(settings.topic_replication_factor, CLUSTER_REPLICAS)


def cluster_manifests(settings: Settings) -> list[dict[str, Any]]:
    """The node pool, the `Kafka` cluster (KRaft) and the client user with its ACLs."""
    replicas = _replicas(settings)
    prefix = settings.topic_prefix
    pool = {
        "apiVersion": STRIMZI_API,
        "kind": "KafkaNodePool",
        "metadata": {"name": "dual-role", "labels": {"strimzi.io/cluster": CLUSTER}},
        "spec": {
            "replicas": BROKER_NODES,
            "roles": ["controller", "broker"],
            "storage": {
                "type": "jbod",
                "volumes": [
                    {
                        "id": 0,
                        "type": "persistent-claim",
                        "size": "100Gi",
                        "deleteClaim": False,
                        "kraftMetadata": "shared",
                    }
                ],
            },
        },
    }
    kafka = {
        "apiVersion": STRIMZI_API,
        "kind": "Kafka",
        "metadata": {
            "name": CLUSTER,
            # Needed by Strimzi releases before 0.46; later ones run KRaft with node pools only.
            "annotations": {"strimzi.io/node-pools": "enabled", "strimzi.io/kraft": "enabled"},
        },
        "spec": {
            "kafka": {
                "listeners": [
                    {
                        "name": "tls",
                        "port": LISTENER_PORT,
                        "type": "internal",
                        "tls": True,
                        "authentication": {"type": "scram-sha-512"},
                    }
                ],
                "authorization": {"type": "simple"},
                "config": {
                    "default.replication.factor": replicas,
                    "min.insync.replicas": min(MIN_INSYNC_REPLICAS, replicas),
                    "offsets.topic.replication.factor": replicas,
                    "transaction.state.log.replication.factor": replicas,
                    "transaction.state.log.min.isr": min(MIN_INSYNC_REPLICAS, replicas),
                    # Topics exist only as KafkaTopic resources (or `visitshare topics apply`).
                    "auto.create.topics.enable": False,
                },
            },
            "entityOperator": {"topicOperator": {}, "userOperator": {}},
        },
    }
    topic_acl = {"type": "topic", "name": prefix or "*", "patternType": _pattern(prefix)}
    user = {
        "apiVersion": STRIMZI_API,
        "kind": "KafkaUser",
        "metadata": {"name": KAFKA_USER, "labels": {"strimzi.io/cluster": CLUSTER}},
        "spec": {
            # Strimzi writes the generated password into the Secret `visit-share` (key
            # `password`): VISITSHARE_KAFKA_SASL_PASSWORD comes from there.
            "authentication": {"type": "scram-sha-512"},
            "authorization": {
                "type": "simple",
                "acls": [
                    {"resource": topic_acl, "operations": ["Describe", "Read", "Write"]},
                    # `visitshare topics apply` creates and grows topics when no operator does.
                    {"resource": topic_acl, "operations": ["Create", "Alter", "DescribeConfigs"]},
                    {
                        "resource": {
                            "type": "group",
                            "name": settings.land_group_id or "visit-share",
                            "patternType": "prefix",
                        },
                        "operations": ["Describe", "Read"],
                    },
                    {"resource": {"type": "cluster"}, "operations": ["Describe"]},
                ],
            },
        },
    }
    return [pool, kafka, user]


def _pattern(prefix: str) -> str:
    return "prefix" if prefix else "literal"


def dump(docs: list[dict[str, Any]]) -> str:
    body = yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=True, explicit_start=True)
    return HEADER + body


def render(settings: Settings) -> dict[str, str]:
    """File name → content of every rendered manifest."""
    return {
        "kafka.yaml": dump(cluster_manifests(settings)),
        "topics.yaml": dump(topic_manifests(settings)),
    }


def write(settings: Settings, out: Path) -> list[Path]:
    """Render into `out`, writing only files whose content changed; returns the written ones."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render(settings).items():
        path = out / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written
