"""`visitshare run` waits for the backlog of the topics landing takes, and only those."""

from consumers.landing import PartitionStatus
from visitshare.cli.stack import landing_backlog


def _status(topic: str, partition: int, high: int | None, landed: int) -> PartitionStatus:
    return PartitionStatus(topic, partition, "id", high, landed, None, None)


def test_backlog_counts_unlanded_records_of_landed_topics_only():
    statuses = [
        _status("visits.outcomes.v1", 0, 10, 4),
        _status("visits.outcomes.v1", 1, 7, 7),
        _status("visits.outcomes.v1.dlq", 0, 3, 1),
        _status("releases.v1", 0, 2, 0),  # release notices: never landed
        _status("incidents.reports.v1", 0, None, 0),  # the broker did not answer: unknown
    ]
    landed = ["visits.outcomes.v1", "visits.outcomes.v1.dlq", "incidents.reports.v1"]
    assert landing_backlog(statuses, landed) == {
        "visits.outcomes.v1": 6,
        "visits.outcomes.v1.dlq": 2,
        "incidents.reports.v1": 0,
    }
