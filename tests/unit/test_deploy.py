"""The deployment files of infra/deploy/: they parse, the Strimzi manifests are a fresh render of
infra/topics.yaml, and every VISITSHARE_* name they use is a setting."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from visitshare.cli import app
from visitshare.orchestration import deploy
from visitshare.producing.topics import load_topics
from visitshare.settings import REPO_ROOT, Settings

DEPLOY = REPO_ROOT / "infra" / "deploy"
STRIMZI = DEPLOY / "strimzi"
HELM_VALUES = sorted((DEPLOY / "helm").glob("airflow-values-*.yaml"))
ENV_EXAMPLE = DEPLOY / "settings.env.example"
SETTING_NAMES = {f"VISITSHARE_{name.upper()}" for name in Settings.model_fields}
NAME = re.compile(r"\bVISITSHARE_[A-Z0-9_]+\b")


def committed_settings() -> Settings:
    """The settings the committed manifests are rendered with: the defaults, whatever the
    environment running the tests sets."""
    return Settings(
        topic_prefix="", topic_replication_factor=1, land_group_id="visit-share-landing"
    )


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def test_committed_manifests_equal_a_fresh_render():
    for name, text in deploy.render(committed_settings()).items():
        committed = (STRIMZI / name).read_text(encoding="utf-8")
        assert committed == text, f"{STRIMZI / name} is stale: run `visitshare deploy render`"


def test_kafka_topics_equal_the_declarations():
    declared = load_topics(REPO_ROOT / "infra" / "topics.yaml")
    topics = docs(STRIMZI / "topics.yaml")
    assert [t["kind"] for t in topics] == ["KafkaTopic"] * len(declared)
    assert {t["apiVersion"] for t in topics} == {"kafka.strimzi.io/v1beta2"}
    got = [
        (t["spec"]["topicName"], t["spec"]["partitions"], int(t["spec"]["config"]["retention.ms"]))
        for t in topics
    ]
    assert got == [(s.name, s.partitions, s.retention_ms) for s in declared]
    for t in topics:
        assert t["metadata"]["labels"]["strimzi.io/cluster"] == deploy.CLUSTER
        assert t["spec"]["replicas"] == 3
        assert t["spec"]["config"]["min.insync.replicas"] == 2
        assert t["spec"]["config"]["cleanup.policy"] == "delete"
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", t["metadata"]["name"])


def test_cluster_manifest_uses_tls_and_scram():
    by_kind = {d["kind"]: d for d in docs(STRIMZI / "kafka.yaml")}
    assert set(by_kind) == {"KafkaNodePool", "Kafka", "KafkaUser"}
    (listener,) = by_kind["Kafka"]["spec"]["kafka"]["listeners"]
    assert listener["tls"] is True
    assert listener["authentication"] == {"type": "scram-sha-512"}
    assert by_kind["KafkaUser"]["spec"]["authentication"] == {"type": "scram-sha-512"}
    assert by_kind["KafkaNodePool"]["metadata"]["labels"]["strimzi.io/cluster"] == "visit-share"


def test_render_follows_the_settings():
    settings = Settings(topic_prefix="staging.", topic_replication_factor=5)
    topics = deploy.topic_manifests(settings)
    assert topics[0]["spec"]["topicName"] == "staging.visits.outcomes.v1"
    assert {t["spec"]["replicas"] for t in topics} == {5}
    user = deploy.cluster_manifests(settings)[2]
    assert user["spec"]["authorization"]["acls"][0]["resource"] == {
        "type": "topic",
        "name": "staging.",
        "patternType": "prefix",
    }


def test_cli_renders_and_is_idempotent(tmp_path, monkeypatch):
    for var in ("VISITSHARE_TOPIC_PREFIX", "VISITSHARE_TOPIC_REPLICATION_FACTOR"):
        monkeypatch.delenv(var, raising=False)
    runner = CliRunner()
    first = runner.invoke(app, ["deploy", "render", "--out", str(tmp_path)])
    assert first.exit_code == 0, first.output
    assert {p.name for p in tmp_path.iterdir()} == {"kafka.yaml", "topics.yaml"}
    again = runner.invoke(app, ["deploy", "render", "--out", str(tmp_path)])
    assert again.exit_code == 0 and "up to date" in again.output


@pytest.mark.parametrize("path", HELM_VALUES, ids=lambda p: p.name)
def test_helm_values_parse_and_pick_their_executor(path):
    assert len(HELM_VALUES) == 2
    values = yaml.safe_load(path.read_text(encoding="utf-8"))
    executor = {"celery": "CeleryExecutor", "kubernetes": "KubernetesExecutor"}[
        path.stem.removeprefix("airflow-values-")
    ]
    assert values["executor"] == executor
    assert values["images"]["airflow"]["repository"]
    assert values["postgresql"]["enabled"] is False
    assert values["data"]["metadataSecretName"]
    assert values["redis"]["enabled"] is (executor == "CeleryExecutor")
    assert values["dagProcessor"]["enabled"] is True
    assert values["dags"]["gitSync"]["enabled"] is False
    assert {e["name"] for e in values["env"]} <= SETTING_NAMES
    assert "visit-share-settings" in values["extraEnvFrom"]


def env_example() -> dict[str, str]:
    pairs = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f"not NAME=value: {line!r}"
            pairs[name] = value
    return pairs


def test_env_example_names_only_settings_and_builds_them(monkeypatch):
    pairs = env_example()
    assert set(pairs) <= SETTING_NAMES, set(pairs) - SETTING_NAMES
    for name, value in pairs.items():
        monkeypatch.setenv(name, value)
    settings = Settings()  # every value is valid for its field
    assert settings.environment == "production"
    assert settings.kafka_security_protocol == "SASL_SSL"
    assert settings.kafka_sasl_mechanism == "SCRAM-SHA-512"
    assert settings.db_url.startswith("postgresql+psycopg://")
    assert settings.catalog_uri.startswith("postgresql+psycopg://")


@pytest.mark.parametrize(
    "path",
    [*HELM_VALUES, ENV_EXAMPLE, DEPLOY / "Dockerfile", REPO_ROOT / "docs" / "deployment.md"],
    ids=lambda p: p.name,
)
def test_every_visitshare_name_in_the_deployment_files_is_a_setting(path):
    used = set(NAME.findall(path.read_text(encoding="utf-8")))
    assert used, f"{path} names no setting"
    assert used <= SETTING_NAMES, sorted(used - SETTING_NAMES)


def test_dockerfile_pins_and_runs_unprivileged():
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert "python:3.11-slim" in text
    assert "pip install -c constraints.txt ." in text
    assert re.search(r"^USER 50000$", text, re.M)
    assert "/opt/airflow/dags" in text
    assert (DEPLOY / "entrypoint.sh").read_text(encoding="utf-8").startswith("#!/bin/sh")
